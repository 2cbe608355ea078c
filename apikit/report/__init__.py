"""The report: every run_dir's metrics.json -> the paper's tables (1-5, 6-10), plots and a manifest.

`render(runs_root, out_dir)` writes `out_dir/README.md`, `out_dir/report.html` and `out_dir/figures/*.png`, and
lists them in `out_dir/.apikit-report.json`; it writes only where nothing but an earlier report is in the way, and
removes that report's figures it does not draw again (`outdir`). Nothing else in `out_dir` is touched.
`python -m apikit.report --runs-root reports/runs --out-dir reports` and `notebooks/report.ipynb` both call it, so
both check their parameters alike.

The report compares like with like: the paper's absolute figures (and a diff) stand only beside cells
trained in the paper's setting for that table (`match`); everywhere else it shows the effect of each row
of Tables 1-5, its gain over the table's reference row paired by seed, beside the paper's gain (`tables`).
It leads with what was run and lists what was not, with the command that runs it (`provenance`).

Modules: `collect` (metrics.json -> rows), `match` (settings, rows), `tables` (statistics, cells, tables),
`provenance` (manifest, runs in no cell, not run), `plots` (its plots), `fig3` (Fig. 3 and the part hits, from
visualize.ipynb's viz.json), `document` (markdown, HTML), `outdir` (the report's folder).
"""
import argparse
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..notebook_errors import debugging, one_line_errors
from ..schema import Param, ParameterError, add_arguments
from ..paper import REFERENCE, TABLE_TITLES, TABLES
from ..runs import atomic_write, resolve, shown
from .collect import collect, countable, diagnostics_frame
from .document import MISSING, displays, to_html, to_markdown
from .plots import BAND_CAPTION, diagnostics_plot, gains_plot, mean_curves_plot, sota_plot
from .match import describe, differences, is_paper_setting, key_words, plural, settings
from .outdir import DIAGNOSTICS, LEGEND, NotAReportFolder, check_out_dir, figure_stem, record
from .provenance import manifest, not_run, other_runs
from .tables import (SOTA_PAPER_BLOCK, SOTA_TABLES, ablation_stats, ablation_table, blocks, format_gain, mean_sd, paired_gain,
                     sota_stats, sota_table, t_interval)
from .fig3 import fig3_hint, find_viz, read_viz, visualize_section

__all__ = ["collect", "countable", "settings", "ablation_stats", "ablation_table", "sota_stats", "sota_table",
           "blocks", "manifest", "other_runs", "not_run", "mean_sd", "t_interval", "paired_gain", "format_gain",
           "gains_plot", "sota_plot", "mean_curves_plot", "diagnostics_frame", "diagnostics_plot", "setting_intro",
           "build", "check_render", "render", "main", "Report", "MISSING", "NotAReportFolder",
           "REPORT_PARAMS", "REPORT_DEFAULTS"]

_ROOT = "relative: from the project root"
# The report's parameters, once: render's defaults, the CLI's flags and report.ipynb's parameters cell (a test holds
# it equal to these) read them.
REPORT_PARAMS = (
    Param("runs_root", "reports/runs", str, f"folder searched recursively for run_dirs (every metrics.json); {_ROOT}"),
    Param("out_dir", "reports", str, f"receives README.md, report.html and figures/*.png ({_ROOT}): a new folder or an "
          "earlier report's; nothing else in it is touched"),
    Param("title", "API-Net reproduction: results", str, "first heading of README.md and report.html"),
    Param("intro", None, str, "the report's first lines (markdown, paragraphs split at blank lines); None: derived "
          "from the settings found", optional=True),
    Param("visualize", None, str, "out_dir of visualize.ipynb (its viz.json): show Fig. 3 and the part hits; None: "
          "every visualize folder under runs_root (api_run/visualize)", optional=True),
)
REPORT_DEFAULTS = {p.name: p.default for p in REPORT_PARAMS}


