"""Statistics, cells and tables: Tables 1-5 (ablations, per setting) and Tables 6-10 (data set x backbone).

- A cell counts one run per seed: of runs with the same seed, the one in a folder named for the row
  (`apikit.runs.run_name`, e.g. `api-net`), else the first by path.
- *ours* is the mean of the runs' final-epoch top-1 (the headline) +- the sample sd (ddof 1) when n >= 2;
  beside a paper figure also the best epoch's top-1, as the authors' code selects (`metrics.best_top1`).
- A paper figure and a diff (ours - paper) appear only in the paper's setting (`match.is_paper_setting`),
  and not beside a cell whose runs loaded other weights (`match.run_marks`).
- What carries across settings is the effect: for each row of Tables 1-5, its *gain* over the table's
  reference row (`apikit.paper.REFERENCE`), paired by seed: gain_s = row_s - reference_s over the seeds both
  cells have, shown as the mean and its 95% t interval [lo, hi] (mean -+ t_{0.975, n-1} * sd / sqrt(n)) with n,
  beside the paper's gain (`PAPER_GAIN`): "±" is only ever a spread (the sd). One decimal, as the paper. A cell
  without runs shows MISSING.
"""
import json
import math
from pathlib import Path

import pandas as pd

from ..data.sources import content_of
from ..paper import BEST_EPOCH as BEST, PAPER, PAPER_ARCHS, PAPER_GAIN, PAPER_SOTA, REFERENCE, TABLES
from ..runs import run_name
from ..stats import mean_sd, t_interval
from .collect import countable, top1_of
from .document import MISSING
from .match import (ABLATED, ABLATION_SETTING, BATCH_KEYS, GROUP_KEYS, dataset_words, describe, expected_row,
                    is_method, is_paper_setting, matches_row, run_marks, same, setting_key, settings)

__all__ = ["MISSING", "SOTA_TABLES", "SOTA_PAPER_BLOCK", "mean_sd", "t_interval", "paired_gain", "format_ours",
           "format_gain", "ablation_stats", "ablation_table", "sota_stats", "sota_table", "blocks"]

# Tables 6-10 are CUB, Aircraft, Cars, Dogs, NABirds: the order of PAPER_SOTA.
SOTA_TABLES = {d: f"Table {6 + i}" for i, d in enumerate(PAPER_SOTA)}
SOTA_PAPER_BLOCK = "the paper's setting: Section 4's recipe for each data set"


# --------------------------------------------------------------------------------------------- statistics
def paired_gain(row, reference):
    """The gain of a cell over its reference cell, paired by seed: {seed: top-1} dicts -> (mean, half-width of
    the 95% t interval, n, [(seed, gain)]) over the seeds both have, in the reference's order."""
    pairs = [(s, row[s] - reference[s]) for s in reference if s in row]
    mean, half, n = t_interval([g for _, g in pairs])
    return mean, half, n, pairs


def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_ours(mean, sd, n, marks=()):
    """'88.7 ± 1.0 (n=2)', '40.0 (n=1)' or MISSING; then the cell's marks in brackets, e.g. ' [bf16]'."""
    if not n:
        return MISSING
    text = f"{mean:.1f} ± {sd:.1f} (n={n})" if n >= 2 else f"{mean:.1f} (n=1)"
    return text + (f" [{'; '.join(marks)}]" if marks else "")


def format_gain(mean, half, n):
    """'+3.2 [+2.1, +4.3] (n=3)': the mean gain and its 95% interval; '+3.2 (n=1, no interval)' or MISSING."""
    if not n:
        return MISSING
    if n < 2:
        return f"{_fmt_signed(mean)} (n=1, no interval)"
    return f"{_fmt_signed(mean)} [{_fmt_signed(mean - half)}, {_fmt_signed(mean + half)}] (n={n})"


def _fmt(v):
    return MISSING if _missing(v) else f"{v:.1f}"


def _fmt_signed(v):
    if _missing(v):
        return MISSING
    v = round(v, 1)
    return f"{0.0 if v == 0 else v:+.1f}"


# --------------------------------------------------------------------------------------------- cells
def _one_per_seed(members, prefer):
    """One run per seed: of runs sharing a seed, the one in a folder named `prefer` (a run_name), else the first."""
    chosen = {}
    for r in sorted(members, key=lambda r: (prefer not in Path(r["run_dir"]).parts, r["run_dir"])):
        seed = r["config"].get("seed")
        chosen.setdefault(json.dumps(seed) if seed is not None else r["run_dir"], r)
    return sorted(chosen.values(), key=lambda r: r["run_dir"])


