"""The report: every run_dir's metrics.json -> the paper's tables (1-5, 6-10), plots and a manifest.

Reads only files (`metrics.json`, written by the training notebook), never another notebook's memory.
`render(root, out)` writes `out/README.md`, `out/report.html` and `out/figures/*.png`; nothing else in
`out` is touched. `python -m apikit.report --root reports/runs --out reports` regenerates it.

How runs become table cells:

- A run counts when its status is "finished" and `metrics.top1` is a number; the others are listed under
  "Runs not in the tables" with their status and error.
- A *setting* is (dataset, arch, pretrained, size, epochs) plus the base batch (n_classes, n_images). The
  base batch of a setting is inferred: of the batches found among its runs, the one under which the most
  runs match a row of TABLES (ties: the paper's 30 x 4, then the larger batch). `base=` selects settings
  by any of these keys and pins the batch. Each setting gets its own block of rows in an ablation table:
  the paper's setting whenever it has runs (first), another setting where a row besides the base row has
  runs of its own; with no block at all, the paper's setting with every row missing.
- An ablation row's configuration is the paper's method (api, mutual mlp, gate pair, rank_weight 1,
  intra/inter similar) with the setting's batch, then the row's overrides (Table 5's via
  `scale_class_sizes`). A run matches when it equals that on the ablated keys; for a Baseline row
  (api false) the API-only keys (mutual, gate, rank_weight, intra, inter) are ignored. A row that scaling
  turns into the base configuration (e.g. N_im=2 at a 6 x 2 batch) is kept, with a note.
- A cell counts one run per seed: of runs with the same seed, the one in a folder named for the row
  (`ablations.run_name`, e.g. `api-net`), else the first by path; all cells list their run_dirs in the manifest.
- A SOTA cell (Tables 6-10) holds the runs with the paper's method and their setting's base batch, per
  data set and backbone (those with the most epochs, if they differ); one block per (size, pretrained), the
  paper's 448 px ImageNet-pretrained first and always shown.
- Ours is the mean over runs (one per seed) +- the sample std (ddof 1) when n >= 2; diff = ours - paper.
  One decimal, as the paper. A cell without runs shows MISSING, never disappears.
"""
import argparse
import html
import json
import math
import numbers
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .ablations import PAPER, PAPER_SOTA, TABLE_TITLES, TABLES, run_name, scale_class_sizes

__all__ = ["collect", "countable", "settings", "ablation_stats", "ablation_table", "sota_stats", "sota_table",
           "blocks", "manifest", "other_runs", "ablation_plot", "sota_plot", "curves_plot", "build", "render", "Report",
           "project_path", "MISSING", "PAPER_ARCHS", "METHOD", "ABLATED", "SETTING_KEYS", "PAPER_SETTING"]

MISSING = "—"
PAPER_ARCHS = ("resnet50", "resnet101", "densenet161")
# The paper's method (Section 4, Implementation Details): what every ablation row starts from.
METHOD = dict(api=True, mutual="mlp", gate="pair", rank_weight=1.0, intra="similar", inter="similar")
ABLATED = ("api", "mutual", "gate", "rank_weight", "intra", "inter", "n_classes", "n_images")
API_ONLY = ("mutual", "gate", "rank_weight", "intra", "inter")  # meaningless for the Baseline (api false)
SETTING_KEYS = ("dataset", "arch", "pretrained", "size", "epochs")
BATCH_KEYS = ("n_classes", "n_images")
PAPER_SETTING = dict(dataset="cub", arch="resnet101", pretrained=True, size=448, epochs=100, n_classes=30,
                     n_images=4)
DPI = 100
_FIXED = ("run_dir", "status", "error", "config", "history", "diagnostics", "versions", "git_commit", "device")
_ABSENT = object()