@dataclass
class Report:
    """Everything `render` shows: the runs, the tables (as shown and as numbers), provenance, written files."""
    runs: pd.DataFrame
    settings: list
    sota: pd.DataFrame
    sota_stats: pd.DataFrame
    ablations: dict
    ablation_stats: dict
    manifest: pd.DataFrame
    other_runs: pd.DataFrame
    not_run: pd.DataFrame
    skipped: list
    problems: list = field(default_factory=list)  # {file, reason}: run files skipped, and lock files flagged
    doc: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    out_dir: Path = None
    readme: Path = None
    html: Path = None

    def displays(self):
        """The rendered report as IPython display objects, for a notebook: `display(*rep.displays())`."""
        return displays(self.doc, self.out_dir)


def build(runs_root="reports/runs"):
    """Collect the runs under `runs_root` and compute every table and the manifest (writes nothing)."""
    runs = collect(runs_root)
    s_stats = sota_stats(runs)
    a_stats = {t: ablation_stats(runs, t) for t in TABLES}
    used = {d for c in [s_stats, *a_stats.values()] for ds in c["run_dirs"] for d in ds}
    return Report(runs=runs, settings=settings(runs), sota=sota_table(runs), sota_stats=s_stats,
                  ablations={t: ablation_table(runs, t) for t in TABLES}, ablation_stats=a_stats,
                  manifest=manifest(s_stats, a_stats, runs_root), other_runs=other_runs(runs, used, runs_root),
                  not_run=not_run(s_stats, a_stats), skipped=list(runs.attrs.get("skipped", [])),
                  problems=list(runs.attrs.get("problems", [])))


def setting_intro(rep):
    """The report's first lines, from the settings found: what was run, how far each setting is from the
    paper's (the keys that differ from Section 4's recipe), and how to read the gains."""
    n = len(countable(rep.runs))
    if not rep.settings:
        return ["**What was run:** no finished run yet. The section *Not run yet* at the end lists the commands "
                "that fill the paper's tables."]
    lines = [f"**What was run:** {n} finished run{'s' if n != 1 else ''} in {len(rep.settings)} "
             f"setting{'s' if len(rep.settings) != 1 else ''}:"]
    for s in rep.settings:
        diff = differences(s)
        far = ("the paper's setting (Section 4)" + ("" if is_paper_setting(s) else
                                                    f", for {SOTA_TABLES[s['dataset']]} ({s['dataset']})")
               if not diff else f"differs from the paper's setting in {plural(len(diff), 'key')}: "
               + ", ".join(f"{key_words(k)} {v!r} (paper: {p!r})" for k, v, p in diff))
        lines.append(f"- *{describe(s)}*: {far}.")
    lines[1:] = ["\n".join(lines[1:])]
    paper = any(is_paper_setting(s) for s in rep.settings) or (rep.sota_stats["paper_setting"] & (rep.sota_stats["n"] > 0)).any()
    lines.append(
        "**How to read it:** " + ("" if paper else "none of these is the paper's setting, so no absolute figure of "
                                  "the paper is shown as a comparison: ours can be far below it and still be right. ")
        + "What carries across settings is the effect: each row of Tables 1-5 as a *gain* over its table's "
          f"reference row ({REFERENCE['table1']} in Table 1, the full method elsewhere), in top-1 points, paired by "
          "seed (same seed, same data order), as the mean and its 95% confidence interval [lo, hi] (t over seeds), "
          "beside the paper's gain for that row. An interval that excludes 0 is an effect the seeds agree on; "
          "'n=1, no interval' is one seed, a single draw.")
    return lines