def _cell(members, prefer, paper, **head):
    """A cell's numbers and provenance from its runs (rows of `collect`), one run per seed.

    `paper` is the paper's figure for the cell when its setting is the paper's, else NaN; a cell whose runs
    carry marks (in the paper's setting: other weights loaded than its config names) gets no paper figure.
    """
    members = _one_per_seed(members, prefer)
    values = [top1_of(r) for r in members]
    best = [b for b in (top1_of(r, "best_top1") for r in members) if b is not None]
    marks = sorted({m for r in members for m in run_marks(r)})
    mean, sd, n = mean_sd(values)
    b_mean, b_sd, b_n = mean_sd(best)
    paper = math.nan if marks else paper
    return {**head, "mean": mean, "std": sd, "n": n, "best": b_mean, "best_std": b_sd, "best_n": b_n,
            "paper": paper, "diff": mean - paper if n else math.nan, "marks": marks, "values": values,
            "run_dirs": [r["run_dir"] for r in members], "seeds": [r["config"].get("seed") for r in members]}


def _records(runs):
    return [r for _, r in countable(runs).iterrows()]


def _seed_key(seed, run_dir):
    return json.dumps(seed) if seed is not None else run_dir


# --------------------------------------------------------------------------------------------- Tables 1-5
_ABLATION_COLUMNS = ["setting", "paper_setting", "row", "mean", "std", "n", "best", "best_std", "best_n", "paper",
                     "diff", "gain", "gain_ci", "gain_n", "gains", "paper_gain", "reference", "base", "compared", "note", "marks",
                     "values", "run_dirs", "seeds"]


def _block(records, setting, table):
    """The rows of `table` for one setting: each row's cell, its paired gain over the reference row, and a
    note where scaling the batch made the row the base configuration."""
    mine = [r for r in records if setting_key(r["config"], GROUP_KEYS) == setting_key(setting, GROUP_KEYS)]
    paper_setting, base_want = is_paper_setting(setting), expected_row(setting, {})
    base_row = next(name for name, o in TABLES[table] if not o)
    cells = []
    for name, overrides in TABLES[table]:
        want = expected_row(setting, overrides)
        collapsed = bool(overrides) and all(same(want[k], base_want[k]) for k in ABLATED)
        note = f"same configuration as {base_row} at batch {setting['n_classes']} x {setting['n_images']}" \
            if collapsed else ""
        cells.append(_cell([r for r in mine if matches_row(r["config"], want)], run_name({k: want[k] for k in overrides}),
                           PAPER[table][name] if paper_setting else math.nan, setting=describe(setting),
                           paper_setting=paper_setting, row=name, note=note, base=not overrides,
                           reference=name == REFERENCE[table], paper_gain=PAPER_GAIN[table].get(name, math.nan)))
    by_seed = lambda c: {_seed_key(s, d): v for s, d, v in zip(c["seeds"], c["run_dirs"], c["values"])}
    ref = by_seed(next(c for c in cells if c["reference"]))
    base_dirs = {d for c in cells if c["base"] for d in c["run_dirs"]}
    compared = any(set(c["run_dirs"]) - base_dirs for c in cells if not c["base"])
    for c in cells:
        c["compared"] = compared
        mean, half, n, pairs = paired_gain(by_seed(c), ref) if not c["reference"] else (math.nan, math.nan, 0, [])
        c.update(gain=mean, gain_ci=half, gain_n=n, gains=pairs)
    return cells


def ablation_stats(runs, table, base=None):
    """Numbers of one ablation table: a block of rows (the paper's order) per setting.

    Columns: setting, paper_setting, row, mean, std, n, best, best_std, best_n, paper, diff (NaN outside the
    paper's setting), gain, gain_ci (95% half-width), gain_n, gains ([(seed, gain)]), paper_gain, reference,
    base, note, marks, values, run_dirs, seeds. Blocks: the paper's setting whenever it has runs, and every
    other setting where a row besides the base row has runs of its own; with `base`, every setting it
    selects. With no block, the paper's setting (updated by `base`), every row missing.
    """
    if table not in TABLES:
        raise ValueError(f"table={table!r} is not valid; choose from {', '.join(TABLES)}.")
    records, found = _records(runs), []
    for setting in settings(runs, base):
        block = _block(records, setting, table)
        if base or block[0]["compared"] or (is_paper_setting(setting) and any(c["n"] for c in block)):
            found.append(block)
    if not found:
        found.append(_block([], {**ABLATION_SETTING, **(base or {})}, table))
    return pd.DataFrame([c for b in found for c in b], columns=_ABLATION_COLUMNS)


def gain_header(table):
    return f"gain over {REFERENCE[table]} (95% CI)"


