"""A run's record: what metrics.json holds (`record_problem` checks every type apikit writes there against the
parameter schema), reading it (`read_metrics`, bounded), a finished folder's record read once with its checked
model (`RunRecord`), recording a run that ended without recording it (`record_failure`, under the run's lock), and
what a checkpoint must hold to resume from (`load_checkpoint`); a run's status (`run_status`) and its model's
fingerprint (`model_fingerprint`). Above the schema (`apikit.schema`); `apikit.runs` keeps paths and files."""
import hashlib
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .export import WEIGHTS
from .locks import holder, is_held
from .notebook_errors import OneLineError
from .runs import OVERWRITE_HINT, CorruptRunFile, RunInUse, read_json, run_lock, write_json
from .schema import PARAMS
from .tensorfile import load_tensors

__all__ = ["run_status", "NoModel", "NotItsModel", "model_fingerprint", "record_problem", "read_metrics",
           "record_failure", "RunRecord", "load_checkpoint"]


def run_status(run_dir, data):
    """A run's status as recorded ("unknown" if none), except that "running" without a live holder of the folder's
    lock is "interrupted" (kept as recorded when the lock names another host: this machine cannot tell)."""
    status = data.get("status") if isinstance(data, dict) else None
    status = status if isinstance(status, str) and status else "unknown"
    if status == "running":
        lock = Path(run_dir) / ".lock"
        info = holder(lock)
        if not is_held(lock) and (info is None or info["host"] == socket.gethostname()):
            return "interrupted"
    return status


class NoModel(OneLineError, FileNotFoundError):
    """A run_dir without the model file its metrics.json names (not a finished run's folder)."""


class NotItsModel(OneLineError, ValueError):
    """A model file that cannot be matched to its run's metrics.json (no fingerprint, or another run's)."""


def model_fingerprint(path):
    """sha256 of an exported model file: metrics.json records it, so a model is never read as another run's."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finite(v):
    """A number as apikit writes them: an int or float (not a bool) that is finite as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond any float, e.g. 10**400
        return False


def _short(v):
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _not_numbers(obj, where):
    bad = next((k for k, v in obj.items() if v is not None and not _finite(v)), None)
    return None if bad is None else f"{where}.{bad} is {_short(obj[bad])}, not a finite number"


def _entries(items, where, numeric=None):
    """What is wrong with a list of per-epoch entries (history, diagnostics), or None."""
    if not isinstance(items, list):
        return f"{where} is {_short(items)}, not a list"
    for i, h in enumerate(items):
        if not isinstance(h, dict):
            return f"{where}[{i}] is {_short(h)}, not an object"
        if not isinstance(h.get("epoch"), int) or isinstance(h["epoch"], bool):
            return f"{where}[{i}] has no epoch number (epoch: {_short(h.get('epoch'))})"
        if not _finite(h["epoch"]):
            return f"{where}[{i}].epoch is {_short(h['epoch'])}, not a finite number"
        problem = _not_numbers({k: h[k] for k in (numeric or h) if k in h}, f"{where}[{i}]")
        if problem:
            return problem
    return None