def _legend(root, out, visualize=None):
    """The blocks after the intro: how to regenerate the report (commands in a code block), and how to read it."""
    viz = ("", "", "") if visualize is None else (f", visualize=\"{shown(visualize)}\"",
                                                 f" -p visualize {shown(visualize)}", f" --visualize {shown(visualize)}")
    return [
        ("p", f"Produced by `apikit.report.render(runs_root=\"{shown(root)}\", out_dir=\"{shown(out)}\"{viz[0]})`. "
              f"{LEGEND} `{shown(root)}` (see the manifest). "
              "To regenerate it, either of:"),
        ("code", f"papermill --log-output notebooks/report.ipynb /tmp/report.ipynb -p runs_root {shown(root)} "
                 f"-p out_dir {shown(out)}{viz[1]}\n"
                 f"python -m apikit.report --runs-root {shown(root)} --out-dir {shown(out)}{viz[2]}"),
        ("p", "Top-1 accuracy (%) on the test split. *ours* is the final epoch's top-1 (the headline), the mean over "
              "runs (one per seed) ± the sample sd (ddof 1) when n ≥ 2. *paper*, *diff* (ours − paper) and the *best "
              "epoch, as the authors' code selects* appear only beside cells in the paper's setting. A gain is its mean "
              "and its 95% interval [lo, hi] over n paired seeds. Brackets after a figure mark what its setting's label "
              "leaves out: another precision than fp32, or other weights loaded than torchvision's IMAGENET1K_V1. "
              f"{MISSING} = no finished run."),
    ]


def _plots(rep, doc, figs, slug, what, plot, members):
    """Append a block's plot (if it has something to draw) and the training curves of `members` ((label, run)
    pairs; none: no curves) to `doc`; returns the curves' file, or None. The band's caption only where a label
    has two runs or more."""
    banded = max(Counter(label for label, _ in members).values(), default=0) >= 2
    curves = mean_curves_plot(members, figs / f"{slug}-curves.png", f"Training curves, {what}") if members else None
    for path, alt, caption in ((plot(figs / f"{slug}.png"), what, None),
                               (curves, f"training curves, {what}", f"Training curves: {BAND_CAPTION}." if banded else None)):
        if path:
            rep.figures.append(path)
            doc.append(("img", f"figures/{path.name}", alt))
            if caption:
                doc.append(("p", f"*{caption}*"))
    return curves


