"""The paper's preprocessing (Section 4): squish-resize to `resize`, then a `size` crop (random with a
horizontal flip in training, centred in test), then normalisation with the backbone's statistics on the
DataLoader's device."""
from __future__ import annotations

from fastai.data.transforms import Normalize
from fastai.vision.augment import FlipItem, RandomCrop, Resize, ResizeMethod
from fastai.vision.core import PILImage
from fasttransform import Transform

from ..choices import NORMALIZATIONS
from ..paper import RECIPE

__all__ = ["CropBanner", "item_tfms", "batch_tfms"]


class CropBanner(Transform):
    """Cut the bottom `pixels` rows off an image (FGVC-Aircraft's copyright banner), before any resize."""
    order = 0

    def __init__(self, pixels: int = 20):
        super().__init__()
        self.pixels = pixels

    def encodes(self, x: PILImage):
        return type(x)(x.crop((0, 0, x.width, max(1, x.height - self.pixels))))


def item_tfms(size: int = RECIPE["size"], resize: int = RECIPE["resize"], banner: int = 0) -> list:
    """Per image: [banner crop], flip (training only), squish-resize, random crop (centre crop in validation)."""
    if size > resize:
        raise ValueError(f"size={size} must not exceed resize={resize}: the crop is taken from the resized image")
    crop = [CropBanner(banner)] if banner else []
    return crop + [FlipItem(p=0.5), Resize(resize, method=ResizeMethod.Squish), RandomCrop(size)]


def batch_tfms(stats=None) -> list:
    """Per batch, on the DataLoader's device: normalisation with `stats` = (mean, std), ImageNet's by default
    (`apikit.model.input_stats` gives a backbone's own)."""
    return [Normalize.from_stats(*(stats or NORMALIZATIONS["imagenet"]))]
