"""A pre-resized image cache: decode and squish-resize each image to `resize` once, then train from it.

The paper's transforms squish every image to `resize` before cropping (Section 4), so resizing once ahead
of training gives the same inputs and spares each epoch the decode of a large original and its resize.
Cached images are JPEGs (quality 95) named by the hash of the original's path, size and mtime, so a
changed original is cached anew. Each file is written through `runs.atomic_write` (a temporary name unique
to the process, renamed into place), and one process at a time fills a cache folder (`runs.file_lock`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fastcore.parallel import parallel
from PIL import Image

from ..runs import atomic_write, file_lock
from .locate import data_root

__all__ = ["cache_resized", "cached_name"]

QUALITY = 95


def cached_name(path, resize: int, banner: int = 0) -> str:
    """The cache file name of one original: a hash of its path, size and mtime, and the resize settings."""
    st = os.stat(path)
    key = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{resize}|{banner}"
    return hashlib.sha1(key.encode()).hexdigest() + ".jpg"


def _resize_one(item, resize: int, banner: int):
    src, dst = item
    if os.path.exists(dst):
        return dst
    with Image.open(src) as im:
        im = im.convert("RGB")
        if banner:
            im = im.crop((0, 0, im.width, max(1, im.height - banner)))
        im = im.resize((resize, resize), Image.BILINEAR)  # squish, as fastai's ResizeMethod.Squish
        atomic_write(dst, lambda tmp: im.save(tmp, format="JPEG", quality=QUALITY))
    return dst


def cache_resized(df, name: str, resize: int, banner: int = 0, root=None, n_workers=None):
    """`df` with `path` pointing at squish-resized copies under `root/cache/<name>-<resize>/` (made once)."""
    folder = Path(root or data_root()) / "cache" / f"{name}-{resize}"
    folder.mkdir(parents=True, exist_ok=True)
    dst = [str(folder / cached_name(p, resize, banner)) for p in df["path"]]
    with file_lock(folder / ".lock"):  # processes sharing the cache resize each image once; the others wait
        todo = list(dict.fromkeys((s, d) for s, d in zip(df["path"], dst) if not os.path.exists(d)))
        if todo:
            parallel(_resize_one, todo, resize=resize, banner=banner, n_workers=os.cpu_count() if n_workers is None
                     else n_workers, threadpool=True, progress=False)
    out = df.copy()
    out["original"], out["path"] = out["path"], dst
    out.attrs.update(df.attrs)
    return out
