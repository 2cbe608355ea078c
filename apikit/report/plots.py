"""The report's plots, each on its own Figure outside pyplot and written by `apikit.figure.save_figure`. A plot
draws only what has data: no empty panel, no axis range from missing values; a plot with nothing to show is not
written (None)."""
import math
import textwrap

import numpy as np
import pandas as pd

from ..figure import new_figure, save_figure
from ..run_plots import epoch_axis, loss_axis
from ..paper import TABLE_TITLES

__all__ = ["gains_plot", "sota_plot", "mean_curves_plot", "diagnostics_plot", "BAND_CAPTION"]

OURS, BEST, PAPER = "C0", "C1", "0.45"
BAND_CAPTION = "line: mean over seeds; shaded band: ± 1 sample sd over seeds (with 2 or more seeds)"


def _wrap(text, width=90):
    """A long title on lines of at most `width` characters, so that it fits its figure."""
    return "\n".join(textwrap.wrap(text, max(20, int(width))))


def _small(ax):
    ax.tick_params(labelsize=8)
    ax.xaxis.label.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)


def gains_plot(block, table, path):
    """One setting's block of `ablation_stats`: each row's gain over the reference row (paired by seed, mean
    and 95% t interval; a hollow dot for n=1, no interval) beside the paper's gain. None without any gain."""
    cells = [c for c in block.to_dict("records") if not c["reference"] and c["gain_n"] > 0]
    if not cells:
        return None
    fig = new_figure(6.0, 0.35 * len(cells) + 1.4)
    ax = fig.subplots()
    y = np.arange(len(cells))[::-1]
    for yi, c in zip(y, cells):
        half = c["gain_ci"] if c["gain_n"] >= 2 else None
        ax.errorbar(c["gain"], yi, xerr=half, fmt="o", color=OURS, capsize=3, markersize=5,
                    markerfacecolor=OURS if half is not None else "white")
        if not math.isnan(c["paper_gain"]):
            ax.plot(c["paper_gain"], yi, "D", color=PAPER, markersize=5)
    ax.axvline(0, color="0.6", linewidth=0.8)
    ax.set_yticks(y, [f"{c['row']} (n={c['gain_n']})" for c in cells])
    ax.set_ylim(-0.7, len(cells) - 0.3)
    ax.set_xlabel(f"top-1 gain over {block['row'][block['reference'].astype(bool)].iloc[0]} (points)")
    ax.set_title(_wrap(f"{TABLE_TITLES[table]}: {cells[0]['setting']}", fig.get_figwidth() * 13), fontsize=7)
    _small(ax)
    from matplotlib.lines import Line2D
    n = [c["gain_n"] for c in cells]  # a legend entry only for what is drawn: no interval's entry at n=1
    handles = [Line2D([], [], marker="o", color=OURS, label="ours: mean gain, 95% CI (t over seeds)")] * (max(n) >= 2)
    handles += [Line2D([], [], marker="o", color=OURS, markerfacecolor="white", linestyle="",
                       label="ours: n=1, no interval")] * (min(n) < 2)
    handles += [Line2D([], [], marker="D", color=PAPER, linestyle="", label="paper's gain")] * any(
        not math.isnan(c["paper_gain"]) for c in cells)
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.subplots_adjust(left=0.3, right=0.97, top=1 - 0.55 / fig.get_figheight(), bottom=0.75 / fig.get_figheight())
    return save_figure(fig, path)


