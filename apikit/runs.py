"""Run folders on disk: the project root, atomic writes, metrics.json, RNG state, run names, locks, notebooks.

Every file apikit writes goes through `atomic_write` (a uniquely named temporary file in the same folder,
then `os.replace`), so a reader never sees half a file and two processes never share a temporary file.
Plain Python: no fastai, so the data package and the report can use it too.
"""
import hashlib
import json
import math
import os
import random
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = ["project_root", "resolve", "atomic_write", "write_json", "read_metrics", "CorruptRunFile", "run_name",
           "rng_state", "set_rng_state", "RunInUse", "run_lock", "holder", "run_status", "file_lock",
           "model_fingerprint", "check_model", "export_html", "run_notebook", "keep_templates_clean", "TRAIN_NOTEBOOK",
           "TEMPLATE_KERNELSPEC", "TEMPLATE_LANGUAGE"]


def project_root():
    """The apikit checkout: the folder above the package that holds pyproject.toml and notebooks/."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir() and (here / "pyproject.toml").is_file():
        return here
    raise FileNotFoundError(f"apikit is installed outside its checkout ({here} has no notebooks/): the notebooks "
                            "and relative run paths need the repository; install it with `pip install -e .` "
                            "from a clone.")


TRAIN_NOTEBOOK = "notebooks/train.ipynb"


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


def rng_state(train_rng=None):
    """Python, NumPy and torch RNG states (and a DataLoader's `random.Random`), as tensors and plain containers.

    Everything loads with `torch.load(weights_only=True)`: a checkpoint cannot carry code.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(python=_py_state(random.getstate()), numpy=[kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                               has_gauss, gauss],
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                train_dl=_py_state(train_rng.getstate()) if train_rng is not None else None)


def _py_state(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def set_rng_state(s, train_rng=None):
    """Restore what `rng_state` saved."""
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    if train_rng is not None and s.get("train_dl") is not None:
        v, internal, gauss = s["train_dl"]
        train_rng.setstate((v, tuple(internal), gauss))


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


# A small style for executed notebooks' HTML: readable without nbconvert's 300 kB stylesheet.
_NOTEBOOK_CSS = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 ".jp-InputArea-editor,.input_area,pre{background:#f6f6f6;padding:4px 8px;overflow-x:auto}"
                 "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px}"
                 "img{max-width:100%}.jp-InputPrompt,.jp-OutputPrompt{display:none}</style>")


def export_html(notebook):
    """An HTML copy beside an executed notebook, for reading without Jupyter (small: a few lines of CSS).

    Paths inside the project are shown relative to its root and the home folder as ~, so a committed report
    holds no local paths.
    """
    import logging
    from nbconvert import HTMLExporter
    notebook = Path(notebook)
    if not notebook.exists():
        return None
    exporter = HTMLExporter(template_name="basic")
    exporter.log.setLevel(logging.ERROR)  # "Alternative text is missing": plots have no alt text to give
    body, _ = exporter.from_filename(str(notebook))
    body = body.replace(str(project_root()) + "/", "").replace(str(Path.home()) + "/", "~/")
    return atomic_write(notebook.with_suffix(".html"), f"<!DOCTYPE html>\n<meta charset=\"utf-8\">{_NOTEBOOK_CSS}\n{body}")


# The notebook metadata the templates ship with: what JupyterLab and papermill write for an ipykernel kernel,
# less the Python version, so that opening a template does not mark it modified.
TEMPLATE_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
TEMPLATE_LANGUAGE = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                     "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                     "pygments_lexer": "ipython3"}


def keep_templates_clean(model, path, contents_manager=None, **kwargs):
    """Jupyter pre-save hook (`make lab` sets it): a notebook saved into notebooks/ keeps no outputs or counts.

    The templates are papermill's interface and stay clean; edits to their code are kept. Any other
    notebook (a copy under scratch/, an executed run) is saved as it is.
    """
    if model.get("type") != "notebook":
        return
    root = Path(getattr(contents_manager, "root_dir", None) or project_root())
    if (root / path).resolve().parent != (project_root() / "notebooks").resolve():
        return
    for cell in model["content"]["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    # The kernel's own language_info (its Python version) would differ from machine to machine.
    model["content"].setdefault("metadata", {})["language_info"] = dict(TEMPLATE_LANGUAGE)


def _ipc_kernel_manager():
    """Kernels on local IPC sockets, not TCP: nothing listens on the network, and ipykernel does not warn about it."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
    return IPCKernelManager


def run_notebook(src, dst, parameters, kernel_name="python3", html=True, log_output=False, stdout=None):
    """Execute notebook `src` (relative to the project root) into `dst` with papermill; every apikit call goes here.

    The kernel starts in the project root, so relative paths mean the same in Lab, papermill and the CLI.
    `stdout` (a file, e.g. sys.stdout) receives the notebook's printed output as it runs.
    """
    import papermill as pm
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(resolve(src)), str(dst), parameters=parameters, kernel_name=kernel_name,
                            progress_bar=False, log_output=log_output, cwd=str(project_root()),
                            kernel_manager_class=_ipc_kernel_manager(), stdout_file=stdout)
    finally:
        if html:
            export_html(dst)
    return dst
