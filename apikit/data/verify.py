"""Images that cannot be decoded: found once, up front, excluded and reported, never replaced.

(The authors' loader substituted a white image for an unreadable file; here such a file is left out
of the split, counted in the log and listed in a report file.)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
from fastai.vision.utils import verify_image
from fastcore.parallel import parallel
from PIL import ImageFile

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


def find_bad_images(paths, cache: Path | None = None, n_workers: int | None = None) -> list[Path]:
    """The files among `paths` that PIL cannot decode (fastai's `verify_image`), cached in `cache`."""
    paths = [Path(p) for p in paths]
    key = fingerprint(paths)
    if cache is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return [Path(p) for p in saved["bad"]]
        except (OSError, ValueError, KeyError):
            pass
    with _strict():
        ok = parallel(verify_image, paths, n_workers=os.cpu_count() if n_workers is None else n_workers,
                      threadpool=True, progress=False)
    bad = [p for p, good in zip(paths, ok) if not good]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps({"key": key, "n_checked": len(paths), "bad": [str(p) for p in bad]}))
        os.replace(tmp, cache)
    return bad


def _stem(name: str, root: Path) -> Path:
    """Cache files for the tree at `root`, in apikit's own cache (the tree may be read-only)."""
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return data_root() / "verified" / f"{name}-{tag}"


def exclude_bad_images(df: pd.DataFrame, n_workers: int | None = None) -> tuple[pd.DataFrame, list[Path], Path]:
    """`df` without its undecodable images, the list of those, and the report file that lists them.

    The check runs once per tree and is cached until a file changes. The report is rewritten on every
    call (empty when all images decode) so that its path can always be opened.
    """
    stem = _stem(df.attrs.get("name", "data"), df.attrs.get("root", "."))
    bad = find_bad_images(df.path, stem.with_suffix(".json"), n_workers)
    report = stem.parent / f"{stem.name}.bad_images.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("".join(f"{p}\n" for p in bad))
    if bad:
        log.warning("%s: %d image(s) cannot be decoded and are excluded; the list is in %s",
                    df.attrs.get("name", "data"), len(bad), report)
    kept = df[~df.path.isin(set(bad))].reset_index(drop=True)
    kept.attrs = dict(df.attrs)
    return kept, bad, report