def sota_plot(block, path):
    """One block of `sota_stats`, one panel per backbone with runs: ours (final epoch, mean and sd bar) per
    data set, and in the paper's setting the best epoch and the paper's figure. None with fewer than two cells
    run: one bar compares nothing, and its table says it all."""
    cells = block[block["n"] > 0]
    if len(cells) < 2:
        return None
    archs = list(dict.fromkeys(cells["arch"]))
    # A data set's label can be a whole setting ("synthetic (4 species, 10 training + 4 test ...)"): wrapped to its
    # bar's share of the panel (about 15 characters an inch at the ticks' size), and the figure made taller for it.
    per_bar = max(8, int(2.4 * 15 / max(1, cells.groupby("arch").size().max())))
    ticks = {d: "\n".join(textwrap.wrap(str(d), per_bar)) for d in cells["dataset"]}
    extra = 0.14 * (max(t.count("\n") for t in ticks.values()))
    fig = new_figure(2.4 * len(archs) + 1.2, 2.8 + extra)
    axes = np.atleast_1d(fig.subplots(1, len(archs), sharey=True))
    paper = bool(block["paper_setting"].iloc[0])
    for ax, arch in zip(axes, archs):
        g = cells[cells["arch"] == arch]
        x = np.arange(len(g))
        sd = g["std"].where(g["n"] >= 2)  # no error bar where one seed gives no sd
        spread = ", ± 1 sd over seeds" if (cells["n"] >= 2).any() else ""  # no spread in the legend at n=1
        ax.bar(x, g["mean"], yerr=None if sd.isna().all() else sd.fillna(0).where(g["n"] >= 2, 0).to_numpy(),
               color=OURS, width=0.5, capsize=3 if sd.notna().any() else 0, label=f"ours (final epoch{spread})")
        if paper:
            ax.plot(x, g["best"], "^", color=BEST, label="ours, best epoch (as the authors' code selects)")
            ax.plot(x, g["paper"], "D", color=PAPER, label="paper")
        ax.set_xticks(x, [ticks[d] for d in g["dataset"]])
        ax.set_title(arch, fontsize=8)
        _small(ax)
    values = pd.concat([cells["mean"] - cells["std"].fillna(0), cells["mean"] + cells["std"].fillna(0),
                        *([cells["best"], cells["paper"]] if paper else [])]).dropna()
    axes[0].set_ylim(0.0, min(100.0, values.max() + 5))  # bars start at 0: their lengths compare
    axes[0].set_ylabel("top-1 (%)")
    title = _wrap(f"Tables 6-10: API-Net top-1, {block['setting'].iloc[0]}", fig.get_figwidth() * 15)
    fig.suptitle(title, fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    # Room above the panels for the wrapped suptitle (its lines are counted), so the panel titles do not overlap it.
    lines = title.count("\n") + 1
    fig.subplots_adjust(left=0.15, right=0.98, top=1 - (0.3 + 0.17 * lines) / fig.get_figheight(),
                        bottom=(0.84 + extra) / fig.get_figheight(), wspace=0.08)
    return save_figure(fig, path)


def _history(members):
    rows = []
    for label, r in members:
        for h in r["history"]:
            if isinstance(h, dict) and "epoch" in h:
                rows.append({"run": label, "run_dir": r["run_dir"], **h})
    return pd.DataFrame(rows)


def mean_curves_plot(members, path, title=""):
    """Training curves of (label, run) pairs: train/valid loss and top-1 per epoch. A label's line is the mean
    over its runs (a marker at every epoch) and its band +-1 sample sd over them (`BAND_CAPTION`). None when
    no run has a history."""
    from matplotlib.patches import Patch
    df = _history(members)
    panels = [m for m in ("train_loss", "valid_loss", "top1") if m in df and df[m].notna().any()]
    if not panels:
        return None
    labels = list(dict.fromkeys(lab for lab, _ in members if lab in set(df["run"])))
    fig = new_figure(2.6 * len(panels) + 1.8, 2.5)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    banded = False
    for ax, m in zip(axes, panels):
        stats = df.groupby(["run", "epoch"])[m].agg(["mean", "std", "count"]).reset_index()
        for k, lab in enumerate(labels):
            g = stats[stats["run"] == lab].dropna(subset=["mean"])
            color = f"C{k % 10}"
            ax.plot(g["epoch"], g["mean"], color=color, label=lab, linewidth=1, marker="o", markersize=3)
            if (g["count"] >= 2).any():
                sd = g["std"].fillna(0)
                ax.fill_between(g["epoch"], g["mean"] - sd, g["mean"] + sd, color=color, alpha=0.2, linewidth=0)
                banded = True
        epoch_axis(ax, df["epoch"])
        if m == "top1":
            ax.set_ylabel("top-1 (%)")
        else:  # a large first epoch would flatten the rest
            loss_axis(ax, df[m].tolist(), m.replace("_", " "))
        _small(ax)
    handles, names = axes[-1].get_legend_handles_labels()
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3))
        names.append("± 1 sd over seeds")
    axes[-1].legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle(_wrap(title, 140), fontsize=7)
    fig.subplots_adjust(left=0.06, right=1 - 1.7 / fig.get_figwidth(), top=0.85, bottom=0.18, wspace=0.35)
    return save_figure(fig, path)


def diagnostics_plot(frame, path):
    """Per epoch and run: how often the rank hinge is active, the intra/inter pair distances, and the
    feature-weighted gates for self vs other. A collapsed run shows as a rank term stuck at 0."""
    panels = [("rank_active", "rank hinge active (fraction)"), ("intra_distance", "intra-pair distance"),
              ("inter_distance", "inter-pair distance"), ("gate_self", "gate, self (solid) / other (dashed)")]
    panels = [(c, label) for c, label in panels if c in frame and frame[c].notna().any()]
    if frame.empty or not panels:
        return None
    fig = new_figure(2.4 * len(panels) + 1.6, 2.5)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (col, label) in zip(axes, panels):
        for k, (run, g) in enumerate(frame.groupby("run", sort=True)):
            color = f"C{k % 10}"
            ax.plot(g["epoch"], g[col], color=color, linewidth=1, marker="o", markersize=3, label=run)
            if col == "gate_self":
                ax.plot(g["epoch"], g["gate_other"], color=color, linewidth=1, linestyle="--", marker="o",
                        markersize=3)
        epoch_axis(ax, frame["epoch"])
        ax.set_ylabel(label)
        _small(ax)
    axes[-1].legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.subplots_adjust(left=0.05, right=1 - 1.5 / fig.get_figwidth(), top=0.92, bottom=0.18, wspace=0.4)
    return save_figure(fig, path)
