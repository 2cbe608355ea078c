"""Reading the runs: every run_dir's metrics.json under a folder -> one flat row per run.

Reads only files, never another notebook's memory. A run's status is the recorded one, except that a
"running" run whose lock holder is gone reads "interrupted" (`apikit.record.run_status`).
"""
import math
import numbers
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..record import RunRecord
from ..runs import CorruptRunFile, lock_problem, shown

__all__ = ["collect", "countable", "top1_of", "number", "diagnostics_frame"]

# Top-level keys of metrics.json kept under their own name; a config key of the same name gets a "config." prefix.
_FIXED = ("run_dir", "status", "error", "config", "history", "diagnostics", "versions", "git_commit", "device",
          "weights_loaded")


def _load(path):
    """(the record of the run whose metrics.json is `path`, None), or (None, why not) with a warning naming the file
    when it cannot be read: bounded and type-checked (`RunRecord.read`), a FIFO or other non-regular file is never
    opened."""
    try:
        return RunRecord.read(path.parent), None
    except CorruptRunFile as e:
        warnings.warn(f"apikit.report: skipping a run: {e}", stacklevel=3)
        return None, str(e).replace(str(path), path.name, 1)


def _row(record):
    """The flat row of one run (its `RunRecord`): status, config keys, final metrics, times, and the raw
    config/history.

    `weights_recorded` says whether metrics.json has `weights_loaded` (apikit writes it; without it, the report
    claims nothing about the weights)."""
    data = record.data
    row = {"run_dir": str(record.run_dir), "status": record.status, "error": data.get("error")}
    cfg = dict(record.config)
    for k, v in cfg.items():
        row[f"config.{k}" if k in _FIXED else k] = v
    for prefix, part in (("metrics", record.metrics), ("times", data.get("times"))):
        for k, v in (part or {}).items():
            row[f"{prefix}.{k}" if k in row else k] = v
    history = record.history
    row.update(epochs_done=len(history), git_commit=data.get("git_commit"), device=data.get("device"),
               versions=data.get("versions") or {}, config=cfg, history=history,
               weights_loaded=record.weights_loaded, weights_recorded="weights_loaded" in data,
               diagnostics=data.get("diagnostics") if isinstance(data.get("diagnostics"), list) else [])
    return row


def collect(root):
    """One row per run_dir under `root` (every `**/metrics.json`): flattened config, final metrics, status.

    `run_dir` is the folder that holds the metrics.json. Failed, running and interrupted runs are kept.
    Unreadable files (truncated, crafted, oversized, a FIFO) are skipped with a warning naming them, and listed in
    `df.attrs["skipped"]`; `df.attrs["problems"]` lists them and lock files apikit did not write, each with why.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root={str(root)!r} is not a folder; it should hold the run_dirs (metrics.json).")
    rows, skipped, problems = [], [], []
    for path in sorted(root.rglob("metrics.json")):
        record, why = _load(path)
        if record is None or record.data is None:  # unreadable, or gone since the folder was listed
            skipped.append(str(path))
            problems.append(dict(file=str(path), reason=why))
            continue
        rows.append(_row(record))
        why = lock_problem(path.parent / ".lock")
        if why:  # the run is kept: its status comes from the kernel's lock, not from this file
            problems.append(dict(file=str(path.parent / ".lock"), reason=f"{why}; the status is read from whether "
                                 "a process holds the lock"))
    df = pd.DataFrame(rows, columns=None if rows else ["run_dir", "status", "error", "top1", "config", "history"])
    df.attrs.update(root=str(root), skipped=skipped, problems=problems)
    return df


def number(v):
    """`v` as a float when it is a finite real number (not a bool), else None."""
    try:
        ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
    except OverflowError:  # an int beyond any float
        return None
    return float(v) if ok else None


def top1_of(run, key="top1"):
    """A run's final-epoch top-1 (or `key`, e.g. "best_top1") as a float, None when absent or not a number."""
    return number(run.get(key) if isinstance(run, dict) else run[key] if key in run.index else None)


def countable(runs):
    """The runs that can fill a cell: status "finished" with a numeric top1."""
    if runs.empty:
        return runs
    ok = [(s == "finished") and top1_of(r) is not None for s, (_, r) in zip(runs["status"], runs.iterrows())]
    return runs[np.array(ok, dtype=bool)]


def diagnostics_frame(runs, root=None):
    """One row per (run, epoch) of the pair-mining diagnostics in the runs' metrics.json."""
    rows = []
    for _, r in runs.iterrows():
        for d in r.get("diagnostics") or []:
            if not (isinstance(d, dict) and isinstance(d.get("epoch"), int)):
                continue  # RunRecord.read refuses such a file; a hand-made row is left out, not fatal
            dist = lambda key: (d.get(key) if isinstance(d.get(key), dict) else {}).get("mean")
            rows.append(dict(run=shown(r["run_dir"], root), epoch=d["epoch"], rank_active=d.get("rank_active"),
                             intra_distance=dist("intra_distance"), inter_distance=dist("inter_distance"),
                             gate_self=d.get("gate_self"), gate_other=d.get("gate_other"),
                             no_intra_partner=d.get("no_intra_partner")))
    return pd.DataFrame(rows)
