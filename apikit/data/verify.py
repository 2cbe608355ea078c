"""Images that cannot be decoded: found once, up front, excluded and reported, never replaced.

(The authors' loader substituted a white image for an unreadable file; here such a file is left out
of the split, counted in the log and listed in a report file.)
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import pandas as pd
from fastai.vision.utils import verify_image
from fastcore.parallel import parallel
from PIL import ImageFile

from ..runs import atomic_write, file_lock, write_json
from .errors import DataSetNotFound
from .locate import data_root

__all__ = ["find_bad_images", "exclude_bad_images", "fingerprint"]

log = logging.getLogger(__name__)


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
        return fingerprint(paths)
    except OSError as e:
        raise _unreadable(e.filename, e) from None


def _decodes(path: Path) -> bool:
    """Whether the bytes of `path` decode as an image; a failure to read them is an error, never a False."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from None
    return verify_image(io.BytesIO(data))


def _find_bad(paths: list[Path], cache: Path | None, n_workers: int | None) -> list[Path]:
    key = _key(paths)
    if cache is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return [Path(p) for p in saved["bad"]]
        except (OSError, ValueError, KeyError):
            pass
    with _strict():
        ok = parallel(_decodes, paths, n_workers=os.cpu_count() if n_workers is None else n_workers,
                      threadpool=True, progress=False)
    if _key(paths) != key:
        raise DataSetNotFound(f"files among the {len(paths)} images checked changed while they were checked (is "
                              "another process still writing the data set?); nothing was excluded or cached. Run "
                              "again once the data set is complete.")
    bad = [p for p, good in zip(paths, ok) if not good]
    if cache is not None:
        write_json(cache, {"key": key, "n_checked": len(paths), "bad": [str(p) for p in bad]})
    return bad


def _lock(cache: Path | None):
    """Processes sharing a cache file check the images once: the others wait, then read its result."""
    return contextlib.nullcontext() if cache is None else file_lock(cache.with_name(cache.name + ".lock"))


def find_bad_images(paths, cache: Path | None = None, n_workers: int | None = None) -> list[Path]:
    """The files among `paths` whose bytes PIL cannot decode (fastai's `verify_image`), cached in `cache`.

    A file that cannot be read at all (gone, unreadable, changed during the check) raises `DataSetNotFound`
    instead: whether an image is bad never depends on what another process was doing at the time.
    """
    paths = [Path(p) for p in paths]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    with _lock(cache):
        return _find_bad(paths, cache, n_workers)


def _stem(name: str, root: Path) -> Path:
    """Cache files for the tree at `root`, in apikit's own cache (the tree may be read-only)."""
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return data_root() / "verified" / f"{name}-{tag}"


def exclude_bad_images(df: pd.DataFrame, n_workers: int | None = None) -> tuple[pd.DataFrame, list[Path], Path]:
    """`df` without its undecodable images, the list of those, and the report file that lists them.

    The check runs once per tree (processes sharing the data root wait for the one checking) and is cached
    until a file changes. The report always exists (empty when all images decode) and holds the result of
    the cached check.
    """
    stem = _stem(df.attrs.get("name", "data"), df.attrs.get("root", "."))
    cache, report = stem.with_suffix(".json"), stem.parent / f"{stem.name}.bad_images.txt"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _lock(cache):  # the check and its report, together: no process rewrites another's report
        bad = _find_bad([Path(p) for p in df.path], cache, n_workers)
        text = "".join(f"{p}\n" for p in bad)
        if not (report.is_file() and report.read_text() == text):
            atomic_write(report, text)
    if bad:
        log.warning("%s: %d image(s) cannot be decoded and are excluded; the list is in %s",
                    df.attrs.get("name", "data"), len(bad), report)
    kept = df[~df.path.isin(set(bad))].reset_index(drop=True)
    kept.attrs = dict(df.attrs)
    return kept, bad, report