# --------------------------------------------------------------------------------------------- collect
def _load(path):
    """One metrics.json as a dict, or None with a warning naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.warn(f"apikit.report: skipping {path}: unreadable metrics.json ({type(e).__name__}: {e})",
                      stacklevel=3)
        return None
    bad = [k for k in ("config", "metrics", "times", "versions") if not isinstance(data.get(k) or {}, dict)] \
        if isinstance(data, dict) else ["top level"]
    if bad:
        warnings.warn(f"apikit.report: skipping {path}: {', '.join(bad)} is not a JSON object", stacklevel=3)
        return None
    return data


def _row(run_dir, data):
    """The flat row of one run: status, config keys, final metrics, times, and the raw config/history."""
    row = {"run_dir": str(run_dir), "status": data.get("status") or "unknown", "error": data.get("error")}
    cfg = dict(data.get("config") or {})
    for k, v in cfg.items():
        row[f"config.{k}" if k in _FIXED else k] = v
    for prefix, part in (("metrics", data.get("metrics")), ("times", data.get("times"))):
        for k, v in (part or {}).items():
            row[f"{prefix}.{k}" if k in row else k] = v
    history = data.get("history") if isinstance(data.get("history"), list) else []
    row.update(epochs_done=len(history), git_commit=data.get("git_commit"), device=data.get("device"),
               versions=data.get("versions") or {}, config=cfg, history=history,
               diagnostics=data.get("diagnostics") if isinstance(data.get("diagnostics"), list) else [])
    return row


def collect(root):
    """One row per run_dir under `root` (every `**/metrics.json`): flattened config, final metrics, status.

    `run_dir` is the folder that holds the metrics.json (a config key of the same name becomes
    `config.run_dir`). Failed and running runs are kept. Unreadable files are skipped with a warning
    naming them, and listed in `df.attrs["skipped"]`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root={str(root)!r} is not a folder; it should hold the run_dirs (metrics.json).")
    rows, skipped = [], []
    for path in sorted(root.rglob("metrics.json")):
        data = _load(path)
        if data is None:
            skipped.append(str(path))
        else:
            rows.append(_row(path.parent, data))
    df = pd.DataFrame(rows, columns=None if rows else ["run_dir", "status", "error", "top1", "config", "history"])
    df.attrs.update(root=str(root), skipped=skipped)
    return df


def _top1(row):
    v = row.get("top1") if isinstance(row, dict) else row["top1"] if "top1" in row.index else None
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) else None


def countable(runs):
    """The runs that can fill a cell: status "finished" with a numeric top1."""
    if runs.empty:
        return runs
    ok = [(s == "finished") and _top1(r) is not None for s, (_, r) in zip(runs["status"], runs.iterrows())]
    return runs[np.array(ok, dtype=bool)]


# --------------------------------------------------------------------------------------------- matching
def _same(a, b):
    """Config equality that treats 1 and 1.0 alike, keeps True apart from 1, and an absent key apart."""
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)) and bool(a) == bool(b)
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _expected(setting, overrides):
    """The ablated keys of a row: the paper's method, the setting's batch, then the row's overrides."""
    want = {**METHOD, "n_classes": setting["n_classes"], "n_images": setting["n_images"]}
    if isinstance(setting["n_classes"], numbers.Real) and isinstance(setting["n_images"], numbers.Real):
        overrides = scale_class_sizes(overrides, setting["n_classes"], setting["n_images"])
    want.update(overrides)
    return want


def _matches(cfg, want):
    """Whether a run's config equals `want` on the ablated keys (API-only keys skipped for a Baseline)."""
    keys = [k for k in ABLATED if not (want["api"] is False and k in API_ONLY)]
    return all(_same(cfg.get(k, _ABSENT), want[k]) for k in keys)


def _is_method(cfg):
    return all(_same(cfg.get(k, _ABSENT), v) for k, v in METHOD.items())


def _key(cfg, keys):
    return tuple(json.dumps(cfg.get(k), sort_keys=True, default=str) for k in keys)


def _label(setting):
    """A setting in words, e.g. 'cub, resnet101, ImageNet-pretrained, 448 px, 100 epochs, batch 30 x 4'."""
    pre = {True: "ImageNet-pretrained", False: "from scratch"}.get(setting.get("pretrained"), "pretrained ?")
    parts = [str(setting[k]) for k in ("dataset", "arch") if k in setting] + [pre, f"{setting.get('size')} px"]
    if "epochs" in setting:
        parts.append(f"{setting['epochs']} epochs")
    if "n_classes" in setting:
        parts.append(f"batch {setting['n_classes']} x {setting.get('n_images')}")
    return ", ".join(parts)


def _paper_first(items, paper):
    """Settings sorted with the paper's first, then by label."""
    return sorted(items, key=lambda s: (not all(_same(s.get(k, _ABSENT), v) for k, v in paper.items()), _label(s)))


def _num(v):
    return v if isinstance(v, numbers.Real) and not isinstance(v, bool) else -1