def _document(rep, root, out, title, intro, visualize=None, folders=()):
    """The report's blocks: intro, then what was run (Tables 1-5, Tables 6-10, Fig. 3 and the part hits of the
    visualize `folders`, or where they would come from, diagnostics), then what was not. `visualize`: the folder the
    caller named, for the commands that regenerate the report."""
    figs, by_dir = out / "figures", {r["run_dir"]: r for _, r in rep.runs.iterrows()}
    doc = [("h", 1, title), *[("p", t) for t in intro], *_legend(root, out, visualize)]
    curves_shown = set()  # run_dirs whose training curves a block of Tables 1-5 drew
    ran = {t: s[s["compared"].astype(bool)] for t, s in rep.ablation_stats.items()}
    if any(not s.empty for s in ran.values()):
        doc.append(("h", 2, "Tables 1-5: ablations"))
    for table, stats in ran.items():
        if stats.empty:
            continue
        doc.append(("h", 3, TABLE_TITLES[table]))
        for setting, block in blocks(rep.ablations[table]):
            cells = stats[stats["setting"] == setting]
            if cells.empty:
                continue
            paper = bool(cells["paper_setting"].iloc[0])
            doc += [("p", f"*{setting}*" + (" — the paper's setting" if paper else "")), ("table", block)]
            members = [(row, by_dir[x]) for row, ds in zip(cells["row"], cells["run_dirs"]) for x in ds]
            if _plots(rep, doc, figs, figure_stem(table, setting, paper), f"{TABLE_TITLES[table]}, {setting}",
                      lambda p, c=cells, t=table: gains_plot(c, t, p), members):
                curves_shown.update(run["run_dir"] for _, run in members)
    if (rep.sota_stats["n"] > 0).any():
        doc.append(("h", 2, "Tables 6-10: API-Net per data set and backbone"))
        doc.append(("p", "The paper's method (api, mutual mlp, gate pair, rank_weight 1, intra/inter similar) at each "
                         "setting's base batch. The paper's figures stand only in the paper's setting."))
    for setting, block in blocks(rep.sota):
        cells = rep.sota_stats[rep.sota_stats["setting"] == setting]
        doc += [("h", 3, setting), ("table", block)]
        members = [(f"{d} / {a}", by_dir[x]) for d, a, ds in zip(cells["dataset"], cells["arch"], cells["run_dirs"])
                   for x in ds]
        if members and all(run["run_dir"] in curves_shown for _, run in members):  # the same curves, not twice
            doc.append(("p", "*These runs are rows of Tables 1-5 above, where their training curves are.*"))
            members = []
        _plots(rep, doc, figs, figure_stem("sota", setting, setting == SOTA_PAPER_BLOCK), f"Tables 6-10, {setting}",
               lambda p, c=cells: sota_plot(c, p), members)
    for folder in folders:
        section, copies = visualize_section(folder, out)
        doc += section
        rep.figures += copies
    if not folders:
        doc += fig3_hint(rep.ablation_stats["table1"], root)
    finished = rep.runs[rep.runs["status"] == "finished"] if not rep.runs.empty else rep.runs
    diag = diagnostics_frame(finished, root) if "diagnostics" in rep.runs else pd.DataFrame()
    if not diag.empty:
        doc.append(("h", 2, "Pair-mining diagnostics"))
        doc.append(("p", "Per epoch of each API-Net run: the fraction of pairs whose score-ranking hinge (Eq. 10) is "
                         "active, the mean intra- and inter-pair feature distances, and the feature-weighted mean "
                         "gate of the self and other features. A run whose rank term is never active has stopped "
                         "learning from its pairs."))
        path = diagnostics_plot(diag, figs / DIAGNOSTICS)
        if path:
            rep.figures.append(path)
            doc.append(("img", f"figures/{DIAGNOSTICS}", "pair-mining diagnostics"))
        last = diag.sort_values("epoch", kind="stable").groupby("run").tail(1).round(3)
        # runs in their natural order (seed-2 before seed-10), whatever order the files were read in
        natural = lambda run: [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(run))]
        last = last.loc[sorted(last.index, key=lambda i: natural(last.at[i, "run"]))]
        doc.append(("table", last.reset_index(drop=True)))
    doc.append(("h", 2, "Not run yet"))
    if rep.not_run.empty:
        doc.append(("p", "Nothing: every cell of the paper's tables has runs in the paper's setting."))
    else:  # a code block: a command never wraps in the middle
        doc.append(("p", "The paper's cells that no run in the paper's setting fills, and the commands that run them "
                         "(on a GPU):"))
        doc.append(("code", "\n".join(f"# {r['to fill']}\n{r['command']}" for r in rep.not_run.to_dict("records"))))
    doc.append(("h", 2, "Manifest: which run_dir produced which cell"))
    doc.append(("p", f"run_dir is relative to `{shown(root)}`. A cell counts one run per seed. One table per "
                     "setting, named above it."))
    for setting, block in blocks(rep.manifest):
        doc += [("p", f"*{setting}*"), ("table", block)]
    if rep.manifest.empty:
        doc.append(("table", rep.manifest))
    doc.append(("h", 2, "Runs not in the tables"))
    doc.append(("table", rep.other_runs))
    if rep.problems:
        doc.append(("h", 2, "Run files skipped or flagged"))
        doc.append(("p", "An unreadable metrics.json leaves its run out of every table; a lock file apikit did not "
                         "write is only noted. Each line says why."))
        doc.append(("table", pd.DataFrame({"file": [shown(x["file"], root) for x in rep.problems],
                                           "reason": [x["reason"] for x in rep.problems]})))
    return doc


def _found_viz(rep, root):
    """The visualize folders under `root` whose viz.json reads; one that does not is listed in `rep.problems`."""
    found = []
    for folder in find_viz(root):
        try:
            read_viz(folder)
            found.append(folder)
        except ValueError as e:
            rep.problems.append(dict(file=str(folder / "viz.json"), reason=f"{e} It is not shown."))
    return found


def _check_path(name, value):
    if not (isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip())):
        raise ParameterError(f"{name}={value!r}: expected a non-empty string or path.")
    return resolve(value)


