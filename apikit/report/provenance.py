"""Provenance: which run_dir produced which cell, the runs in no cell and why, and what was not run (with the
command that runs it)."""
import math

import pandas as pd

from ..paper import PAPER_ARCHS, PAPER_SOTA, TABLE_TITLES, TABLES
from ..runs import shown
from .collect import countable
from .document import MISSING
from .match import ABLATED, API_ONLY, expected_row, matches_row, same, setting_key, settings
from .tables import SOTA_TABLES

__all__ = ["manifest", "other_runs", "not_run", "PAPER_PRECISION_FLAG", "SLURM_EXAMPLE"]

# The Makefile trains in bf16 unless told otherwise; the paper's setting is fp32 (`apikit.paper.RECIPE`).
PAPER_PRECISION_FLAG = "PRECISION=fp32"


def _fmt(v):
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def manifest(sota, ablations, root=None):
    """Which run_dir produced which cell: table, setting, cell, run_dir (relative to `root`), seed, top1.

    `sota` is `sota_stats(...)`, `ablations` a {table: ablation_stats(...)} dict.
    """
    rows = []
    for _, c in sota.iterrows():
        for d, seed, v in zip(c["run_dirs"], c["seeds"], c["values"]):
            rows.append({"table": "Tables 6-10", "setting": c["setting"], "cell": f"{c['dataset']} / {c['arch']}",
                         "run_dir": shown(d, root), "seed": seed, "top1": _fmt(v)})
    for table, s in ablations.items():
        for _, c in s.iterrows():
            for d, seed, v in zip(c["run_dirs"], c["seeds"], c["values"]):
                rows.append({"table": TABLE_TITLES[table], "setting": c["setting"], "cell": c["row"],
                             "run_dir": shown(d, root), "seed": seed, "top1": _fmt(v)})
    return pd.DataFrame(rows, columns=["table", "setting", "cell", "run_dir", "seed", "top1"])


def _counted_instead(cfg, counted, root):
    """Why a finished run of a counted configuration is in no cell: the counted run with its seed, or None."""
    for c in counted:
        other = c["config"]
        if same(other.get("seed"), cfg.get("seed")) and setting_key(other) == setting_key(cfg) and matches_row(
                other, {k: cfg.get(k) for k in ABLATED}):
            return (f"finished; a run with its seed ({cfg.get('seed')}) and configuration was counted instead: "
                    f"{shown(c['run_dir'], root)} (a cell counts one run per seed)")
    return None


def _nearest_row(cfg, found):
    """Why a finished run matches no shown row: the row of its setting nearest its config, and the keys in which
    they differ (the row's value, then the run's)."""
    setting = next((s for s in found if setting_key(s) == setting_key(cfg)), None)
    if setting is None:
        return "finished; its setting has no table"
    best = None
    for table, rows in TABLES.items():
        for name, overrides in rows:
            want = expected_row(setting, overrides)
            baseline = want["api"] is False and same(cfg.get("api"), False)  # API-only keys mean nothing to both
            keys = [k for k in ABLATED if not (baseline and k in API_ONLY)]
            diff = [k for k in keys if not same(cfg.get(k), want.get(k))]
            if best is None or len(diff) < len(best[2]):
                best = (table, name, diff, want)
    table, name, diff, want = best
    if not diff:
        return (f"finished; it is {TABLE_TITLES[table]}, row {name}, whose table is not shown in its setting (no "
                "other row of it has runs to compare)")
    return (f"finished; its config matches no row: the nearest, {TABLE_TITLES[table]}, row {name}, has "
            + ", ".join(f"{k} {want.get(k)!r} (this run: {cfg.get(k)!r})" for k in diff))


def other_runs(runs, used=(), root=None):
    """The runs in no cell, with why: failed/running/interrupted (and the error), no top1, a run with its seed
    counted instead (named), or a config in no row (the nearest row and how it differs)."""
    used, rows = set(used), []
    ok = set(countable(runs)["run_dir"]) if not runs.empty else set()
    counted = [r for _, r in runs.iterrows() if r["run_dir"] in used and r["run_dir"] in ok] if not runs.empty else []
    found = settings(runs) if ok - used else []
    for _, r in runs.iterrows():
        if r["run_dir"] in used:
            continue
        if r["run_dir"] not in ok:
            why = f"status {r['status']}" if r["status"] != "finished" else "finished without a numeric metrics.top1"
        else:
            why = _counted_instead(r["config"], counted, root) or _nearest_row(r["config"], found)
        err = r.get("error")
        rows.append({"run_dir": shown(r["run_dir"], root), "status": r["status"], "why": why,
                     "error": "" if err is None or (isinstance(err, float) and math.isnan(err)) else str(err)})
    return pd.DataFrame(rows, columns=["run_dir", "status", "why", "error"])


# A SLURM submission of a grid, as an example the reader edits (docs/scale.md has the options).
SLURM_EXAMPLE = "EXECUTOR=slurm LAUNCH_ARGS=\"--partition gpu --gpus-per-run 1 --time 2-00:00:00 --no-wait\""


def _grid_commands(target):
    """The one grid command that fills what is missing (finished runs are kept), on local GPUs and on SLURM."""
    return f"make {target} {PAPER_PRECISION_FLAG}\nmake {target} {PAPER_PRECISION_FLAG} {SLURM_EXAMPLE}"


def not_run(sota, ablations):
    """What the paper has and no run in its setting fills, with the one grid command (local GPUs, then SLURM) that
    runs it: a row for the cells of Tables 6-10 missing, and one for the rows of Tables 1-5 missing."""
    rows, cells = [], []
    paper = sota[sota["paper_setting"].astype(bool)]
    for d in PAPER_SOTA:
        done = set(paper[(paper["dataset"] == d) & (paper["n"] > 0)]["arch"])
        missing = [a for a in PAPER_ARCHS if a not in done]
        if missing:
            cells.append(f"{SOTA_TABLES[d]} ({d}): {', '.join(missing)}")
    if cells:
        rows.append({"to fill": "Tables 6-10 at the paper's recipe: " + "; ".join(cells),
                     "command": _grid_commands("tables")})
    missing = {}
    for t, s in ablations.items():
        mine = s[s["paper_setting"].astype(bool)]
        if not mine["compared"].astype(bool).any():
            missing[t] = ", ".join(mine[mine["n"] == 0]["row"]) if not mine.empty else "every row"
        elif (mine["n"] == 0).any():
            missing[t] = ", ".join(mine[mine["n"] == 0]["row"])
    if len(missing) == len(ablations) and not any(s["paper_setting"].astype(bool).any() and s["compared"].any()
                                                   for s in ablations.values()):
        what = "Tables 1-5 at the paper's setting (CUB, ResNet-101): every ablation row"
    else:
        what = "; ".join(f"{TABLE_TITLES[t]}: {rows_}" for t, rows_ in missing.items() if rows_)
    if what:
        rows.append({"to fill": what, "command": _grid_commands("ablations")})
    return pd.DataFrame(rows, columns=["to fill", "command"])
