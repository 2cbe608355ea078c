"""Run folders on disk: the project root, atomic writes, metrics.json, run names, run folders, model fingerprints.

Every file apikit writes goes through `atomic_write` (a uniquely named temporary file in the same folder,
then `os.replace`), so a reader never sees half a file and two processes never share a temporary file; a
write that fails on a full disk says so (`DiskFull`). Every run file is read bounded (`read_json`: regular
files only, size and nesting capped, types checked), so one crafted file stops nothing downstream. The
locks are `apikit.locks`'. Plain Python: no fastai, so the data package and the report can use it too.
"""
import errno
import json
import math
import os
import shutil
import stat
import sys
import traceback
import uuid
from pathlib import Path

import numpy as np
import torch

from .notebook_errors import OneLineError
from .locks import RunInUse, file_kind, file_lock, holder, lock_problem, run_lock

__all__ = ["project_root", "resolve", "shown", "shown_in", "atomic_write", "write_json", "CorruptRunFile", "run_name",
           "RunInUse", "run_lock", "holder", "file_lock", "DiskFull",
           "disk_full", "read_json", "RUN_FILES", "NotARunFolder", "check_run_dir", "lock_problem", "project_folder",
           "regular_bytes", "OVERWRITE_HINT"]


def project_root():
    """The apikit checkout: the folder above the package that holds pyproject.toml and notebooks/."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir() and (here / "pyproject.toml").is_file():
        return here
    raise FileNotFoundError(f"apikit is installed outside its checkout ({here} has no notebooks/): the notebooks "
                            "and relative run paths need the repository; install it with `pip install -e .` "
                            "from a clone.")


def resolve(path):
    """`path` as given when absolute, else relative to the project root: the same wherever a kernel starts."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def _places():
    """Where a shown path starts from: the project root (dropped), then the home folder (~)."""
    return ((project_root(), ""), (Path.home(), "~/"))


def shown(path, base=None):
    """`path` as printed and recorded: relative to the project root inside it, with ~ for the home folder, else as
    is; so that what a run records reads the same on every machine. With `base` (a report's runs root): relative to
    it, `..` included, or as given on another drive."""
    if base:
        try:
            return Path(os.path.relpath(path, base)).as_posix()
        except ValueError:
            return str(path)
    path = Path(path)
    for candidate in (path, path.resolve()) if path.is_absolute() else (path,):  # also through a symlinked folder
        for place, prefix in _places():
            try:
                return prefix + candidate.relative_to(place).as_posix()
            except ValueError:
                continue
    return path.as_posix()


def shown_in(text):
    """`text` with every path in it `shown`: the project root's prefix dropped, the home folder's written ~."""
    for place, prefix in _places():
        text = text.replace(str(place) + "/", prefix)
    return text


# Less free space than this where a write failed: the disk is full, whatever exception the writer raised (torch
# says "unexpected pos", fastai rewords it), since a write that fills a disk leaves it with next to nothing.
FULL_BELOW = 1 << 20


class DiskFull(OSError):
    """A write failed on a full disk (errno ENOSPC), whatever the writing library raised."""


def _chain(e):
    """`e` and the exceptions it was raised from or during, each once."""
    seen = []
    while e is not None and not any(e is x for x in seen):
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def disk_full(e, folder):
    """The file or folder a full disk stopped, if `e` (or what it was raised from) says ENOSPC or `folder` has
    less than FULL_BELOW bytes free; else None."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno == errno.ENOSPC:
            return x.filename or str(folder)
    try:
        return str(folder) if shutil.disk_usage(folder).free < FULL_BELOW else None
    except OSError:
        return None


def atomic_write(path, data):
    """Write `data` (str or bytes, or a callable taking the temporary path) to `path` atomically; returns `path`.

    On failure the temporary file is closed and removed, and a full disk is raised as `DiskFull`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    outer = sys.exc_info()[1]  # an exception the caller is handling: its frames are not this write's to clear
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except Exception as e:
        full = disk_full(e, path.parent)  # now, while the failed write still takes its space
        for x in _chain(e):  # the writer's frames hold the temporary file open (torch's does): its space stays taken
            if x is outer:
                break
            traceback.clear_frames(x.__traceback__)
        tmp.unlink(missing_ok=True)
        if full is not None and not isinstance(e, DiskFull):
            raise DiskFull(errno.ENOSPC, f"the disk is full: {path} could not be written ({type(e).__name__}: "
                                         f"{str(e).strip()[:200]})", str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)  # an interrupt leaves no partial file behind either
    return path


def _clean(obj):
    """JSON-safe: NaN and infinities become null, tuples lists, anything else unknown its str()."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _clean(obj.item())
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _clean(obj.tolist())
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def write_json(path, obj):
    """`obj` as indented JSON (non-finite numbers as null), written atomically; returns the path."""
    return atomic_write(path, json.dumps(_clean(obj), indent=1))


class CorruptRunFile(OneLineError, ValueError):
    """A run file exists but cannot be read (truncated, crafted, or not what apikit writes)."""


# A run file larger or more deeply nested than these is not one apikit wrote: a 100-epoch metrics.json is about
# 100 KB and 6 levels deep. Both are checked before the file is parsed or its values used.
MAX_BYTES, MAX_DEPTH = 4 << 20, 16
OVERWRITE_HINT = "delete it, or re-run with overwrite=True to replace it."


def _depth(obj):
    """How deeply lists and objects nest in parsed JSON (a scalar: 0), without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        x, d = todo.pop()
        if isinstance(x, (dict, list)):
            deepest = max(deepest, d)
            todo.extend((v, d + 1) for v in (x.values() if isinstance(x, dict) else x))
    return deepest