def settings(runs, base=None):
    """The settings found in `runs` (dicts of SETTING_KEYS and the inferred base batch), the paper's first.

    `base` (a dict of any SETTING_KEYS and n_classes/n_images) keeps the matching settings and pins the batch.
    """
    base = dict(base or {})
    unknown = set(base) - set(SETTING_KEYS) - set(BATCH_KEYS)
    if unknown:
        raise ValueError(f"base has unknown keys {sorted(unknown)}; choose from {', '.join(SETTING_KEYS + BATCH_KEYS)}.")
    runs = countable(runs)
    groups = {}
    for cfg in (runs["config"] if not runs.empty else []):
        groups.setdefault(_key(cfg, SETTING_KEYS), []).append(cfg)
    found = []
    for cfgs in groups.values():
        setting = {k: cfgs[0].get(k) for k in SETTING_KEYS}
        if not all(_same(setting[k], v) for k, v in base.items() if k in SETTING_KEYS):
            continue
        batches = {_key(c, BATCH_KEYS): {k: c.get(k) for k in BATCH_KEYS} for c in cfgs}.values()

        def score(batch):
            s = {**setting, **batch}
            rows = [_expected(s, o) for t in TABLES.values() for _, o in t]
            explained = sum(any(_matches(c, w) for w in rows) for c in cfgs)
            paper = all(_same(batch[k], PAPER_SETTING[k]) for k in BATCH_KEYS)
            return explained, paper, _num(batch["n_classes"]) * _num(batch["n_images"]), _num(batch["n_classes"])

        batch = max(batches, key=score)
        batch.update({k: v for k, v in base.items() if k in BATCH_KEYS})
        found.append({**setting, **batch})
    return _paper_first(found, PAPER_SETTING)


# --------------------------------------------------------------------------------------------- statistics
def _stats(values):
    """(mean, sample std or NaN, n) of a list of accuracies."""
    n = len(values)
    if not n:
        return math.nan, math.nan, 0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if n >= 2 else math.nan, n


def _fmt_ours(mean, std, n):
    if not n:
        return MISSING
    return f"{mean:.1f} ± {std:.1f} (n={n})" if n >= 2 else f"{mean:.1f} (n=1)"