def record_problem(data):
    """What makes a parsed metrics.json unusable (a value of a type apikit never writes there), or None."""
    if not isinstance(data, dict):
        return f"it holds {_short(data)}, not a JSON object"
    for key in ("status", "error", "model_sha256", "weights_sha256"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"{key} is {_short(data[key])}, not a string"
    for key in ("config", "metrics", "times", "versions", "normalization"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is {_short(data[key])}, not a JSON object"
    for key in ("metrics", "times"):
        problem = _not_numbers(data.get(key) or {}, key)
        if problem:
            return problem
    for key, numeric in (("history", None), ("diagnostics", ("no_intra_partner", "rank_active", "gate_self",
                                                              "gate_other"))):
        problem = data.get(key) is not None and _entries(data[key], key, numeric)
        if problem:
            return problem
    config = data.get("config") or {}
    for p in PARAMS:
        v = config.get(p.name)
        if v is None:
            continue
        if p.type is float or (p.type is int and isinstance(v, int) and not isinstance(v, bool)):
            # an int beyond a float's range (10**400) stops whatever computes with it: the report scales n_classes
            if not _finite(v):
                return f"config.{p.name} is {_short(v)}, not a finite number"
        elif not isinstance(v, p.type):
            return f"config.{p.name} is {_short(v)}, not a {p.type.__name__}"
    return None


def read_metrics(run_dir):
    """The run_dir's metrics.json as a dict, None if there is none; CorruptRunFile, with the reason, if it cannot
    be read or holds what apikit never writes there (bounded: see `read_json`, `record_problem`)."""
    f = Path(run_dir) / "metrics.json"
    if not os.path.lexists(f):
        return None
    data = read_json(f)
    problem = record_problem(data)
    if problem:
        raise CorruptRunFile(f"{f} is not a metrics.json apikit wrote: {problem}; {OVERWRITE_HINT}")
    return data


def record_failure(run_dir, error, config=None, job_log=None):
    """Record a run that ended without recording it (its kernel or job killed, its notebook failed before training):
    only under the run's lock, and only over no record or one that still says running, never over a run's own end
    (finished, failed, interrupted). The history and `epochs_done` it recorded stay. Returns the status on disk
    afterwards: "failed", the run's own, "corrupt", or "busy" when another process holds the run."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir):
            try:
                old = read_metrics(run_dir)
            except CorruptRunFile:
                return "corrupt"
            if old is not None and old.get("status") != "running":
                return old.get("status") or "unknown"
            record = {**(old or dict(config=config, metrics=None, history=[])), "status": "failed", "error": error}
            if job_log is not None:
                record["job_log"] = str(job_log)
            write_json(run_dir / "metrics.json", record)
            return "failed"
    except RunInUse:
        return "busy"


@dataclass(frozen=True)
class RunRecord:
    """A run folder's metrics.json, read once: what visualize, the explorer, the report and the demo take from it.

    `data` is metrics.json as written (None: the folder has none); the properties are its entries, empty where it
    records none. Read it again (`RunRecord.read`) for a run that may have moved on since."""
    run_dir: Path
    data: dict | None
    status: str  # `run_status`: as recorded, but "running" with nobody holding the lock is "interrupted"

    @classmethod
    def read(cls, run_dir):
        """The record of `run_dir` (`read_metrics`: bounded and type-checked; CorruptRunFile with the reason)."""
        run_dir = Path(run_dir)
        data = read_metrics(run_dir)
        return cls(run_dir, data, run_status(run_dir, data))

    def _get(self, key):
        return (self.data or {}).get(key)

    @property
    def config(self) -> dict:
        """The parameters the run was trained with."""
        return self._get("config") or {}

    @property
    def metrics(self) -> dict:
        """Its final metrics (top1, ...)."""
        return self._get("metrics") or {}

    @property
    def history(self) -> list:
        """One entry per finished epoch."""
        return self._get("history") or []

    @property
    def normalization(self) -> dict:
        """The input statistics it was trained with ({"mean", "std", ...})."""
        return self._get("normalization") or {}

    @property
    def fingerprint(self):
        """The sha256 metrics.json records for the run's model.pth (`model` checks it), or None."""
        return self._get("weights_sha256")

    @property
    def weights_loaded(self):
        """What its backbone started from, as recorded (None: not recorded)."""
        return self._get("weights_loaded")

    @property
    def epochs_done(self) -> int:
        """The epochs it recorded as finished (0 when it recorded none)."""
        done = self._get("epochs_done")
        return done if isinstance(done, int) and not isinstance(done, bool) else 0

    @property
    def unfinished(self):
        """Why a run that has not finished has no model to load (interrupted, failed or still training), or None."""
        if self.status not in ("interrupted", "failed", "running"):
            return None
        run_dir, done, epochs = self.run_dir, self.epochs_done, self.config.get("epochs")
        of = f" of {epochs}" if isinstance(epochs, int) and not isinstance(epochs, bool) else ""
        if self.status == "running":
            return (f"{run_dir}: still training (epoch {done + 1}{of}); its model is saved when it finishes: "
                    "visualize it then.")
        if self.status == "failed":
            error = str(self._get("error") or "").strip().splitlines() or ["no error recorded"]
            return (f"{run_dir}: failed before its model was saved ({error[-1].strip()}); fix that and run the same "
                    "training command again.")
        where = f"after epoch {done}{of}" if done else "before its first epoch finished"
        return (f"{run_dir}: interrupted {where}, before its model was saved; run the same training command again "
                "to resume it, then visualize it.")

    def model(self):
        """The run's model.pth (weights only: `apikit.export`), after checking it is the one its metrics.json was
        written for (`fingerprint`); NoModel or NotItsModel, one line saying what to do, otherwise."""
        run_dir = self.run_dir
        if not run_dir.is_dir():
            raise NoModel(f"{run_dir} is no folder: point it at the run_dir of a finished training run.")
        if self.unfinished:
            raise NoModel(self.unfinished)
        model = run_dir / WEIGHTS
        if not model.is_file() and (run_dir / "model.pkl").is_file():
            # model.pkl is fastai's pickle, for users who trust the run; apikit itself never unpickles it
            raise NoModel(f"{run_dir} holds model.pkl but no {WEIGHTS}: apikit loads a run through its weights "
                          f"alone ({WEIGHTS}, read with weights_only=True), never through model.pkl; re-run the "
                          "training (overwrite=True) with this apikit.")
        if not model.is_file():
            demo = "demo" in run_dir.parts
            hint = f" (the demo's runs are made by `make demo`; {WEIGHTS} is not kept in git)" if demo else ""
            raise NoModel(f"{run_dir} holds no {WEIGHTS}: point it at the run_dir of a finished training run{hint}.")
        if self.fingerprint is None:
            raise NotItsModel(f"{run_dir}/metrics.json records no model fingerprint (weights_sha256), so {WEIGHTS} "
                              "cannot be matched to its results: re-run the training (overwrite=True) with this "
                              "apikit.")
        if model_fingerprint(model) != self.fingerprint:
            raise NotItsModel(f"{model} is not the model of {run_dir}/metrics.json (fingerprints differ): it was left "
                              "by another run. Re-run the training of this run_dir (overwrite=True) or point at the "
                              "right one.")
        return model


# What a run's checkpoint holds (apikit.runlog.RunLog writes it), with the type each entry must have for a resume
# to use it.
_CHECKPOINT = dict(config=dict, epoch=int, history=list, model=dict, opt=dict, rng=dict)


def _checkpoint_problem(state):
    """What makes a loaded checkpoint unusable for a resume (missing or mistyped entries), or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [k for k in _CHECKPOINT if k not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    wrong = [k for k, t in _CHECKPOINT.items() if not isinstance(state[k], t) or isinstance(state[k], bool)]
    if wrong:
        return ", ".join(f"{k} is a {type(state[k]).__name__}" for k in wrong)
    if not {"state", "hypers"} <= set(state["opt"]) or not {"python", "numpy", "torch"} <= set(state["rng"]):
        return "its optimiser or random state is incomplete"
    return None


def load_checkpoint(file):
    """A checkpoint's contents, read with `weights_only=True` (a checkpoint cannot run code), or a clear error."""
    way_out = "delete it to start the run afresh, or re-run with overwrite=True."
    state = load_tensors(file, way_out, CorruptRunFile)
    problem = _checkpoint_problem(state)
    if problem:
        raise CorruptRunFile(f"{file} is not a checkpoint apikit wrote ({problem}); {way_out}")
    return state
