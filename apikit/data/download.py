"""Fetching a data set: download, check the checksum, extract aside, and only then move it into place.

CUB and Cars come from fastai's copies, checked against fastai's own pins (`fastai/data/download_checks.py`:
the size and the md5 of the first MiB). Aircraft and Dogs come from their official archives, checked
against the checksums pinned in `sources.SOURCES`. Every archive is downloaded by `_download` and
extracted by `_extract`, which refuses members that would land outside the target (absolute paths, `..`,
links that lead out, devices) before anything is written. Extraction goes into a hidden `.partial-*`
folder that is renamed into place when complete, and a `.apikit-complete` marker is written last, so an
interrupted download never leaves a tree that looks complete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path

import fastai.data
from fastdownload import checks_module, download_url, path_stats, read_checks

from .errors import DataSetNotFound
from .locate import candidates, data_root, not_found
from .sources import Archive, Source

__all__ = ["fetch", "digest", "COMPLETE"]

log = logging.getLogger(__name__)
COMPLETE = ".apikit-complete"


def _download(url: str, dest: Path) -> Path:
    """The one network call for apikit's own archives (tests replace it)."""
    return download_url(url, dest, show_progress=True)


FASTAI_PIN = "fastai"  # an Archive.algo: fastai's pin, the md5 of the file's first MiB (and its size)


def _fastai_pins() -> dict:
    """fastai's pinned (size, md5 of the first MiB) of each of its archives, by URL."""
    return read_checks(checks_module(fastai.data))


def _fastai_archive(url: str) -> Archive:
    """The `Archive` of one of fastai's copies, checked as fastai checks it."""
    pin = _fastai_pins().get(url)
    if pin is None:
        raise DataSetNotFound(f"fastai pins no checksum for {url}; apikit downloads no archive it cannot check.")
    size, md5 = pin
    return Archive(url, FASTAI_PIN, md5, size)


def digest(file: Path, algo: str) -> str:
    """Hex digest of the whole file (for `FASTAI_PIN`: fastai's md5 of the first MiB)."""
    if algo == FASTAI_PIN:
        return path_stats(file)[1]
    h = hashlib.new(algo)
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checked(file: Path, a: Archive) -> bool:
    return (a.size is None or file.stat().st_size == a.size) and digest(file, a.algo) == a.digest


def _escapes(dest: Path, name: str) -> bool:
    p = Path(name)
    return p.is_absolute() or not (dest / p).resolve().is_relative_to(dest.resolve())


def _check_members(archive: Path, t: tarfile.TarFile, dest: Path) -> None:
    """Refuse the whole archive if any member would be written outside `dest` or is not a plain file or folder."""
    for m in t.getmembers():
        out = _escapes(dest, m.name) or ".." in Path(m.name).parts
        if m.issym():
            out = out or _escapes(dest, str(Path(m.name).parent / m.linkname))
        elif m.islnk():
            out = out or _escapes(dest, m.linkname)
        elif not (m.isfile() or m.isdir()):
            raise ValueError(f"{archive.name} holds {m.name!r}, which is not a file, folder or link; refused "
                             "(the archive is not the data set's own)")
        if out:
            what = f" -> {m.linkname}" if (m.issym() or m.islnk()) else ""
            raise ValueError(f"{archive.name} holds {m.name!r}{what}, which would be written outside {dest}; "
                             "refused (the archive is not the data set's own)")


def _extract(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing it whole if any member would land outside `dest`."""
    with tarfile.open(archive) as t:
        _check_members(archive, t, dest)
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, filter="data")  # the standard library's own check on top of ours
        else:  # Python without extraction filters: `_check_members` has refused what the filter would
            t.extractall(dest)


def _fetch_archives(src: Source, root: Path, partial: Path) -> Path:
    store = root / "archives"
    store.mkdir(parents=True, exist_ok=True)
    archives = src.archives or (_fastai_archive(src.fastai_url),)
    for a in archives:
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
    # A single top folder is the data set's folder: named as `src.top` in apikit's archives; fastai's copies are
    # renamed as fastai's untar_data renames them (whatever the folder is called).
    single = len(inner) == 1 and inner[0].is_dir() and not inner[0].is_symlink()
    return inner[0] if single and (src.fastai_url or inner[0].name == src.top) else partial


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
        extracted = _fetch_archives(src, root, partial)
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
