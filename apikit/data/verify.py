"""Images that cannot be used: found once, up front, excluded and reported, never replaced.

An image is excluded when its bytes do not decode, when it has more pixels than PIL opens (its decompression-bomb
limit: the DataLoader could not open it either), or when its pixels are of a kind (16-bit or 32-bit integer, float)
that converting to 8-bit RGB would clip: a 16-bit PNG would train almost white, a float TIFF black, and what range
they mean cannot be told from the file. (The authors' loader substituted a white image for an
unreadable file; here such a file is left out of the split, counted in the log and listed in a report file.)

The result is cached per tree (in apikit's data root), keyed by every file's size and mtime and by VERSION; a
cache that is not what this module writes, or whose listed images turn out to decode, is checked afresh.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import warnings
from pathlib import Path

import pandas as pd
from fastai.vision.utils import verify_image
from PIL import Image, ImageFile

from ..progress import progress_map
from ..runs import CorruptRunFile, atomic_write, file_lock, read_json, write_json
from .errors import CacheWarning, DataSetNotFound, UnsupportedImageWarning
from .locate import data_root, writable

__all__ = ["exclude_bad_images", "fingerprint", "RGB_SAFE", "VERSION"]

log = logging.getLogger(__name__)
VERSION = 3  # of the check and its cache: part of the cache key, so a new check never trusts an old result
# PIL modes that convert to 8-bit RGB keeping the picture; others (I;16, I, F, ...) are clipped by convert("RGB").
RGB_SAFE = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
UNDECODABLE = "undecodable"
TOO_LARGE = "too large"  # a reason starting so: more pixels than PIL opens, e.g. "too large: 200000000 pixels"


def fingerprint(paths) -> str:
    """A key that changes when the list of files, or any file's size or modification time, changes."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _strict():
    """Decode as the DataLoader will, with truncated files treated as errors even if a caller relaxed that."""
    old, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _unreadable(path, e: OSError) -> DataSetNotFound:
    return DataSetNotFound(f"{path} could not be read ({type(e).__name__}: {e}) while checking that the images "
                           "decode. A file is listed as undecodable only when its bytes do not decode; this one "
                           "changed, vanished or cannot be opened during the check (is another process still "
                           "writing the data set?). Run again once the data set is complete and readable.")


def _key(paths) -> str:
    try:
        return f"v{VERSION}-{fingerprint(paths)}"
    except OSError as e:
        raise _unreadable(e.filename, e) from None


def _problem(path: Path) -> str | None:
    """Why `path` cannot be used ("undecodable", "too large: N pixels", or its pixel mode), None if it can; a
    failure to read its bytes is an error, never a verdict."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from None
    try:  # the header alone: PIL refuses a decompression bomb as it opens it, before any pixel is decoded
        Image.open(io.BytesIO(data)).close()
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        return TOO_LARGE + (f": {pixels[1]} pixels" if pixels else "")
    except Exception:  # not an image PIL opens: verify_image, below, says so for every kind of damage
        pass
    if not verify_image(io.BytesIO(data)):
        return UNDECODABLE
    with Image.open(io.BytesIO(data)) as im:  # the header only: verify_image decoded it already
        return None if im.mode in RGB_SAFE else f"pixel mode {im.mode}"


def _cached(cache: Path, key: str, paths: list[Path]) -> dict[Path, str] | None:
    """The saved result for exactly these files, if the cache file is whole and what this module writes; else
    None (a warning names a malformed one). Listed images are checked again (a handful): a list naming good images
    would silently drop them."""
    try:
        saved = read_json(cache, max_bytes=64 << 20, max_depth=3, hint="it is checked afresh")
    except CorruptRunFile as e:
        warnings.warn(f"{e}", CacheWarning, stacklevel=4)
        return None
    if isinstance(saved, dict) and isinstance(saved.get("key"), str) and saved["key"] != key:
        return None  # another version's, or another state of the files: checked afresh, as expected
    bad, known = saved.get("bad") if isinstance(saved, dict) else None, {str(p) for p in paths}
    whole = (isinstance(saved, dict) and saved.get("n_checked") == len(paths) and isinstance(bad, dict)
             and all(isinstance(p, str) and p in known and isinstance(why, str) for p, why in bad.items()))
    if whole:
        with _strict():
            if all(_problem(Path(p)) == why for p, why in bad.items()):
                return {Path(p): why for p, why in bad.items()}
    warnings.warn(f"{cache} is not a list of unusable images this module wrote for these {len(paths)} files (or an "
                  "image it lists decodes now): every image is checked again.", CacheWarning, stacklevel=4)
    return None


def _find_bad(paths: list[Path], cache: Path, n_workers: int | None) -> dict[Path, str]:
    key = _key(paths)
    if cache.is_file():
        saved = _cached(cache, key, paths)
        if saved is not None:
            return saved
    with _strict():
        found = progress_map(_problem, paths, "checking that the images decode", "images",
                             n_workers=os.cpu_count() if n_workers is None else n_workers)
    if _key(paths) != key:
        raise DataSetNotFound(f"files among the {len(paths)} images checked changed while they were checked (is "
                              "another process still writing the data set?); nothing was excluded or cached. Run "
                              "again once the data set is complete.")
    bad = {p: why for p, why in zip(paths, found) if why is not None}
    write_json(cache, {"key": key, "n_checked": len(paths), "bad": {str(p): why for p, why in bad.items()}})
    return bad


def _lock(cache: Path):
    """Processes sharing a cache file check the images once: the others wait, then read its result."""
    return file_lock(cache.with_name(cache.name + ".lock"))


def _clean(cache: Path) -> None:
    """Remove the temporary files of a process killed while writing this cache (all are written under its lock)."""
    for stale in cache.parent.glob(f".{cache.stem}.*.tmp"):
        stale.unlink(missing_ok=True)


def _line(path) -> str:
    """One line of the report per file: backslashes and line breaks in the name are escaped."""
    return str(path).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r") + "\n"


def _stem(name: str, root: Path) -> Path:
    """Cache files for the tree at `root`, in apikit's own cache (the tree may be read-only)."""
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return data_root() / "verified" / f"{name}-{tag}"


