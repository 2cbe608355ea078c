"""Fetching a data set: download, check the checksum, extract aside, and only then move it into place.

CUB and Cars come through fastai's `untar_data` (fastai checks its own size and hash of each archive).
Aircraft and Dogs come from their official archives, checked against the checksums pinned in
`sources.SOURCES`. Extraction goes into a hidden `.partial-*` folder that is renamed into place when
complete, and a `.apikit-complete` marker is written last, so an interrupted download never leaves a
tree that looks complete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path

from fastai.data.external import untar_data
from fastdownload import download_url

from .errors import DataSetNotFound
from .locate import candidates, data_root, not_found
from .sources import Archive, Source

__all__ = ["fetch", "digest", "COMPLETE"]

log = logging.getLogger(__name__)
COMPLETE = ".apikit-complete"


def _download(url: str, dest: Path) -> Path:
    """The one network call for apikit's own archives (tests replace it)."""
    return download_url(url, dest, show_progress=True)


def digest(file: Path, algo: str) -> str:
    """Hex digest of the whole file."""
    h = hashlib.new(algo)
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checked(file: Path, a: Archive) -> bool:
    return (a.size is None or file.stat().st_size == a.size) and digest(file, a.algo) == a.digest


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as t:
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, filter="data")
        else:  # Python without extraction filters
            t.extractall(dest)


def _fetch_fastai(src: Source, root: Path, partial: Path) -> Path:
    store = root / "archives"
    return Path(untar_data(src.fastai_url, archive=store, data=partial, base=store))


def _fetch_archives(src: Source, root: Path, partial: Path) -> Path:
    store = root / "archives"
    store.mkdir(parents=True, exist_ok=True)
    for a in src.archives:
        file = store / a.filename
        if not (file.is_file() and _checked(file, a)):
            log.info("downloading %s to %s", a.url, file)
            _download(a.url, file)
            if not _checked(file, a):
                file.unlink()
                raise ValueError(f"{file.name} failed its checksum ({a.algo} {a.digest}"
                                 f"{'' if a.size is None else f', {a.size} bytes'}); the download was deleted")
        log.info("extracting %s", file)
        _extract(file, partial)
    inner = list(partial.iterdir())
    return inner[0] if len(inner) == 1 and inner[0].is_dir() and inner[0].name == src.top else partial


def _refuse_foreign(src: Source, top: Path) -> None:
    """Never replace a tree apikit did not write (it may be someone's partial copy)."""
    if top.exists() and any(top.iterdir()) and not (top / COMPLETE).exists():
        raise DataSetNotFound(f"{top} exists but does not hold a complete {src.title}, and apikit did not write it; "
                              "move it away (or complete it by hand) and try again.")


def _install(src: Source, extracted: Path, top: Path) -> None:
    """Move a finished extraction into place, then mark it complete."""
    _refuse_foreign(src, top)
    if top.exists():
        shutil.rmtree(top)
    os.replace(extracted, top)
    (top / COMPLETE).write_text(f"{src.name}\n")


def fetch(src: Source, path=None) -> Path:
    """Download and extract `src` into `path` (default: the data root); return the folder created.

    Every failure (no network, bad checksum, a data set that cannot be downloaded) is one
    `DataSetNotFound` that says what was tried and how to get the data by hand.
    """
    root = data_root() if path is None else Path(path).expanduser()
    tried = candidates(src, path)
    if not (src.fastai_url or src.archives):
        raise DataSetNotFound(not_found(src, tried, path) + f"\n  {src.title} cannot be downloaded by apikit.")
    top = root / src.top
    _refuse_foreign(src, top)
    partial = root / f".partial-{src.top}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)  # what an interrupted earlier try left
        partial.mkdir()
        extracted = (_fetch_fastai if src.fastai_url else _fetch_archives)(src, root, partial)
        _install(src, extracted, top)
    except DataSetNotFound:
        raise
    except Exception as e:  # no network, a refused URL, a corrupt archive, a full disk...
        raise DataSetNotFound(f"could not download {src.title} into {top}: {type(e).__name__}: {e}\n"
                              f"  nothing was put in place.\n" + not_found(src, tried, path)) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("%s is in %s", src.title, top)
    return top