def _fmt(v):
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def _fmt_diff(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    v = round(v, 1)
    return f"{0.0 if v == 0 else v:+.1f}"


def _dedupe(members, prefer):
    """One run per seed: of runs sharing a seed, the one in a folder named `prefer` (a run_name), else the first."""
    chosen = {}
    for r in sorted(members, key=lambda r: (prefer not in Path(r["run_dir"]).parts, r["run_dir"])):
        seed = r["config"].get("seed")
        chosen.setdefault(json.dumps(seed) if seed is not None else r["run_dir"], r)
    return sorted(chosen.values(), key=lambda r: r["run_dir"])


def _cell(members, prefer, **head):
    """A cell's numbers and provenance from its runs (rows of `collect`), one run per seed."""
    members = _dedupe(members, prefer)
    values = [_top1(r) for r in members]
    mean, std, n = _stats(values)
    return {**head, "mean": mean, "std": std, "n": n, "values": values,
            "run_dirs": [r["run_dir"] for r in members], "seeds": [r["config"].get("seed") for r in members]}


def _records(runs):
    return [r for _, r in countable(runs).iterrows()]


def _block(records, setting, table):
    """The rows of `table` for one setting: each row's cell, with a note where scaling made it the base row."""
    mine = [r for r in records if _key(r["config"], SETTING_KEYS) == _key(setting, SETTING_KEYS)]
    base_want = _expected(setting, {})
    base_row = next(name for name, o in TABLES[table] if not o)
    cells = []
    for name, overrides in TABLES[table]:
        want = _expected(setting, overrides)
        scaled = {k: want[k] for k in overrides}
        collapsed = bool(overrides) and all(_same(want[k], base_want[k]) for k in ABLATED)
        note = f"same configuration as {base_row} at batch {setting['n_classes']} x {setting['n_images']}" \
            if collapsed else ""
        cells.append(_cell([r for r in mine if _matches(r["config"], want)], run_name(scaled), setting=_label(setting),
                           row=name, paper=PAPER[table][name], note=note, base=not overrides))
    return cells


def ablation_stats(runs, table, base=None):
    """Numbers of one ablation table: a block of rows (the paper's order) per setting.

    Columns: setting, row, mean, std, n, paper, diff, note, base, values, run_dirs, seeds. Blocks: the
    paper's setting whenever it has runs, and every other setting where a row besides the base row has
    runs; with `base`, every setting it selects. With no block, the paper's setting (updated by `base`),
    all rows missing.
    """
    if table not in TABLES:
        raise ValueError(f"table={table!r} is not valid; choose from {', '.join(TABLES)}.")
    records = _records(runs)
    blocks = []
    for setting in settings(runs, base):
        block = _block(records, setting, table)
        is_paper = all(_same(setting.get(k), v) for k, v in PAPER_SETTING.items())
        base_dirs = {d for c in block if c["base"] for d in c["run_dirs"]}
        if base or is_paper or any(set(c["run_dirs"]) - base_dirs for c in block if not c["base"]):
            blocks.append(block)
    if not blocks:
        blocks.append(_block([], {**PAPER_SETTING, **(base or {})}, table))
    df = pd.DataFrame([c for b in blocks for c in b])
    df["diff"] = df["mean"] - df["paper"]
    return df[["setting", "row", "mean", "std", "n", "paper", "diff", "note", "base", "values", "run_dirs", "seeds"]]


def ablation_table(runs, table, base=None):
    """One of Tables 1-5 as shown: setting, row, ours ("mean ± std (n=k)"), paper, diff, note; missing rows kept."""
    s = ablation_stats(runs, table, base)
    return pd.DataFrame({"setting": s["setting"], "row": s["row"],
                         "ours": [_fmt_ours(m, d, n) for m, d, n in zip(s["mean"], s["std"], s["n"])],
                         "paper": s["paper"].map(_fmt), "diff": s["diff"].map(_fmt_diff), "note": s["note"]})


_SOTA_KEYS = ("size", "pretrained")


def sota_stats(runs):
    """Numbers of Tables 6-10: one cell per (block, data set, backbone); every paper cell always present.

    Blocks are (size, pretrained), the paper's 448 px pretrained first (shown even without runs). A cell
    holds the runs with the paper's method at their setting's base batch; if they differ in epochs, those
    with the most epochs. Data sets and backbones beyond the paper's appear in the blocks that have them.
    Columns: setting, dataset, arch, mean, std, n, paper, diff, epochs, values, run_dirs, seeds.
    """
    records = _records(runs)
    base_batch = {_key(s, SETTING_KEYS): s for s in settings(runs)}
    eligible = [r for r in records if _is_method(r["config"])
                and all(_same(r["config"].get(k, _ABSENT), base_batch[_key(r["config"], SETTING_KEYS)][k])
                        for k in BATCH_KEYS)]
    paper_block = {"size": PAPER_SETTING["size"], "pretrained": True}
    blocks = {_key(paper_block, _SOTA_KEYS): paper_block}
    for r in eligible:
        blocks.setdefault(_key(r["config"], _SOTA_KEYS), {k: r["config"].get(k) for k in _SOTA_KEYS})
    blocks = [b for b in _paper_first(list(blocks.values()), paper_block)
              if b is paper_block or any(_key(r["config"], _SOTA_KEYS) == _key(b, _SOTA_KEYS) for r in eligible)]
    cells = []
    for block in blocks:
        here = [r for r in eligible if _key(r["config"], _SOTA_KEYS) == _key(block, _SOTA_KEYS)]
        datasets = list(PAPER_SOTA) + sorted({str(r["config"].get("dataset")) for r in here} - set(PAPER_SOTA))
        archs = list(PAPER_ARCHS) + sorted({str(r["config"].get("arch")) for r in here} - set(PAPER_ARCHS))
        for d in datasets:
            for a in archs:
                members = [r for r in here if str(r["config"].get("dataset")) == d and str(r["config"].get("arch")) == a]
                epochs = max((_num(r["config"].get("epochs")) for r in members), default=None)
                members = [r for r in members if _num(r["config"].get("epochs")) == epochs]
                cells.append(_cell(members, run_name({}), setting=_label(block), dataset=d, arch=a,
                                   paper=PAPER_SOTA.get(d, {}).get(a, math.nan),
                                   epochs=members[0]["config"].get("epochs") if members else None))
    df = pd.DataFrame(cells)
    df["diff"] = df["mean"] - df["paper"]
    return df[["setting", "dataset", "arch", "mean", "std", "n", "paper", "diff", "epochs", "values", "run_dirs",
               "seeds"]]


def sota_table(runs):
    """Tables 6-10 as shown: rows (setting, data set); per backbone: ours, paper, diff. Missing cells kept.

    A backbone column beyond the paper's is NaN in the blocks that do not have it (`blocks` drops it).
    """
    s = sota_stats(runs)
    out = []
    for (setting, dataset), g in s.groupby(["setting", "dataset"], sort=False):
        row = {"setting": setting, "data set": dataset}
        for _, c in g.iterrows():
            row[c["arch"]] = _fmt_ours(c["mean"], c["std"], c["n"])
            row[f"{c['arch']} paper"] = _fmt(c["paper"])
            row[f"{c['arch']} diff"] = _fmt_diff(c["diff"])
        out.append(row)
    return pd.DataFrame(out)


def blocks(table):
    """(setting, rows) pairs of a shown table, without the setting column and the columns empty in that block."""
    for setting, g in table.groupby("setting", sort=False):
        g = g.drop(columns="setting").dropna(axis=1, how="all")
        if "note" in g and not g["note"].astype(bool).any():
            g = g.drop(columns="note")
        yield setting, g.reset_index(drop=True)


# --------------------------------------------------------------------------------------------- provenance
def _rel(path, root):
    try:
        return Path(os.path.relpath(path, root)).as_posix() if root else str(path)
    except ValueError:
        return str(path)


def manifest(sota, ablations, root=None):
    """Which run_dir produced which cell: table, setting, cell, run_dir (relative to `root`), seed, top1.

    `sota` is `sota_stats(...)`, `ablations` a {table: ablation_stats(...)} dict.
    """
    rows = []
    for _, c in sota.iterrows():
        for d, seed, v in zip(c["run_dirs"], c["seeds"], c["values"]):
            rows.append({"table": "Tables 6-10", "setting": c["setting"], "cell": f"{c['dataset']} / {c['arch']}",
                         "run_dir": _rel(d, root), "seed": seed, "top1": _fmt(v)})
    for table, s in ablations.items():
        for _, c in s.iterrows():
            for d, seed, v in zip(c["run_dirs"], c["seeds"], c["values"]):
                rows.append({"table": TABLE_TITLES[table], "setting": c["setting"], "cell": c["row"],
                             "run_dir": _rel(d, root), "seed": seed, "top1": _fmt(v)})
    return pd.DataFrame(rows, columns=["table", "setting", "cell", "run_dir", "seed", "top1"])


def other_runs(runs, used=(), root=None):
    """The runs in no cell, with why: failed/running (and the error), no top1, or a config in no table row."""
    used, rows = set(used), []
    ok = set(countable(runs)["run_dir"]) if not runs.empty else set()
    for _, r in runs.iterrows():
        if r["run_dir"] in used:
            continue
        if r["run_dir"] not in ok:
            why = f"status {r['status']}" if r["status"] != "finished" else "finished without a numeric metrics.top1"
        else:
            why = "finished; in no cell shown (its config matches no row, or a run with its seed was counted)"
        err = r.get("error")
        rows.append({"run_dir": _rel(r["run_dir"], root), "status": r["status"], "why": why,
                     "error": "" if err is None or (isinstance(err, float) and math.isnan(err)) else str(err)})
    return pd.DataFrame(rows, columns=["run_dir", "status", "why", "error"])


# --------------------------------------------------------------------------------------------- plots
def _figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))  # no pyplot: works under any backend, nothing left open


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path, write, mode):
    """Write `path` through `write(file)` atomically: a temp file in the same folder, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _save(fig, path):
    """Save a figure as a PNG (DPI dots per inch), atomically."""
    return _atomic(path, lambda f: fig.savefig(f, format="png", dpi=DPI), "wb")


def _bars(ax, cells, x, order):
    """Ours (mean of the runs, sd error bars) beside the paper's figure, per category of `x`."""
    import seaborn as sns
    y = "top-1 (%)"
    long = [{x: c[x], y: v, "source": "ours"} for c in cells for v in c["values"]]
    long += [{x: c[x], y: c["paper"], "source": "paper"} for c in cells if not math.isnan(c["paper"])]
    df = pd.DataFrame(long, columns=[x, y, "source"])
    if df.empty:
        return
    sns.barplot(df, x=x, y=y, hue="source", order=order, hue_order=["ours", "paper"], palette=["C0", "0.7"],
                errorbar="sd", capsize=0.15, err_kws={"linewidth": 1}, ax=ax)
    ax.set_ylim(max(0.0, df[y].min() - 10), min(100.0, df[y].max() + 3))
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("")
    ax.get_legend().remove()


