"""A pre-resized image cache: decode and squish-resize each image to `resize` once, then train from it.

The paper's transforms squish every image to `resize` before cropping (Section 4), so resizing once ahead
of training gives the same inputs and spares each epoch the decode of a large original and its resize.
Cached images are JPEGs (quality 95) named by the hash of the original's path, size and mtime, the resize
settings and the version of the code that writes them (VERSION, apikit's), so a changed original or writer is
cached anew. The cache is checked, not trusted: `index.json` records each file's size and sha256 as written,
and every use checks every file against it, rebuilding one that is missing, damaged or replaced with a warning
naming it. One process at a time fills and checks a cache folder (`runs.file_lock`), and removes the temporary
files a killed process left there. Each file is written through `runs.atomic_write`.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from PIL import Image

from .. import __version__
from ..progress import progress_imap, progress_map
from ..runs import CorruptRunFile, atomic_write, file_lock, read_json, write_json
from .errors import CacheWarning
from .locate import data_root

__all__ = ["cache_resized", "cached_name", "VERSION"]

QUALITY = 95
VERSION = 2  # of how cached images are written and checked: part of their names, so no writer reads another's
INDEX = "index.json"
CHUNK = 512  # images resized between two saves of the index: a killed fill loses at most this many


def cached_name(path, resize: int, banner: int = 0) -> str:
    """The cache file name of one original: a hash of its path, size and mtime, the resize settings and the code
    version that writes it."""
    st = os.stat(path)
    key = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{resize}|{banner}|{VERSION}|{__version__}"
    return hashlib.sha1(key.encode()).hexdigest() + ".jpg"


def _digest(path) -> list | None:
    """[size, sha256] of a file, or None when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return [len(data), hashlib.sha256(data).hexdigest()]


def _resize_one(item, resize: int, banner: int) -> list:
    src, dst = item
    with Image.open(src) as im:
        im = im.convert("RGB")
        if banner:
            im = im.crop((0, 0, im.width, max(1, im.height - banner)))
        im = im.resize((resize, resize), Image.BILINEAR)  # squish, as fastai's ResizeMethod.Squish
        atomic_write(dst, lambda tmp: im.save(tmp, format="JPEG", quality=QUALITY))
    return _digest(dst)


def _read_index(folder: Path) -> dict:
    """{file name: [size, sha256]} as recorded; {} (every file is then rebuilt) when it is missing, or with a
    warning when it is not an index this module wrote."""
    f = folder / INDEX
    if not os.path.lexists(f):
        return {}
    try:
        index = read_json(f, max_bytes=256 << 20, max_depth=3, hint="every cached image is rebuilt")
    except CorruptRunFile as e:
        warnings.warn(str(e), CacheWarning, stacklevel=4)
        return {}
    files = index.get("files") if isinstance(index, dict) and index.get("version") == VERSION else None
    ok = isinstance(files, dict) and all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str) for v in files.values())
    if not ok:
        warnings.warn(f"{f} is not an index of cached images this apikit wrote: every cached image is rebuilt.",
                      CacheWarning, stacklevel=4)
        return {}
    return files


def _show(paths, n=5) -> str:
    return ", ".join(map(str, paths[:n])) + (f" ... ({len(paths)} in all)" if len(paths) > n else "")


def cache_resized(df, name: str, resize: int, banner: int = 0, root=None, n_workers=None):
    """`df` with `path` pointing at squish-resized copies under `root/cache/<name>-<resize>/` (made once, checked
    on every use against the size and sha256 recorded when each was written)."""
    folder = Path(root or data_root()) / "cache" / f"{name}-{resize}"
    folder.mkdir(parents=True, exist_ok=True)
    dst = [str(folder / cached_name(p, resize, banner)) for p in df["path"]]
    workers = os.cpu_count() if n_workers is None else n_workers
    with file_lock(folder / ".lock"):  # processes sharing the cache resize each image once; the others wait
        for stale in folder.glob(".*.tmp"):  # every file here is written under this lock: these were killed writes
            stale.unlink(missing_ok=True)
        index = _read_index(folder)
        pairs = list(dict.fromkeys(zip(df["path"], dst)))
        listed = [(s, d) for s, d in pairs if Path(d).name in index]
        found = progress_map(_digest, [d for _, d in listed], "checking the cached images", "images", workers)
        damaged = [d for (_, d), got in zip(listed, found) if got != index[Path(d).name]]
        if damaged:
            warnings.warn(f"{len(damaged)} cached image(s) are missing or differ from what was written (damaged or "
                          f"replaced): {_show(damaged)}; they are rebuilt from their originals.", CacheWarning,
                          stacklevel=3)
        ok = {d for (_, d), got in zip(listed, found) if got == index[Path(d).name]}
        todo = [(s, d) for s, d in pairs if d not in ok]
        resized = progress_imap(_resize_one, todo, f"caching the images resized to {resize} px", "images", workers,
                                chunk=CHUNK, resize=resize, banner=banner)
        for k, (got, (_, d)) in enumerate(zip(resized, todo), start=1):  # resized first: its bar counts the last
            if got is not None:
                index[Path(d).name] = got
            if k % CHUNK == 0 or k == len(todo):
                write_json(folder / INDEX, {"version": VERSION, "files": index})
    out = df.copy()
    out["original"], out["path"] = out["path"], dst
    out.attrs.update(df.attrs)
    return out
