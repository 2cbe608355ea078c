"""A pre-resized image cache: decode and squish-resize each image to `resize` once, then train from it.

The paper's transforms squish every image to `resize` before cropping (Section 4), so resizing once ahead
of training gives the same inputs and spares each epoch the decode of a large original and its resize.
Cached images are JPEGs (quality 95) named by the hash of the original's path, size and mtime, the resize
settings and the version of the code that writes them (VERSION, apikit's), so a changed original or writer is
cached anew. The cache is checked, not trusted: `index.json` records each file's size and sha256 as written,
and every use checks every file against it, rebuilding one that is missing, damaged or replaced with a warning
naming it. An entry that is not a file (a FIFO, a link, a folder) is never opened: it is named, removed and
rebuilt. An index that does not account for the cached images beside it (deleted, or replaced by another index)
vouches for none of them: they are all rebuilt, with a warning. One process at a time fills and checks a cache
folder (`runs.file_lock`), and removes the temporary files a killed process left there. Each file is written
through `runs.atomic_write`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import warnings
from pathlib import Path

from PIL import Image

from .. import __version__
from ..locks import file_kind
from ..progress import progress_imap, progress_map
from ..runs import CorruptRunFile, atomic_write, file_lock, read_json, regular_bytes, write_json
from .errors import CacheWarning
from .locate import data_root, writable

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
    """[size, sha256] of a regular file, or None when it cannot be read or is not one (never waited on or followed)."""
    data = regular_bytes(path)
    return None if data is None else [len(data), hashlib.sha256(data).hexdigest()]


def _not_a_file(path) -> str | None:
    """What stands at `path` when it is not a regular file ("a FIFO", "a link", "a folder"), else None."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else file_kind(mode)


def _remove(path) -> None:
    """Remove a cache entry, whatever it is: a link itself (never what it points at), a folder with its contents."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _resize_one(item, resize: int, banner: int) -> list:
    src, dst = item
    with Image.open(src) as im:
        im = im.convert("RGB")
        if banner:
            im = im.crop((0, 0, im.width, max(1, im.height - banner)))
        im = im.resize((resize, resize), Image.BILINEAR)  # squish, as fastai's ResizeMethod.Squish
        atomic_write(dst, lambda tmp: im.save(tmp, format="JPEG", quality=QUALITY))
    return _digest(dst)


def _read_index(folder: Path) -> tuple[dict, set, str | None]:
    """({file name: [size, sha256]}, the names a fill was writing when it stopped, why the index vouches for nothing):
    ({}, set(), None) when there is none, ({}, set(), the reason) when it is not an index this module wrote."""
    f = folder / INDEX
    if not os.path.lexists(f):
        return {}, set(), None
    try:
        index = read_json(f, max_bytes=256 << 20, max_depth=3, hint="every cached image is rebuilt")
    except CorruptRunFile as e:
        return {}, set(), str(e)
    files = index.get("files") if isinstance(index, dict) and index.get("version") == VERSION else None
    pending = index.get("pending", []) if isinstance(index, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str) for v in files.values())
    if not ok or not (isinstance(pending, list) and all(isinstance(n, str) for n in pending)):
        return {}, set(), f"{f} is not an index of cached images this apikit wrote: every cached image is rebuilt."
    return files, set(pending), None


def _unvouched(folder: Path, index: dict, pending: set) -> tuple[list[str], str | None]:
    """The cached images in `folder` that `index` does not list, and why that says the index is not this folder's
    own (None when they are only what a killed fill was writing, `pending`)."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg") and not n.startswith(".") and n not in index)
    foreign = [n for n in names if n not in pending]
    if not foreign:
        return names, None
    f = folder / INDEX
    was = (f"{f} is missing" if not os.path.lexists(f) else f"{f} does not list them (replaced by another index?)")
    return names, (f"{len(foreign)} cached image(s) are in {folder} but {was}, e.g. {_show(foreign, 3)}: every cached "
                   "image is rebuilt.")


def _show(paths, n=5) -> str:
    return ", ".join(map(str, paths[:n])) + (f" ... ({len(paths)} in all)" if len(paths) > n else "")


def cache_resized(df, name: str, resize: int, banner: int = 0, root=None, n_workers=None):
    """`df` with `path` pointing at squish-resized copies under `root/cache/<name>-<resize>/` (made once, checked
    on every use against the size and sha256 recorded when each was written)."""
    folder = writable(Path(root or data_root()) / "cache" / f"{name}-{resize}")
    dst = [str(folder / cached_name(p, resize, banner)) for p in df["path"]]
    workers = os.cpu_count() if n_workers is None else n_workers
    with file_lock(folder / ".lock"):  # processes sharing the cache resize each image once; the others wait
        for stale in folder.glob(".*.tmp"):  # every file here is written under this lock: these were killed writes
            stale.unlink(missing_ok=True)
        index, pending, why = _read_index(folder)
        stray, foreign = _unvouched(folder, index, pending)
        if why or foreign:  # an index that is not this folder's own vouches for none of the images beside it
            warnings.warn(why or foreign, CacheWarning, stacklevel=3)
            index, stray = {}, _unvouched(folder, {}, set())[0]
        for name in stray:  # what no index vouches for is rebuilt now, or when its original is next used
            _remove(folder / name)
        pairs = list(dict.fromkeys(zip(df["path"], dst)))
        odd = {d: kind for _, d in pairs if (kind := _not_a_file(d))}
        if odd:  # never opened: a FIFO would hang under the lock, a link to /dev/zero fill the memory
            warnings.warn(f"{len(odd)} cached image(s) are not files ({_show([f'{d} is {k}' for d, k in odd.items()])}):"
                          " they are removed and rebuilt from their originals.", CacheWarning, stacklevel=3)
            for d in odd:
                _remove(d)
        listed = [(s, d) for s, d in pairs if Path(d).name in index and d not in odd]
        found = progress_map(_digest, [d for _, d in listed], "checking the cached images", "images", workers)
        damaged = [d for (_, d), got in zip(listed, found) if got != index[Path(d).name]]
        if damaged:
            warnings.warn(f"{len(damaged)} cached image(s) are missing or differ from what was written (damaged or "
                          f"replaced): {_show(damaged)}; they are rebuilt from their originals.", CacheWarning,
                          stacklevel=3)
        ok = {d for (_, d), got in zip(listed, found) if got == index[Path(d).name]}
        todo = [(s, d) for s, d in pairs if d not in ok]
        # Named before they are written: images a killed fill leaves unlisted are then known as its own.
        pending = [Path(d).name for _, d in todo]
        if todo:
            write_json(folder / INDEX, {"version": VERSION, "files": index, "pending": pending})
        resized = progress_imap(_resize_one, todo, f"caching the images resized to {resize} px", "images", workers,
                                chunk=CHUNK, resize=resize, banner=banner)
        for k, (got, (_, d)) in enumerate(zip(resized, todo), start=1):  # resized first: its bar counts the last
            if got is not None:
                index[Path(d).name] = got
            if k % CHUNK == 0 or k == len(todo):
                left = {"pending": pending[k:]} if k < len(todo) else {}
                write_json(folder / INDEX, {"version": VERSION, "files": index, **left})
    out = df.copy()
    out["original"], out["path"] = out["path"], dst
    out.attrs.update(df.attrs)
    return out