def _legend(fig, ax):
    """One legend for the figure, right of the last axes."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="upper right", frameon=False)


def ablation_plot(stats, table, path):
    """Bar chart of one setting's block of `ablation_stats`: ours (mean, sd bars) and the paper, per row."""
    cells = stats.to_dict("records")
    fig = _figure(max(5.5, 0.6 * len(cells) + 2.0), 3.0)
    ax = fig.subplots()
    _bars(ax, cells, "row", [c["row"] for c in cells])
    ax.set_title(f"{TABLE_TITLES[table]}\n{cells[0]['setting']}", fontsize=8)
    _legend(fig, ax)
    fig.subplots_adjust(left=0.14, right=1 - 0.75 / fig.get_figwidth(), top=0.84, bottom=0.3)
    return _save(fig, path)


def sota_plot(stats, path):
    """Bar charts of one block of `sota_stats`, one panel per backbone: ours and the paper, per data set."""
    archs = list(dict.fromkeys(stats["arch"]))
    fig = _figure(2.6 * len(archs) + 0.4, 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(archs), sharey=True))
    for ax, arch in zip(axes, archs):
        cells = stats[stats["arch"] == arch].to_dict("records")
        _bars(ax, cells, "dataset", [c["dataset"] for c in cells])
        ax.set_title(arch, fontsize=8)
    fig.suptitle(f"Tables 6-10: API-Net top-1, {stats['setting'].iloc[0]}", fontsize=8)
    _legend(fig, axes[-1])
    fig.subplots_adjust(left=0.07, right=1 - 0.75 / fig.get_figwidth(), top=0.82, bottom=0.25, wspace=0.08)
    return _save(fig, path)