def check_render(runs_root, out_dir, title, intro, visualize):
    """`render`'s parameters, checked before any work (nothing is written): (the runs root, out_dir and visualize
    folder resolved, what an earlier report wrote into out_dir); an error naming the parameter otherwise."""
    root, out = _check_path("runs_root", runs_root), _check_path("out_dir", out_dir)
    if visualize is not None:
        visualize = _check_path("visualize", visualize)
        read_viz(visualize)  # a folder without viz.json is named before any work
    if not isinstance(title, str) or not title.strip():
        raise ParameterError(f"title={title!r}: expected a non-empty string.")
    if intro is not None and not isinstance(intro, str):
        raise ParameterError(f"intro={intro!r}: expected None (derived from the runs) or a string.")
    if not root.is_dir():
        raise FileNotFoundError(f"runs_root={str(runs_root)!r}: no such folder ({root}); point it at the folder "
                                "that holds the run_dirs, e.g. reports/runs.")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir={str(out_dir)!r}: {out} exists and is not a folder.")
    return root, out, visualize, check_out_dir(out, out_dir)


def render(runs_root=REPORT_DEFAULTS["runs_root"], out_dir=REPORT_DEFAULTS["out_dir"],
           title=REPORT_DEFAULTS["title"], intro=REPORT_DEFAULTS["intro"], visualize=REPORT_DEFAULTS["visualize"]):
    """Write `out_dir/README.md`, `out_dir/report.html` and `out_dir/figures/*.png` from the runs under
    `runs_root`; returns the `Report`.

    Relative paths are from the project root (`apikit.runs.resolve`), wherever the kernel starts. The
    parameters are checked before any work. `intro` (text, paragraphs split at blank lines) replaces the
    first lines, which by default say what was run and how far it is from the paper's setting
    (`setting_intro`). `visualize`, the out_dir of visualize.ipynb, adds Fig. 3 and the part hits with their
    numbers (its viz.json; its figures copied into out_dir/figures unless it is inside out_dir); None: those of
    every visualize folder under `runs_root` (`<api_run>/visualize`), or the command that draws them. Every write
    is atomic. `out_dir` must be new, empty or an earlier report's (NotAReportFolder names anything else in the
    way, before any work); the earlier report's figures that this one does not draw are removed, nothing else in
    `out_dir` is touched.
    """
    root, out, visualize, before = check_render(runs_root, out_dir, title, intro, visualize)
    print(f"runs from {root}\nreport into {out}")
    rep = build(root)
    rep.out_dir = out
    lines = setting_intro(rep) if not intro or not intro.strip() else [p.strip() for p in intro.split("\n\n") if p.strip()]
    rep.doc = _document(rep, root, out, title, lines, visualize, [visualize] if visualize else _found_viz(rep, root))
    out.mkdir(parents=True, exist_ok=True)
    rep.readme = atomic_write(out / "README.md", to_markdown(rep.doc))
    rep.html = atomic_write(out / "report.html", to_html(rep.doc, title))
    record(out, before, [rep.readme, rep.html, *rep.figures])
    return rep


def main(argv=None):
    """`python -m apikit.report --runs-root reports/runs --out-dir reports`: write the report."""
    p = add_arguments(argparse.ArgumentParser(prog="python -m apikit.report", description=main.__doc__),
                      params=REPORT_PARAMS)
    a = p.parse_args(argv)
    if not debugging():  # a parameter error is argparse's one line and exit status 2, as for an unknown option
        try:
            check_render(a.runs_root, a.out_dir, a.title, a.intro, a.visualize)
        except (ValueError, OSError) as e:
            p.error(str(e))
    with one_line_errors(p.prog):  # anything later: one line too (--debug: the whole traceback)
        rep = render(a.runs_root, a.out_dir, title=a.title, intro=a.intro, visualize=a.visualize)
    print(f"wrote {rep.readme}, {rep.html} and {len(rep.figures)} figures from {len(rep.runs)} runs")
