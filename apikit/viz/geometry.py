"""Feature-map cell <-> image pixel: the test transform's crop geometry, and whether a peak cell hits a part.

The test transform squish-resizes a W x H image to resize x resize, then takes the centred size x size
crop at offset (resize - size) // 2; an h x w feature map tiles that crop evenly.
"""
from __future__ import annotations

import numpy as np

__all__ = ["crop_geometry", "cell_to_image", "image_to_crop", "in_crop", "score_peaks", "chance_rate"]


def crop_geometry(dls) -> tuple[int, int]:
    """(size, resize) of `dls`' test transforms: squish-resize to `resize`, centre crop to `size`
    (apikit.data.transforms.item_tfms). Raises if the pipeline is something else."""
    from fastai.vision.augment import CropPad, RandomCrop, Resize, ResizeMethod
    dl = dls.valid if hasattr(dls, "valid") else dls
    fs = list(getattr(dl.after_item, "fs", []))
    resize = next((t for t in fs if isinstance(t, Resize)), None)
    crop = next((t for t in fs if isinstance(t, (RandomCrop, CropPad))), None)
    if any(type(t).__name__ == "CropBanner" for t in fs):
        raise ValueError("the pipeline crops a banner first; cell_to_image does not model it")
    if resize is None or crop is None or resize.method != ResizeMethod.Squish:
        raise ValueError("expected a squish Resize then a (centre) crop in the item transforms, as "
                         "apikit.data.get_dls builds; pass size= and resize= explicitly otherwise")
    if len(set(resize.size)) != 1 or len(set(crop.size)) != 1:
        raise ValueError(f"expected square sizes, got resize {tuple(resize.size)} and crop {tuple(crop.size)}")
    return int(crop.size[0]), int(resize.size[0])


def cell_to_image(row, col, fmap_hw, image_wh, size: int, resize: int):
    """Centre of feature-map cell (row, col) in ORIGINAL image pixels, and the cell's size there.

    Cells are size/w x size/h crop pixels. Returns (x, y, cell_w, cell_h); arguments broadcast (numpy).
    """
    h, w = fmap_hw
    W, H = np.asarray(image_wh, dtype=np.float64).T if np.ndim(image_wh) > 1 else map(float, image_wh)
    tl = (resize - size) // 2
    sx, sy = W / resize, H / resize
    cx = (np.asarray(col, dtype=np.float64) + 0.5) * size / w + tl
    cy = (np.asarray(row, dtype=np.float64) + 0.5) * size / h + tl
    return cx * sx, cy * sy, size / w * sx, size / h * sy


def image_to_crop(xy, image_wh, size: int, resize: int) -> np.ndarray:
    """Original-image (x, y) pixels -> pixels of the centred crop the model sees (may fall outside [0, size))."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    W, H = map(float, image_wh)
    tl = (resize - size) // 2
    return np.stack([xy[:, 0] * resize / W - tl, xy[:, 1] * resize / H - tl], 1)


def in_crop(xy, image_wh, size: int, resize: int) -> np.ndarray:
    """Whether each original-image (x, y) lands inside the centred crop: (m,) bool."""
    c = image_to_crop(xy, image_wh, size, resize)
    return ((c >= 0) & (c < size)).all(1)


def score_peaks(peaks, fmap_hw, image_wh, parts_xy, size: int, resize: int, radius: float = 1.0) -> np.ndarray:
    """Whether each peak cell hits a part: (n, k) bool.

    peaks: (n, k, 2) (row, col) of each map's peak cell; image_wh: (n, 2) original sizes; parts_xy: n
    arrays of (x, y) part locations in original pixels (the parts that count for that image).
    A peak hits if some part lies within `radius` cells of the peak cell's centre, measured in cell
    units along each axis (so radius 1.0 = one cell, whatever the squish did to the aspect ratio).
    """
    peaks = np.asarray(peaks).reshape(len(parts_xy), -1, 2)
    hits = np.zeros(peaks.shape[:2], dtype=bool)
    for i, xy in enumerate(parts_xy):
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if not len(xy):
            continue
        x, y, cw, ch = cell_to_image(peaks[i, :, 0], peaks[i, :, 1], fmap_hw, image_wh[i], size, resize)
        d = np.hypot((xy[None, :, 0] - x[:, None]) / cw, (xy[None, :, 1] - y[:, None]) / ch)
        hits[i] = (d <= radius).any(1)
    return hits


def chance_rate(fmap_hw, image_wh, parts_xy, size: int, resize: int, radius: float = 1.0) -> float:
    """The hit rate of a peak drawn uniformly from the h x w cells, for one image's parts."""
    h, w = fmap_hw
    rc = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(1, -1, 2)
    return float(score_peaks(rc, fmap_hw, [image_wh], [parts_xy], size, resize, radius).mean())