def _history(members):
    rows = []
    for label, r in members:
        for h in r["history"]:
            if isinstance(h, dict) and "epoch" in h:
                rows.append({"run": label, "run_dir": r["run_dir"], **h})
    return pd.DataFrame(rows)


def curves_plot(members, path, title=""):
    """Training curves of (label, run) pairs: train/valid loss and top-1 per epoch; a label's line is the
    mean over its runs with a +-1 sd band. Returns None when no run has a history."""
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator
    df = _history(members)
    panels = [m for m in ("train_loss", "valid_loss", "top1") if m in df and df[m].notna().any()]
    if not panels:
        return None
    labels = [lab for lab in dict.fromkeys(lab for lab, _ in members) if lab in set(df["run"])]
    colors = dict(zip(labels, sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))))
    fig = _figure(2.6 * len(panels) + 1.6, 2.5)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, m in zip(axes, panels):
        stats = df.groupby(["run", "epoch"])[m].agg(["mean", "std"]).reset_index()
        for lab in labels:
            g = stats[stats["run"] == lab].dropna(subset=["mean"])
            ax.plot(g["epoch"], g["mean"], color=colors[lab], label=lab, linewidth=1, marker="." if len(g) < 3 else None)
            sd = g["std"].fillna(0)
            ax.fill_between(g["epoch"], g["mean"] - sd, g["mean"] + sd, color=colors[lab], alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel({"top1": "top-1 (%)"}.get(m, m.replace("_", " ")), fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.06, right=1 - 1.5 / fig.get_figwidth(), top=0.85, bottom=0.18, wspace=0.35)
    return _save(fig, path)


def diagnostics_frame(runs, root=None):
    """One row per (run, epoch) of the pair-mining diagnostics in the runs' metrics.json (issue 6)."""
    rows = []
    for _, r in runs.iterrows():
        for d in r.get("diagnostics") or []:
            dist = lambda key: (d.get(key) or {}).get("mean")
            rows.append(dict(run=_rel(r["run_dir"], root) if root else str(r["run_dir"]), epoch=d["epoch"],
                             rank_active=d.get("rank_active"), intra_distance=dist("intra_distance"),
                             inter_distance=dist("inter_distance"), gate_self=d.get("gate_self"),
                             gate_other=d.get("gate_other"), no_intra_partner=d.get("no_intra_partner")))
    return pd.DataFrame(rows)


def diagnostics_plot(frame, path):
    """Per epoch and run: how often the rank hinge is active, the intra/inter pair distances, and the
    feature-weighted gates for self vs other. A collapsed run shows as a rank term stuck at 0."""
    panels = [("rank_active", "rank hinge active (fraction)"), ("intra_distance", "intra-pair distance"),
              ("inter_distance", "inter-pair distance"), ("gate_self", "gate, self (solid) / other (dashed)")]
    fig = _figure(2.4 * len(panels) + 1.6, 2.5)
    axes = fig.subplots(1, len(panels))
    for ax, (col, label) in zip(axes, panels):
        for k, (run, g) in enumerate(frame.groupby("run", sort=True)):
            color = f"C{k % 10}"
            ax.plot(g["epoch"], g[col], color=color, linewidth=1, label=run)
            if col == "gate_self":
                ax.plot(g["epoch"], g["gate_other"], color=color, linewidth=1, linestyle="--")
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel(label, fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1].legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.subplots_adjust(left=0.05, right=1 - 1.5 / fig.get_figwidth(), top=0.92, bottom=0.18, wspace=0.4)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- documents
def project_path(path):
    """`path` as given when absolute, else relative to the repository root (the folder with pyproject.toml)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    here = Path.cwd()
    root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)
    return root / path


def _shown(path):
    """A path for the report's text: relative to the repository root when inside it, else absolute."""
    path = Path(path).resolve()
    root = project_path(".").resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _md_cell(v):
    s = MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(df):
    if df.empty:
        return "_(none)_"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _inline_html(text):
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _markdown(doc):
    out = []
    for kind, *args in doc:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind == "p":
            out.append(args[0])
        elif kind == "table":
            out.append(_md_table(args[0]))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
    return "\n\n".join(out) + "\n"


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
        "img{max-width:100%;display:block;margin:.5em 0 1.5em}code{background:#f3f3f3;padding:0 3px}")


