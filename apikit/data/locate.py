"""Finding a data set's folder from the path a caller gives, and saying clearly when it is not there."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import DataSetNotFound, NotWritable
from .sources import Source

__all__ = ["data_root", "writable", "candidates", "missing", "locate", "how_to_get", "not_found", "missing_images"]


def data_root() -> Path:
    """Where data sets live unless a path is given: $APIKIT_DATA, else ~/.cache/apikit/data."""
    return Path(os.environ.get("APIKIT_DATA") or "~/.cache/apikit/data").expanduser()


def writable(folder) -> Path:
    """`folder` (created if missing) once a file can be made in it; else `NotWritable`, one line naming it
    (the data root by APIKIT_DATA, when it is in there) and the fix, before the OS refuses some file inside it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        root = data_root()
        why = "a file stands in its way" if e.errno in (errno.EEXIST, errno.ENOTDIR) else e.strerror or type(e).__name__
        if folder != root and root not in folder.parents:
            raise NotWritable(f"{folder} is not writable ({why}): choose a folder you can write to.") from None
        name = (f"APIKIT_DATA={os.environ['APIKIT_DATA']}" if os.environ.get("APIKIT_DATA") else
                f"apikit's data root {root} (APIKIT_DATA is not set)")
        raise NotWritable(f"{name} is not writable ({why}): apikit draws the generated set and keeps its image "
                              "caches there; set APIKIT_DATA to a writable folder.") from None
    return folder


def candidates(src: Source, path=None) -> list[Path]:
    """The folders that may hold `src`'s index files: `path` itself, its data-set subfolders, and those
    wrapped once more by their archive (e.g. CUB_200_2011/CUB_200_2011)."""
    base = data_root() if path is None else Path(path).expanduser()
    subs = [base / f for f in src.folders if f]
    out = [base, *subs, *([base / src.top / src.folders[0]] if subs else [])]
    return list(dict.fromkeys(out))


def _present(root: Path, entry: str) -> bool:
    return any((root / a).is_dir() if a.endswith("/") else (root / a).is_file() for a in entry.split("|"))


def missing(root: Path, layout) -> list[str]:
    """The entries of `layout` that are not in `root`."""
    return [e for e in layout if not _present(root, e)]


def locate(src: Source, path=None) -> tuple[Path, int]:
    """The folder holding `src`'s index files and the index of the layout found there."""
    tried = candidates(src, path)
    for root in tried:
        for i, layout in enumerate(src.layouts):
            if not missing(root, layout):
                return root, i
    raise DataSetNotFound(not_found(src, tried, path))


def how_to_get(src: Source, path=None) -> str:
    """The call or the steps that fetch `src`."""
    where = data_root() if path is None else Path(path).expanduser()
    by_hand = src.manual.replace("<data root>", str(where)).replace("the data root", str(where))
    if not (src.fastai_url or src.archives):
        return by_hand
    at = "" if path is None else f", path={str(where)!r}"
    urls = [src.fastai_url] if src.fastai_url else [a.url for a in src.archives]
    return f'get_dls("{src.name}"{at}, download=True) downloads {", ".join(urls)} into {where / src.top}; or by hand: {by_hand}'


def _show(entries) -> str:
    return ", ".join(e.replace("|", " or ") for e in entries)


def not_found(src: Source, tried: list[Path], path=None) -> str:
    """The message for a tree that is not where it was looked for."""
    # Report the folder that comes closest to a complete layout (the first tried if none exists).
    gaps = {t: min((missing(t, layout) for layout in src.layouts), key=len) for t in tried}
    best = min(tried, key=lambda t: (not t.is_dir(), len(gaps[t])))
    lines = [f"{src.title} ({src.name!r}) not found.",
             f"  looked in: {', '.join(str(t) for t in tried)}",
             "  expected there:" if len(src.layouts) == 1 else "  expected there, one of:"]
    lines += [f"    {_show(layout)}" for layout in src.layouts]
    lines.append(f"  missing in {best}: {_show(gaps[best])}")
    lines.append(f"  to get it: {how_to_get(src, path)}")
    return "\n".join(lines)


def missing_images(src: Source, root: Path, files: list[Path]) -> str:
    """The message for a tree whose index names images that are not on disk."""
    shown = "\n".join(f"    {f}" for f in files[:5])
    more = f"\n    ... and {len(files) - 5} more" if len(files) > 5 else ""
    return (f"{src.title} ({src.name!r}) at {root} is incomplete: {len(files)} image(s) named in its index "
            f"files are missing, e.g.\n{shown}{more}\n"
            f"  Re-extract the data set, or fetch it again. To get it: {how_to_get(src)}")