def ablation_table(runs, table, base=None):
    """One of Tables 1-5 as shown: setting, row, ours (final epoch), and in the paper's setting the best
    epoch, paper and diff; then the paired gain over the reference row, the paper's gain, note."""
    s = ablation_stats(runs, table, base)
    paper = s["paper_setting"].astype(bool)
    shown = lambda values: [v if p else None for v, p in zip(values, paper)]
    return pd.DataFrame({
        "setting": s["setting"], "row": s["row"],
        "ours": [format_ours(m, d, n, k) for m, d, n, k in zip(s["mean"], s["std"], s["n"], s["marks"])],
        BEST: shown(format_ours(m, d, n) for m, d, n in zip(s["best"], s["best_std"], s["best_n"])),
        "paper": shown(s["paper"].map(_fmt)), "diff": shown(s["diff"].map(_fmt_signed)),
        gain_header(table): ["reference" if r else format_gain(m, h, n)
                             for r, m, h, n in zip(s["reference"], s["gain"], s["gain_ci"], s["gain_n"])],
        "paper gain": ["reference" if r else _fmt_signed(g) for r, g in zip(s["reference"], s["paper_gain"])],
        "note": s["note"]})


# --------------------------------------------------------------------------------------------- Tables 6-10
_SOTA_COLUMNS = ["setting", "paper_setting", "dataset", "arch", "mean", "std", "n", "best", "best_std", "best_n",
                 "paper", "diff", "marks", "values", "run_dirs", "seeds"]


def sota_stats(runs):
    """Numbers of Tables 6-10: one cell per (block, data set, backbone).

    A cell holds the runs with the paper's method at their setting's base batch. The first block is the
    paper's setting (each data set at `recipe(dataset)`, the paper's backbones): all 15 paper cells, run or
    not, with the paper's figure. Every other setting (the keys besides data set and backbone) is a block
    of the cells that have runs, without paper figures.
    """
    records, base_batch = _records(runs), {setting_key(s): s for s in settings(runs)}
    eligible = [r for r in records if is_method(r["config"])
                and all(same(r["config"].get(k), base_batch[setting_key(r["config"])][k]) for k in BATCH_KEYS)]
    setting_of = lambda r: {**{k: r["config"].get(k) for k in GROUP_KEYS + BATCH_KEYS}, **content_of(r["config"])}
    paper_runs = [r for r in eligible if is_paper_setting(setting_of(r), sota=True)]
    cells = [_cell([r for r in paper_runs if (r["config"]["dataset"], r["config"]["arch"]) == (d, a)], run_name({}),
                   PAPER_SOTA[d][a], setting=SOTA_PAPER_BLOCK, paper_setting=True, dataset=d, arch=a)
             for d in PAPER_SOTA for a in PAPER_ARCHS]
    others = {}
    for r in eligible:
        if not any(r is p for p in paper_runs):
            label = describe({k: v for k, v in setting_of(r).items() if k not in ("dataset", "arch")})
            data = dataset_words(r["config"])  # two image folders are two data sets
            others.setdefault(label, {}).setdefault((data, str(r["config"]["arch"])), []).append(r)
    for label in sorted(others):
        for (d, a), members in sorted(others[label].items()):
            cells.append(_cell(members, run_name({}), math.nan, setting=label, paper_setting=False, dataset=d, arch=a))
    return pd.DataFrame(cells, columns=_SOTA_COLUMNS)


def sota_table(runs):
    """Tables 6-10 as shown: rows (setting, data set) that have runs; per backbone with runs in the block:
    ours, and in the paper's setting also the best epoch, the paper's figure and the diff."""
    s, out = sota_stats(runs), []
    for setting, g in s.groupby("setting", sort=False):
        run = g[g["n"] > 0]
        archs = list(dict.fromkeys(run["arch"]))
        for dataset in dict.fromkeys(run["dataset"]):
            row = {"setting": setting, "data set": f"{dataset} ({SOTA_TABLES[dataset]})" if dataset in SOTA_TABLES
                   else dataset}
            for a in archs:
                c = g[(g["dataset"] == dataset) & (g["arch"] == a)]
                c = c.iloc[0] if len(c) else None
                row[a] = MISSING if c is None else format_ours(c["mean"], c["std"], c["n"], c["marks"])
                if g["paper_setting"].iloc[0]:
                    row[f"{a} {BEST}"] = format_ours(c["best"], c["best_std"], c["best_n"])
                    row[f"{a} paper"], row[f"{a} diff"] = _fmt(c["paper"]), _fmt_signed(c["diff"])
            out.append(row)
    return pd.DataFrame(out, columns=None if out else ["setting", "data set"])


def blocks(table):
    """(setting, rows) pairs of a shown table, without the setting column and the columns empty in that block."""
    for setting, g in table.groupby("setting", sort=False):
        g = g.drop(columns="setting").dropna(axis=1, how="all")
        if "note" in g and not g["note"].astype(bool).any():
            g = g.drop(columns="note")
        yield setting, g.reset_index(drop=True)