def _html(doc, title):
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for kind, *args in doc:
        if kind == "h":
            out.append(f"<h{args[0]}>{_inline_html(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(args[0])}</p>")
        elif kind == "table":
            out.append(args[0].to_html(index=False, escape=True, border=0, na_rep=MISSING) if not args[0].empty
                       else "<p><em>(none)</em></p>")
        elif kind == "img":
            out.append(f'<img src="{html.escape(args[0])}" alt="{html.escape(args[1])}">')
    return "\n".join(out) + "\n</body></html>\n"


def _write_text(path, text):
    """Write a UTF-8 text file atomically."""
    return _atomic(path, lambda f: f.write(text), "w")


@dataclass
class Report:
    """Everything `render` shows: the runs, the tables (as shown and as numbers), provenance, written files."""
    runs: pd.DataFrame
    sota: pd.DataFrame
    sota_stats: pd.DataFrame
    ablations: dict
    ablation_stats: dict
    manifest: pd.DataFrame
    other_runs: pd.DataFrame
    skipped: list
    figures: list = field(default_factory=list)
    readme: Path = None
    html: Path = None


def build(root="reports/runs"):
    """Collect the runs under `root` and compute every table and the manifest (writes nothing)."""
    runs = collect(root)
    s_stats = sota_stats(runs)
    a_stats = {t: ablation_stats(runs, t) for t in TABLES}
    man = manifest(s_stats, a_stats, root)
    used = {d for c in [s_stats, *a_stats.values()] for ds in c["run_dirs"] for d in ds}
    return Report(runs=runs, sota=sota_table(runs), sota_stats=s_stats,
                  ablations={t: ablation_table(runs, t) for t in TABLES}, ablation_stats=a_stats, manifest=man,
                  other_runs=other_runs(runs, used, root), skipped=list(runs.attrs.get("skipped", [])))


def _header(rep, root, out):
    status = rep.runs["status"].value_counts().to_dict() if not rep.runs.empty else {}
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "none"
    commits = pd.Series([c for c in rep.runs.get("git_commit", []) if c]).value_counts()
    commits = ", ".join(f"`{c}` ({n})" for c, n in commits.items()) or "not recorded"
    return [
        f"Produced by `apikit.report.render(root=\"{_shown(root)}\", out=\"{_shown(out)}\")`: run "
        f"`papermill notebooks/report.ipynb /tmp/report.ipynb -p runs_root {_shown(root)} -p out_dir {_shown(out)}` "
        f"or `python -m apikit.report --root {_shown(root)} --out {_shown(out)}` to regenerate it. "
        f"Nothing here is typed by hand: every figure comes from the `metrics.json` of a run_dir under "
        f"`{_shown(root)}` (see the manifest).",
        f"Runs found: {len(rep.runs)} ({counts}); unreadable metrics.json skipped: {len(rep.skipped)}. "
        f"Code commits of the runs: {commits}.",
        f"Top-1 accuracy (%) on the test split. *ours* is the mean over runs (one per seed) ± the sample "
        f"standard deviation (ddof 1) when n ≥ 2; *paper* is the AAAI 2020 paper's figure; *diff* = ours − paper; "
        f"{MISSING} = no finished run. A setting is data set, backbone, pretraining, image size, epochs and "
        f"the base batch N_cl x N_im (Table 5's rows are scaled to it by `scale_class_sizes`). Only finished "
        f"runs count; the others are listed at the end.",
    ]


def _figures(rep, figs, doc, slug, what, bars, members):
    """Append a block's bar chart and training curves to `doc` (and their paths to `rep.figures`)."""
    rep.figures.append(bars(figs / f"{slug}.png"))
    doc.append(("img", f"figures/{slug}.png", what))
    p = curves_plot(members, figs / f"{slug}-curves.png", f"Training curves, {what}")
    if p:
        rep.figures.append(p)
        doc.append(("img", f"figures/{slug}-curves.png", f"training curves, {what}"))