def exclude_bad_images(df: pd.DataFrame, n_workers: int | None = None) -> tuple[pd.DataFrame, list[Path], Path]:
    """`df` without its unusable images (undecodable, or pixels 8-bit RGB would clip), the list of those, and the
    report file that lists them, one per line (line breaks in a name escaped as \\n).

    The check runs once per tree (processes sharing the data root wait for the one checking) and is cached
    until a file changes. The report always exists (empty when all images can be used) and holds the result of
    the cached check. Images refused for their pixels are named in an `UnsupportedImageWarning`. A file that cannot
    be read at all (gone, unreadable, changed during the check) raises `DataSetNotFound` instead: whether an image
    is bad never depends on what another process was doing at the time.
    """
    stem = _stem(df.attrs.get("name", "data"), df.attrs.get("root", "."))
    cache, report = stem.with_suffix(".json"), stem.parent / f"{stem.name}.bad_images.txt"
    writable(cache.parent)  # a read-only data root: one line naming it and the fix
    with _lock(cache):  # the check and its report, together: no process rewrites another's report
        _clean(cache)
        found = _find_bad([Path(p) for p in df.path], cache, n_workers)
        text = "".join(_line(p) for p in found)
        if not (report.is_file() and report.read_text() == text):
            atomic_write(report, text)
    name, bad = df.attrs.get("name", "data"), list(found)
    undecodable = [p for p, why in found.items() if why == UNDECODABLE]
    if undecodable:
        log.warning("%s: %d image(s) cannot be decoded and are excluded; the list is in %s", name, len(undecodable),
                    report)
    large = {p: why for p, why in found.items() if why.startswith(TOO_LARGE)}
    if large:
        shown = ", ".join(f"{p} ({why})" for p, why in list(large.items())[:5])
        warnings.warn(f"{name}: {len(large)} image(s) are too large: more than twice PIL.Image.MAX_IMAGE_PIXELS "
                      f"({Image.MAX_IMAGE_PIXELS}) pixels, PIL's decompression-bomb limit, so neither this check nor "
                      f"the DataLoader opens them: {shown}{' ...' if len(large) > 5 else ''}. They are excluded "
                      f"(listed in {report}); shrink them to use them.", UnsupportedImageWarning, stacklevel=3)
    clipped = {p: why for p, why in found.items() if why != UNDECODABLE and p not in large}
    if clipped:
        shown = ", ".join(f"{p} ({why})" for p, why in list(clipped.items())[:5])
        warnings.warn(f"{name}: {len(clipped)} image(s) have pixels that 8-bit RGB would clip (16-bit, 32-bit or "
                      f"float), and what range they mean cannot be told from the file: {shown}"
                      f"{' ...' if len(clipped) > 5 else ''}. They are excluded (listed in {report}); convert them "
                      "to 8-bit RGB, scaling their range yourself, to use them.", UnsupportedImageWarning,
                      stacklevel=3)
    kept = df[~df.path.isin(set(bad))].reset_index(drop=True)
    kept.attrs = dict(df.attrs)
    return kept, bad, report
