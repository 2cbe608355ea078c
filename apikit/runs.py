"""Run folders on disk: the project root, atomic writes, metrics.json, run names, locks, model fingerprints.

Every file apikit writes goes through `atomic_write` (a uniquely named temporary file in the same folder,
then `os.replace`), so a reader never sees half a file and two processes never share a temporary file.
Plain Python: no fastai, so the data package and the report can use it too.
"""
import hashlib
import json
import math
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = ["project_root", "resolve", "atomic_write", "write_json", "read_metrics", "CorruptRunFile", "run_name",
           "RunInUse", "run_lock", "holder", "run_status", "file_lock", "model_fingerprint", "check_model"]


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


def atomic_write(path, data):
    """Write `data` (str or bytes, or a callable taking the temporary path) to `path` atomically; returns `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk or an exception leaves no partial file behind
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


class CorruptRunFile(ValueError):
    """A run file exists but cannot be read (truncated or not what apikit writes)."""


def read_metrics(run_dir):
    """The run_dir's metrics.json as a dict, None if there is none; CorruptRunFile if it cannot be read."""
    f = Path(run_dir) / "metrics.json"
    if not f.exists():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRunFile(f"{f} cannot be read ({type(e).__name__}: {e}); delete it, or re-run with "
                             "overwrite=True to replace it.") from None
    if not isinstance(data, dict):
        raise CorruptRunFile(f"{f} is not a JSON object; delete it, or re-run with overwrite=True to replace it.")
    return data


def run_name(overrides):
    """A stable folder name for a configuration: 'api-net' for the base, else its sorted overrides."""
    if not overrides:
        return "api-net"
    return "__".join(f"{k}-{v}" for k, v in sorted(overrides.items()))


class RunInUse(RuntimeError):
    """Another live process holds the run folder."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(lock_file):
    """The holder recorded in a lock file (pid, host, started), or None if it is gone or unreadable."""
    try:
        return json.loads(Path(lock_file).read_text())
    except (OSError, ValueError):
        return None


def _stale(info):
    """A lock whose holder is a dead process on this machine (a killed run) blocks nothing."""
    return info is None or (info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))))


@contextmanager
def run_lock(run_dir):
    """Hold `run_dir/.lock` for one run: a second live run on the folder is refused at once, naming the holder.

    A lock left by a dead process on this machine (SIGKILL, power loss) is taken over, so a resume is never
    blocked by the run it resumes.
    """
    lock = Path(run_dir) / ".lock"
    me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"))
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = holder(lock)
            if not _stale(info):
                raise RunInUse(f"{run_dir} is in use by another run (pid {info.get('pid')} on {info.get('host')}, "
                               f"started {info.get('started')}); wait for it to finish, stop it, or choose another "
                               "run_dir.") from None
            # Move the stale lock aside under a unique name: of two processes taking over, only one succeeds.
            try:
                os.replace(lock, lock.with_name(f".lock.stale-{uuid.uuid4().hex[:8]}"))
            except FileNotFoundError:
                pass
            for old in Path(run_dir).glob(".lock.stale-*"):
                old.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise RunInUse(f"{run_dir}: could not take the run folder's lock; another process keeps taking it.")
    try:
        yield me
    finally:
        if (holder(lock) or {}).get("pid") == me["pid"]:
            lock.unlink(missing_ok=True)


def run_status(run_dir, data):
    """A run's status as recorded, except that "running" without a live holder of the folder is "interrupted"."""
    status = (data or {}).get("status") or "unknown"
    if status == "running" and _stale(holder(Path(run_dir) / ".lock")):
        return "interrupted"
    return status


def model_fingerprint(path):
    """sha256 of an exported model file: metrics.json records it, so a model is never read as another run's."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_model(run_dir):
    """The run's `model.pkl`, after checking it is the model its metrics.json was written for; else a clear error."""
    run_dir = Path(run_dir)
    model, data = run_dir / "model.pkl", read_metrics(run_dir)
    if not model.is_file():
        hint = " (the demo's runs are made by `make demo`; model.pkl is not kept in git)" if "demo" in run_dir.parts else ""
        raise FileNotFoundError(f"{run_dir} holds no model.pkl: point it at the run_dir of a finished training "
                                f"run{hint}.")
    want = (data or {}).get("model_sha256")
    if want is None:
        raise ValueError(f"{run_dir}/metrics.json records no model fingerprint (model_sha256), so model.pkl cannot "
                         "be matched to its results: re-run the training (overwrite=True) with this apikit.")
    if model_fingerprint(model) != want:
        raise ValueError(f"{model} is not the model of {run_dir}/metrics.json (fingerprints differ): it was left by "
                         "another run. Re-run the training of this run_dir (overwrite=True) or point at the right one.")
    return model


@contextmanager
def file_lock(path):
    """An exclusive, blocking lock on `path` (created if needed) for building a shared cache once."""
    import fcntl
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