def render(root="reports/runs", out="reports", title="API-Net reproduction: results"):
    """Write `out/README.md`, `out/report.html` and `out/figures/*.png` from the runs under `root`.

    Every write is atomic and nothing else in `out` is deleted. A block gets a bar chart and training
    curves when it has runs (an ablation block: in two rows or more). Returns the `Report`.
    """
    root, out = Path(root), Path(out)
    rep = build(root)
    figs, by_dir = out / "figures", {r["run_dir"]: r for _, r in rep.runs.iterrows()}
    doc = [("h", 1, title), *[("p", t) for t in _header(rep, root, out)]]

    doc.append(("h", 2, "Tables 6-10: API-Net against the paper, per data set and backbone"))
    doc.append(("p", "The paper's method (api, mutual mlp, gate pair, rank_weight 1, intra/inter similar) at each "
                     "setting's base batch; one table per image size and pretraining. Cells: ours, then the paper's "
                     "figure and the difference per backbone."))
    for setting, block in blocks(rep.sota):
        doc += [("h", 3, setting), ("table", block)]
        stats = rep.sota_stats[rep.sota_stats["setting"] == setting]
        if stats["n"].any():
            shown = stats[stats.groupby("dataset")["n"].transform("sum").gt(0) & stats["arch"].isin(block.columns)]
            members = [(f"{d} / {a}", by_dir[x]) for d, a, ds in zip(stats["dataset"], stats["arch"], stats["run_dirs"])
                       for x in ds]
            _figures(rep, figs, doc, f"sota-{_setting_slug(setting)}", f"Tables 6-10, {setting}",
                     lambda p: sota_plot(shown, p), members)

    doc.append(("h", 2, "Tables 1-5: ablations"))
    doc.append(("p", "Each row is the paper's method with that row's change, in the named setting. The paper's "
                     "setting is always shown; another setting is shown in a table where it ran a row besides the "
                     "base row."))
    for table in TABLES:
        doc.append(("h", 3, TABLE_TITLES[table]))
        for setting, block in blocks(rep.ablations[table]):
            doc += [("p", f"*{setting}*"), ("table", block)]
            stats = rep.ablation_stats[table]
            stats = stats[stats["setting"] == setting]
            if (stats["n"] > 0).sum() >= 2:
                members = [(row, by_dir[x]) for row, ds in zip(stats["row"], stats["run_dirs"]) for x in ds]
                _figures(rep, figs, doc, f"{table}-{_setting_slug(setting)}",
                         f"{TABLE_TITLES[table]}, {setting}", lambda p: ablation_plot(stats, table, p), members)

    diag = diagnostics_frame(rep.runs[rep.runs["status"] == "finished"], root) if "diagnostics" in rep.runs else pd.DataFrame()
    if not diag.empty:
        doc.append(("h", 2, "Pair-mining diagnostics"))
        doc.append(("p", "Per epoch of each API-Net run: the fraction of pairs whose score-ranking hinge (Eq. 10) is "
                         "active, the mean intra- and inter-pair feature distances, and the feature-weighted mean "
                         "gate of the self and other features. A run whose rank term is never active has stopped "
                         "learning from its pairs."))
        rep.figures.append(diagnostics_plot(diag, figs / "diagnostics.png"))
        doc.append(("img", "figures/diagnostics.png", "pair-mining diagnostics"))
        last = diag.sort_values("epoch").groupby("run").tail(1).round(3)
        doc.append(("table", last.reset_index(drop=True)))

    doc.append(("h", 2, "Manifest: which run_dir produced which cell"))
    doc.append(("p", f"run_dir is relative to `{_shown(root)}`. A cell counts one run per seed."))
    doc.append(("table", rep.manifest))
    doc.append(("h", 2, "Runs not in the tables"))
    doc.append(("table", rep.other_runs))
    if rep.skipped:
        doc.append(("h", 2, "Unreadable metrics.json (skipped)"))
        doc.append(("table", pd.DataFrame({"file": [_rel(p, root) for p in rep.skipped]})))

    rep.readme = _write_text(out / "README.md", _markdown(doc))
    rep.html = _write_text(out / "report.html", _html(doc, title))
    return rep


def _setting_slug(label):
    short = label.replace("ImageNet-pretrained", "pt").replace("from scratch", "scratch").replace(" epochs", "ep")
    return re.sub(r"[^A-Za-z0-9.]+", "-", short.replace(" px", "px").replace("batch ", "b")).strip("-").lower()


def main(argv=None):
    """`python -m apikit.report --root reports/runs --out reports`: write the report."""
    p = argparse.ArgumentParser(prog="python -m apikit.report", description=main.__doc__)
    p.add_argument("--root", default="reports/runs", help="folder searched (recursively) for run_dirs")
    p.add_argument("--out", default="reports", help="folder that receives README.md, report.html, figures/")
    p.add_argument("--title", default="API-Net reproduction: results", help="first heading of the report")
    a = p.parse_args(argv)
    rep = render(project_path(a.root), project_path(a.out), title=a.title)
    print(f"wrote {rep.readme}, {rep.html} and {len(rep.figures)} figures from {len(rep.runs)} runs")


if __name__ == "__main__":
    main()
