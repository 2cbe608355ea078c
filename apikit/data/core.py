"""`get_dls`: a data set's official split as fastai DataLoaders, with class-balanced training batches."""
from __future__ import annotations

import logging
import os

import torch
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, ColSplitter
from fastai.torch_core import default_device
from fastai.vision.data import ImageBlock

from ..sampler import ClassBalancedDL
from ..paper import RECIPE
from .cache import cache_resized
from .readers import read_split
from .sources import source
from .transforms import batch_tfms, item_tfms
from .verify import exclude_bad_images

__all__ = ["get_dls"]

log = logging.getLogger(__name__)


def _default_workers(device) -> int:
    """0 (load in the main process) on a CPU-only machine; up to 8 worker processes when training on a GPU."""
    return min(8, os.cpu_count() or 1) if torch.device(device).type == "cuda" else 0


def get_dls(name: str, path=None, size: int = RECIPE["size"], resize: int = RECIPE["resize"],
            n_classes: int = RECIPE["n_classes"], n_images: int = RECIPE["n_images"],
            bs: int | None = None, num_workers: int | None = None, download: bool = False, device=None,
            synthetic: dict | None = None, cache: bool = False, stats=None, **kwargs) -> DataLoaders:
    """DataLoaders for data set `name`: the official training split (class-balanced) and the test split
    as validation, as in the paper.

    name: "cub", "aircraft", "cars", "dogs", "nabirds", "synthetic" or "folder" (your own
        train/<class>/*, valid/<class>/* images; val/ or test/ also serve as the validation folder).
    path: the folder holding the data set's index files, or its parent. Default: `data_root()`
        ($APIKIT_DATA or ~/.cache/apikit/data); "synthetic" is generated under it on first use.
    size, resize: squish-resize to `resize`, then crop `size` (random + horizontal flip in training,
        centred in validation), then normalisation on `device`.
    stats: (mean, std) of that normalisation, the backbone's own (`apikit.model.input_stats`); default ImageNet's.
    n_classes, n_images: each training batch holds `n_classes` classes x `n_images` images (ClassBalancedDL).
    bs: validation batch size, default `n_classes * n_images` (training batches are always that size).
    num_workers: loader processes; default 0 on a CPU-only machine, min(8, CPUs) with a GPU.
    download: fetch the data set if it is not found (CUB, Cars, Aircraft, Dogs).
    device: where batches and batch transforms go; default fastai's `default_device()`.
    synthetic: keyword arguments for `apikit.data.synthetic.make` (e.g. dict(n_classes=4, size=48)).
    cache: decode and squish-resize every image to `resize` once (`apikit.data.cache`), then train from
        those copies: the same inputs, without the per-epoch decode and resize of the originals.
    kwargs: passed on to `DataBlock.dataloaders` (e.g. `pin_memory`, `val_bs`).

    Undecodable images are excluded and listed in `dls.bad_images_file` (also `dls.bad_images`).
    `dls.split` is the DataFrame the loaders were built from (see `read_split`).
    """
    src = source(name)
    df = read_split(name, path, download=download, synthetic=synthetic)
    df, bad, report = exclude_bad_images(df)
    if cache:  # the banner is cut while caching, so the transforms must not cut it again
        df = cache_resized(df, name, resize, src.banner)
    tfms = item_tfms(size, resize, 0 if cache else src.banner)
    if bad:
        log.info("%s: %d train / %d test images left after excluding %d undecodable ones",
                 name, int((~df.is_valid).sum()), int(df.is_valid.sum()), len(bad))
    device = default_device() if device is None else torch.device(device)
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=df.attrs["classes"], sort=False)),
        get_x=ColReader("path"), get_y=ColReader("class_name"), splitter=ColSplitter("is_valid"),
        item_tfms=tfms, batch_tfms=batch_tfms(stats))
    dls = block.dataloaders(
        df, bs=n_classes * n_images if bs is None else bs, dl_type=ClassBalancedDL,
        n_classes=n_classes, n_images=n_images, device=device,
        num_workers=_default_workers(device) if num_workers is None else num_workers, **kwargs)
    dls.name, dls.split, dls.bad_images, dls.bad_images_file = name, df, bad, report
    return dls