def read_json(path, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH, hint=OVERWRITE_HINT):
    """The JSON in the regular file `path`; CorruptRunFile, with the reason and `hint`, when it is not a regular
    file (a FIFO is never opened), is over `max_bytes`, is nested deeper than `max_depth`, or is not JSON."""
    path = Path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptRunFile(f"{path} is {file_kind(st.st_mode)}, not a file apikit wrote: skipped unread; {hint}")
        if st.st_size > max_bytes:
            raise CorruptRunFile(f"{path} is {st.st_size} bytes, more than a file apikit writes ({max_bytes}); {hint}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: swapped for a FIFO since
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CorruptRunFile(f"{path} is not a regular file: skipped unread; {hint}")
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise CorruptRunFile(f"{path} is more than {max_bytes} bytes, more than a file apikit writes; {hint}")
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise CorruptRunFile(f"{path} cannot be read (nested deeper than Python can parse); {hint}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, CorruptRunFile):
            raise
        raise CorruptRunFile(f"{path} cannot be read ({type(e).__name__}: {e}); {hint}") from None
    if _depth(data) > max_depth:
        raise CorruptRunFile(f"{path} is nested more than {max_depth} levels deep, unlike any file apikit writes; "
                             f"{hint}")
    return data


def regular_bytes(path):
    """The bytes of the regular file `path`, or None when it is missing, unreadable or not a regular file: a link is
    not followed, a FIFO is never waited on and a device (/dev/zero) never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            return None


def run_name(overrides):
    """A stable folder name for a configuration: 'api-net' for the base, else its sorted overrides."""
    if not overrides:
        return "api-net"
    return "__".join(f"{k}-{v}" for k, v in sorted(overrides.items()))


# What a run writes into its folder (and a Lab kernel beside it): a folder holding only these is a run folder.
RUN_FILES = ("metrics.json", "job.json", "checkpoint.pth", "model.pkl", "model.pth", "curves.png", "confusion.png",
             "train.ipynb", "train.html", "visualize", ".lock", ".ipynb_checkpoints")
# Folders of the project itself: never a run_dir, whatever they hold.
_OWN = ("notebooks", "apikit", "tests", "docs", "benchmarks", "models", "reports")
# Folders the tools keep (version control, Python, Jupyter, test and lint caches, environments): nothing apikit
# writes goes anywhere inside one, wherever it is. A run written into .git/refs is a broken repository.
TOOLING = (".git", ".hg", ".svn", "__pycache__", ".venv", ".tox", ".nox", ".eggs", ".pytest_cache", ".ruff_cache",
           ".mypy_cache", ".ipynb_checkpoints", "node_modules")


def _tooling(path):
    """The tools' folder (TOOLING, or a *.egg-info) that `path` is inside, as given or through links, or None."""
    for parts in (Path(os.path.abspath(path)).parts, Path(path).resolve().parts):
        inside = next((p for p in parts if p in TOOLING or p.endswith(".egg-info")), None)
        if inside:
            return inside
    return None


def project_folder(path, allow=()):
    """Why `path` is never a place to write a run or a report into, or None: the project root, a folder above it,
    one of the project's own folders (less `allow`), or inside a folder of the tools (TOOLING), even through a link."""
    tool = _tooling(path)
    if tool is not None:
        return f"inside {tool}/, a folder the tools keep (version control, Python, Jupyter, caches)"
    real, root = Path(path).resolve(), project_root().resolve()
    if real == root or real in root.parents or real in {root / name for name in _OWN if name not in allow}:
        return "a folder of the project itself (or above it)"
    return None


class NotARunFolder(OneLineError, ValueError):
    """A run_dir that holds something else than a run: apikit writes a run only into a folder of its own."""


def _run_file(name):
    return name in RUN_FILES or (name.startswith(".") and name.endswith(".tmp")) or name.startswith(".lock.stale-")


def check_run_dir(run_dir):
    """`run_dir` resolved, if a run may be written there: missing, empty, holding an earlier run (metrics.json or
    checkpoint.pth) or only what a run writes (RUN_FILES); else NotARunFolder naming what is in the way."""
    path = resolve(run_dir)
    fix = "choose another run_dir (a new folder, e.g. reports/runs/mine)."
    why = project_folder(path)
    if why:
        raise NotARunFolder(f"run_dir={str(run_dir)!r} is {path.resolve()}, {why}, not a run folder: a run writes "
                            f"metrics.json, model.pkl and figures into its run_dir; {fix}")
    if not os.path.lexists(path):
        return path
    if not path.is_dir():
        raise NotARunFolder(f"run_dir={str(run_dir)!r} is {path}, which is a file, not a folder; {fix}")
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise PermissionError(f"run_dir={str(run_dir)!r} cannot be listed ({e.strerror}): choose a folder you can "
                              "read and write.") from None
    if "metrics.json" in names or "checkpoint.pth" in names:
        return path
    other = [n for n in names if not _run_file(n)]
    if other:
        shown_names = ", ".join(map(repr, other[:5])) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise NotARunFolder(f"run_dir={str(run_dir)!r} ({path}) holds what no run wrote ({shown_names}): a run is "
                            "written only into a new or empty folder, or one holding an earlier run (metrics.json, "
                            f"checkpoint.pth), so that nothing else is overwritten or mixed with it; {fix}")
    return path
