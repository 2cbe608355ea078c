"""`apikit.report.render`, `python -m apikit.report` and `notebooks/report.ipynb`: the files they write."""
import re
from pathlib import Path

import pytest
from PIL import Image

import report_fixtures as F
from apikit import report
from apikit.report import provenance
from apikit.paper import PAPER, PAPER_SOTA, TABLE_TITLES
from apikit.report.document import inline_html

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "report.ipynb"


def tables(text):
    """The header rows of every markdown table in `text`, as lists of column names."""
    return [[c.strip() for c in line.strip("|").split("|")] for line, nxt in zip(text.splitlines(), text.splitlines()[1:])
            if line.startswith("|") and nxt.startswith("|---")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A report of the demo's runs only: a setting that is not the paper's."""
    tmp = tmp_path_factory.mktemp("demo")
    F.make_runs(tmp / "runs", only="demo/")
    return report.render(tmp / "runs", tmp / "out", title="Demo")


def test_non_paper_setting_shows_no_paper_figure_or_diff(demo):
    text = demo.readme.read_text()
    body = text.split("## Not run yet")[0]
    for fig in [v for t in PAPER.values() for v in t.values()] + [v for d in PAPER_SOTA.values() for v in d.values()]:
        assert f"{fig:.1f}" not in body, fig
    for header in tables(body):
        assert not {"paper", "diff", "best epoch, as the authors' code selects"} & set(header), header
        assert not any(c.endswith((" paper", " diff")) for c in header)
    # ours (mean ± sd), the paired gain with its 95% interval [lo, hi], the paper's gain
    assert "| API-Net | 40.5 ± 1.8 (n=3) | +4.3 [-2.0, +10.7] (n=3) | +3.2 |" in body
    assert "| Baseline | 35.4 ± 1.9 (n=4) | reference | reference |" in body


def test_demo_report_says_its_setting_first_and_lists_what_was_not_run(demo):
    text = demo.readme.read_text()
    first = text.split("## ")[0]
    assert "**What was run:** 9 finished runs in 1 setting:" in first
    assert "differs from the paper's setting in 9 keys: dataset 'synthetic' (paper: 'cub'), arch 'resnet18'" in first
    assert "no absolute figure of the paper is shown" in first and "95% confidence interval" in first
    assert text.index("### Table 1: Baseline vs API-Net") < text.index("## Not run yet")
    assert "### Table 2" not in text  # nothing of Table 2 was run: no table of dashes
    # What was not run: commands in one code block, one a line (none wraps mid-command), under what they fill.
    todo = text.split("## Not run yet")[1].split("```bash\n")[1].split("\n```")[0].splitlines()
    slurm = provenance.SLURM_EXAMPLE
    assert todo == ["# Tables 6-10 at the paper's recipe: " + "; ".join(
                        f"Table {6 + k} ({d}): resnet50, resnet101, densenet161" for k, d in
                        enumerate(("cub", "aircraft", "cars", "dogs", "nabirds"))),
                    "make tables PRECISION=fp32", f"make tables PRECISION=fp32 {slurm}",
                    "# Tables 1-5 at the paper's setting (CUB, ResNet-101): every ablation row",
                    "make ablations PRECISION=fp32", f"make ablations PRECISION=fp32 {slurm}"]
    assert "<pre><code># Tables 6-10 at the paper&#x27;s recipe: Table 6 (cub)" in demo.html.read_text() or \
        "<pre><code># Tables 6-10 at the paper's recipe: Table 6 (cub)" in demo.html.read_text()
    # Plots: the gains (with intervals) of Table 1 and 5, curves; no empty panel or plot of missing data.
    names = sorted(p.name for p in demo.figures)
    assert len([n for n in names if n.startswith("table1-") and not n.endswith("curves.png")]) == 1
    assert not any(n.startswith("sota-paper") for n in names)


def test_the_manifest_names_each_setting_once_and_the_runs_left_out_say_why(tmp_path):
    """The manifest: a table per setting, its label above it, not in every row. A run in no cell names the run with
    its seed counted instead, or the nearest row and how its config differs from it."""
    F.make_runs(tmp_path / "runs", only="demo/")
    F.write(tmp_path / "runs", "demo/again/seed-0", F.metrics_json({**F.DEMO_CONFIG, "seed": 0}, top1=41.0))
    F.write(tmp_path / "runs", "demo/half-rank/seed-0",
            F.metrics_json({**F.DEMO_CONFIG, "seed": 0, "rank_weight": 0.5}, top1=41.0))
    text = report.render(tmp_path / "runs", tmp_path / "out").readme.read_text()
    manifest = text.split("## Manifest: which run_dir produced which cell")[1].split("\n## ")[0]
    labels = [line.strip("*") for line in manifest.splitlines() if line.startswith("*") and line.endswith("*")]
    assert len(labels) == len(set(labels)) == 2  # Tables 1-5's setting, and Tables 6-10's block of it
    rows = [line for line in manifest.splitlines() if line.startswith("| ")]
    assert len(rows) > 2 * 3 and not any(lab in row for lab in labels for row in rows)
    assert {tuple(h) for h in tables(manifest)} == {("table", "cell", "run_dir", "seed", "top1")}
    left_out = text.split("## Runs not in the tables")[1]
    assert ("| demo/again/seed-0 | finished | finished; a run with its seed (0) and configuration was counted "
            "instead: demo/api-net/seed-0 (a cell counts one run per seed) |") in left_out
    assert ("| demo/half-rank/seed-0 | finished | finished; its config matches no row: the nearest, Table 1: Baseline "
            "vs API-Net, row API-Net, has rank_weight 1.0 (this run: 0.5) |") in left_out


def test_the_intro_tells_a_generated_sets_species_from_the_classes_per_batch(tmp_path):
    """The demo's set has 12 species; a batch holds 8 of them (n_classes, N_cl): the report never says both alike."""
    demo_set = dict(n_classes=12, n_train=40, n_test=200, size=128, seed=0)
    F.write(tmp_path / "runs", "api-net/seed-0",
            F.metrics_json({**F.DEMO_CONFIG, "synthetic": demo_set, "n_classes": 8, "n_images": 4}, top1=58.0))
    first = report.render(tmp_path / "runs", tmp_path / "out").readme.read_text().split("## ")[0]
    assert ("synthetic (12 species, 40 training + 200 test images per species, 128 px, seed 0), resnet18, from scratch, "
            "64 px from 72, 2 epochs, sgd lr 0.01 wd 0.0005, batch 8 classes x 4 images, fp32") in first
    assert "n_classes (N_cl: classes per batch) 8 (paper: 30)" in first and "n_classes=12" not in first


def test_intro_replaces_the_first_lines(tmp_path):
    F.make_runs(tmp_path / "runs", only="demo/api-net")
    rep = report.render(tmp_path / "runs", tmp_path / "out", title="T", intro="Our CPU demo.\n\nSecond *line*.")
    text = rep.readme.read_text()
    assert text.startswith("# T\n\nOur CPU demo.\n\nSecond *line*.\n\n") and "What was run" not in text
    assert "<p>Second <em>line</em>.</p>" in rep.html.read_text()


def test_render_checks_its_parameters_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs_root="):
        report.render(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "runs").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="out_dir="):
        report.render(tmp_path / "runs", tmp_path / "file")
    with pytest.raises(ValueError, match="title="):
        report.render(tmp_path / "runs", tmp_path / "out", title=" ")
    with pytest.raises(ValueError, match="runs_root="):
        report.render("", tmp_path / "out")
    with pytest.raises(ValueError, match="intro="):
        report.render(tmp_path / "runs", tmp_path / "out", intro=3)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".git").exists()


def test_the_command_line_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("APIKIT_DEBUG", "0")
    (tmp_path / "runs").mkdir()
    for args, line in (
            (["--title", " "], "python -m apikit.report: error: title=' ': expected a non-empty string."),
            (["--out-dir", str(ROOT)], f"python -m apikit.report: error: out_dir={str(ROOT)!r} is {ROOT}, a "
                                       "folder of the project itself (or above it), not a report folder: the report "
                                       "writes README.md, report.html and figures/ into it; choose another out_dir (a "
                                       "new folder, e.g. reports/mine).")):
        with pytest.raises(SystemExit) as e:
            report.main(["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), *args])
        assert e.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == line  # after argparse's usage
    with pytest.raises(report.NotAReportFolder):  # --debug: the exception itself, with its traceback
        report.main(["--runs-root", str(tmp_path / "runs"), "--out-dir", str(ROOT), "--debug"])


def test_report_notebook_and_command_line_share_the_reports_parameters():
    """report.ipynb's parameters cell and `python -m apikit.report`'s flags: the names, defaults, types and help of
    report.REPORT_PARAMS, in order; render's defaults are theirs."""
    import inspect
    import papermill as pm
    nb = pm.inspect_notebook(str(ROOT / "notebooks" / "report.ipynb"))
    assert list(nb) == [p.name for p in report.REPORT_PARAMS]
    for p in report.REPORT_PARAMS:
        assert eval(nb[p.name]["default"]) == p.default and nb[p.name]["help"] == p.help, p.name
        assert nb[p.name]["inferred_type_name"] == p.annotation.strip('"'), p.name
    assert {k: v.default for k, v in inspect.signature(report.render).parameters.items()} == report.REPORT_DEFAULTS
    import argparse
    from apikit.schema import add_arguments
    ap = add_arguments(argparse.ArgumentParser(), params=report.REPORT_PARAMS)
    assert vars(ap.parse_args([])) == report.REPORT_DEFAULTS
    assert vars(ap.parse_args(["--intro", "Hi", "--visualize", "v"])) == {**report.REPORT_DEFAULTS, "intro": "Hi",
                                                                           "visualize": "v"}


def test_render_with_no_runs_lists_the_commands(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    rep = report.render(tmp_path / "runs", tmp_path / "out", title="Empty")
    text = rep.readme.read_text()
    assert "no finished run yet" in text and "## Tables" not in text
    assert "Table 6 (cub): resnet50, resnet101, densenet161; Table 7" in text and "\nmake tables PRECISION=fp32\n" in text
    assert rep.figures == [] and rep.html.is_file()
    assert capsys.readouterr().out == f"runs from {tmp_path / 'runs'}\nreport into {tmp_path / 'out'}\n"


def test_relative_paths_are_from_the_project_root(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(ROOT / "no-such-runs"))):
        report.render("no-such-runs", str(tmp_path / "out"))
    report.main(["--runs-root", str(runs), "--out-dir", str(tmp_path / "cli"), "--title", "CLI"])
    assert (tmp_path / "cli" / "README.md").read_text().startswith("# CLI\n")
    assert "wrote" in capsys.readouterr().out


def test_html_renders_emphasis_and_code():
    assert inline_html("*synthetic, resnet18* and **bold** `a*b*` 30 x 4 <x>") == \
        "<em>synthetic, resnet18</em> and <strong>bold</strong> <code>a*b*</code> 30 x 4 &lt;x&gt;"
    assert inline_html("N_cl * N_im") == "N_cl * N_im"


def test_one_epoch_curves_have_markers_integer_ticks_and_a_singular_label(tmp_path):
    data = F.metrics_json({**F.DEMO_CONFIG, "epochs": 1, "seed": 0}, top1=40.0, hist=F.history(40.0, 1))
    F.write(tmp_path / "runs", "one/api-net/seed-0", data)
    runs = report.collect(tmp_path / "runs")
    assert "1 epoch," in report.sota_table(runs)["setting"].iloc[0]
    from apikit.report import plots
    captured = {}
    monkey = pytest.MonkeyPatch()
    monkey.setattr(plots, "save_figure", lambda fig, path: captured.setdefault("fig", fig) and path)
    try:
        report.mean_curves_plot([("API-Net", runs.iloc[0])], tmp_path / "c.png")
    finally:
        monkey.undo()
    for ax in captured["fig"].axes:
        line = ax.get_lines()[0]
        assert line.get_marker() == "o" and list(line.get_xdata()) == [0]
        assert all(float(t).is_integer() for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1])


def test_pair_mining_diagnostics_are_plotted_and_tabled(tmp_path):
    diag = [dict(epoch=e, rank_active=0.5 - 0.2 * e, no_intra_partner=0.0, gate_self=0.61 + 0.01 * e,
                 gate_other=0.55, intra_distance=dict(mean=2.0 + e), inter_distance=dict(mean=4.0 + e),
                 top_inter_class_pairs=[]) for e in range(2)]
    data = F.metrics_json({**F.DEMO_CONFIG, "seed": 0}, top1=40.0)
    data["diagnostics"] = diag
    F.write(tmp_path / "runs", "demo/api-net/seed-0", data)
    frame = report.diagnostics_frame(report.collect(tmp_path / "runs"))
    assert frame["rank_active"].tolist() == [0.5, 0.3] and frame["inter_distance"].tolist() == [4.0, 5.0]
    rep = report.render(tmp_path / "runs", tmp_path / "out", title="Diagnostics")
    text = rep.readme.read_text()
    assert "## Pair-mining diagnostics" in text and "figures/diagnostics.png" in text
    assert (tmp_path / "out" / "figures" / "diagnostics.png").stat().st_size > 0
    # The table shows each run's last epoch: rank_active 0.3, gate_self 0.62.
    assert re.search(r"\| demo/api-net/seed-0 \| 1 \| 0\.3 \| 3\.0 \| 5\.0 \| 0\.62 \| 0\.55 \| 0\.0 \|", text)


def test_the_diagnostics_table_lists_runs_in_their_natural_order(tmp_path):
    """One row per run, seed-2 before seed-10, whatever order the sort of the epochs left them in."""
    diag = [dict(epoch=e, rank_active=0.5, no_intra_partner=0.0, gate_self=0.6, gate_other=0.5,
                 intra_distance=dict(mean=2.0), inter_distance=dict(mean=4.0), top_inter_class_pairs=[]) for e in (1, 2)]
    for seed in (10, 2, 7, 0):
        data = F.metrics_json({**F.DEMO_CONFIG, "seed": seed}, top1=40.0)
        data["diagnostics"] = diag
        F.write(tmp_path / "runs", f"demo/api-net/seed-{seed}", data)
    text = report.render(tmp_path / "runs", tmp_path / "out", title="Diagnostics").readme.read_text()
    table = text.split("## Pair-mining diagnostics")[1].split("\n## ")[0]
    assert re.findall(r"\| demo/api-net/seed-(\d+) \| 2 \|", table) == ["0", "2", "7", "10"]


# ------------------------------------------------------------------------------------------------ notebook
def test_notebook_parameters():
    """The template itself is checked with the others in tests/test_notebooks.py."""
    import papermill
    params = papermill.inspect_notebook(str(NOTEBOOK))
    assert set(params) == {"runs_root", "out_dir", "title", "intro", "visualize"} and all(p["help"] for p in params.values())


@pytest.fixture(scope="module")
def notebook_out(tmp_path_factory, python3_kernel):
    """Execute notebooks/report.ipynb with papermill on the fixture runs; returns (out_dir, executed notebook)."""
    import papermill
    tmp = tmp_path_factory.mktemp("notebook")
    runs, out = tmp / "runs", tmp / "out"
    F.make_runs(runs)
    (out / "figures").mkdir(parents=True)
    (out / "keep.md").write_text("not the report's")
    (out / "figures" / "old.png").write_bytes(b"not the report's")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLBACKEND", "Agg")
        nb = papermill.execute_notebook(str(NOTEBOOK), str(tmp / "executed.ipynb"), kernel_name=python3_kernel,
                                        parameters=dict(runs_root=str(runs), out_dir=str(out)), progress_bar=False,
                                        cwd=str(tmp))
    return out, nb


def test_notebook_writes_the_report_with_the_runs_numbers(notebook_out):
    out, nb = notebook_out
    text = (out / "README.md").read_text()
    assert "| cub (Table 6) | 87.6 ± 0.6 (n=2) | 88.4 (n=1) | 87.7 | -0.1 | 88.7 ± 1.0 (n=2) | 89.2 ± 0.5 (n=2) | 88.6 | +0.1 |" \
        in text
    assert "| Baseline | 84.7 ± 0.8 (n=2) | 84.5 (n=1) | 85.4 | -0.7 | reference | reference |" in text
    assert "| Sum | 87.3 (n=1) | — | 88.5 | -1.2 | -0.7 (n=1, no interval) | -0.1 |" in text
    for table in ("table1", "table2", "table3_gate", "table5_classes", "table5_images"):
        assert f"### {TABLE_TITLES[table]}" in text
    assert "| sota/cub-resnet50/seed-1 | 1 | 88.0 |" in text  # the manifest
    assert F.FAILED[-1] in text and F.CORRUPT in text  # the failed run's error, the skipped file
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    html = [o["data"]["text/html"] for o in shown if "text/html" in o.get("data", {})]
    assert any("<td>84.7 ± 0.8 (n=2)</td>" in h for h in html) and not any("<th></th>" in h for h in html)
    assert sum("image/png" in o.get("data", {}) for o in shown) >= 6


def test_notebook_writes_valid_images_and_html_and_touches_nothing_else(notebook_out):
    out, _ = notebook_out
    text = (out / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "figures/table1-paper.png" in links and "figures/sota-paper.png" in links and len(links) >= 6
    for link in links:
        with Image.open(out / link) as im:
            im.verify()
            assert im.format == "PNG"
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "http" not in html.split("<body>")[0]
    assert set(re.findall(r'<img src="([^"]+)"', html)) == set(links)
    assert "<td>84.7 ± 0.8 (n=2)</td>" in html and "<em>ours</em>" in html and "*ours*" not in html
    assert (out / "keep.md").read_text() == "not the report's"
    assert (out / "figures" / "old.png").read_bytes() == b"not the report's"
    assert not list(out.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------------ reads right
def test_no_one_bar_chart_and_no_duplicate_curves(demo):
    """The demo's Tables 6-10 block is one cell, the API-Net row of Table 1: no bar chart, its curves not twice."""
    text, names = demo.readme.read_text(), [p.name for p in demo.figures]
    sota = text.split("## Tables 6-10")[1].split("\n## ")[0]
    assert "| synthetic | 40.5 ± 1.8 (n=3) |" in sota and "![" not in sota
    assert "*These runs are rows of Tables 1-5 above, where their training curves are.*" in sota
    assert not any(n.startswith("sota-") for n in names) and any(n.endswith("-curves.png") for n in names)


def test_no_spread_legend_or_caption_at_one_seed(tmp_path, monkeypatch):
    for arch, top1 in (("resnet18", 40.0), ("resnet34", 42.0)):
        F.write(tmp_path / "runs", f"{arch}/api-net/seed-0", F.metrics_json({**F.DEMO_CONFIG, "arch": arch, "seed": 0},
                                                                            top1=top1))
    F.write(tmp_path / "runs", "resnet18/api-False/seed-0", F.metrics_json({**F.DEMO_CONFIG, "api": False, "seed": 0},
                                                                           top1=38.0))
    from apikit.report import plots
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.setdefault(path.name, fig) and path)
    rep = report.render(tmp_path / "runs", tmp_path / "out", title="One seed")
    labels = lambda fig: [t.get_text() for lg in fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()]
                          for t in lg.get_texts()]
    sota = next(fig for name, fig in drawn.items() if name.startswith("sota-") and not name.endswith("curves.png"))
    assert labels(sota) == ["ours (final epoch)"]  # two bars (two backbones), one seed each: no sd
    gains = next(fig for name, fig in drawn.items() if name.startswith("table1-") and not name.endswith("curves.png"))
    assert labels(gains) == ["ours: n=1, no interval", "paper's gain"]
    assert not any("sd" in label for fig in drawn.values() for label in labels(fig))
    assert "shaded band" not in rep.readme.read_text()


def test_a_large_first_loss_puts_the_loss_on_a_log_scale(tmp_path, monkeypatch):
    hist = F.history(40.0)
    hist[0]["valid_loss"] = 400.0  # a first epoch's test loss far above the rest (2.5 .. 1.7)
    F.write(tmp_path / "runs", "demo/api-net/seed-0", F.metrics_json({**F.DEMO_CONFIG, "seed": 0}, top1=40.0, hist=hist))
    from apikit.report import plots
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    report.mean_curves_plot([("API-Net", report.collect(tmp_path / "runs").iloc[0])], tmp_path / "c.png")
    scales = {ax.get_ylabel(): ax.get_yscale() for ax in drawn["fig"].axes}
    assert scales == {"train loss": "linear", "valid loss (log scale)": "log", "top-1 (%)": "linear"}


def test_the_report_prints_as_markdown_in_a_terminal(demo):
    """`papermill --log-output` prints each display's text/plain: the report's markdown, not '<...object>'."""
    shown = [item._repr_mimebundle_() for item in demo.displays()]
    assert shown[0] == {"text/markdown": "# Demo", "text/plain": "# Demo"}
    table = next(s for s in shown if "text/html" in s)
    assert table["text/plain"].startswith("| row | ours |") and "<table>" in table["text/html"]
    code = next(s for s in shown if s["text/plain"].startswith("# Tables 6-10 at the paper's recipe: Table 6 (cub)"))
    assert code["text/markdown"].startswith("```bash\n# Tables 6-10 at the paper's recipe: Table 6 (cub)")
    assert any("image/png" in s and s["text/plain"].startswith("[figure: figures/") for s in shown)


# ------------------------------------------------------------------------------------------------ Fig. 3
def test_visualize_adds_fig3_and_the_part_hits_with_their_numbers(tmp_path):
    F.make_runs(tmp_path / "runs", only="demo/")
    viz = F.write_viz(tmp_path / "viz")
    rep = report.render(tmp_path / "runs", tmp_path / "out", title="Demo", visualize=viz)
    text = rep.readme.read_text()
    section = text.split("## Fig. 3: the gate's top channels, API-Net beside the Baseline")[1].split("\n## ")[0]
    assert "`reports/demo/runs/api-net/seed-0`" in section and "top 5 channels of its gate" in section
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    # Copies in the report's own figures/, named for the visualize folder: the report can be moved.
    assert [re.sub("-[0-9a-f]{8}[.]", "-*.", link) for link in links] == [
        "figures/gates_pair1-*.png", "figures/gates_pair2-*.png", "figures/part_hits-*.png"]
    assert {tmp_path / "out" / link for link in links} <= set(rep.figures)  # listed in .apikit-report.json
    assert all((tmp_path / "out" / link).read_bytes() == (viz / link.split("/")[1].split("-")[0]).with_suffix(
        ".png").read_bytes() for link in links)
    assert ("in 37.5% [33.5, 41.5] of API-Net's 880 peaks, against 23.8% for a peak at a random cell (chance): "
            "+13.7 [+10.3, +17.1] points above chance") in section
    assert "Baseline's maps at the same channel ids: 36.9% [33.0, 40.9], +13.1 [+9.8, +16.5] points" in section
    assert "not scored: 0 of API-Net's maps and 180 of the Baseline's" in section and "±" not in section
    assert "| API-Net, its gate's top channels | 37.5 [33.5, 41.5] | +13.7 [+10.3, +17.1] | 176 | 880 | 0 |" in section
    assert "| Baseline, at the same channel ids | 36.9 [33.0, 40.9] | +13.1 [+9.8, +16.5] | 170 | 700 | 180 |" in section
    assert "-p visualize " in text and "--visualize " in text  # the commands that regenerate the report say it too
    assert len(rep.displays()) == len(rep.doc)  # the notebook shows the figures, read from where they are
    html = rep.html.read_text()
    (tmp_path / "out").rename(tmp_path / "moved")
    assert all((tmp_path / "moved" / link).is_file() for link in links) and all(f'src="{link}"' in html for link in links)


def test_visualize_without_part_hits_shows_fig3_and_a_missing_folder_is_named_first(tmp_path):
    (tmp_path / "runs").mkdir()
    viz = F.write_viz(tmp_path / "viz", part_hit_rate=None)  # a data set without part annotations
    text = report.render(tmp_path / "runs", tmp_path / "out", visualize=viz).readme.read_text()
    assert "## Fig. 3" in text and "gates_pair2-" in text and "part_hits" not in text and "chance" not in text
    with pytest.raises(FileNotFoundError, match=r"visualize=.*nowhere.*viz\.json does not exist"):
        report.render(tmp_path / "runs", tmp_path / "out2", visualize=tmp_path / "nowhere")
    assert not (tmp_path / "out2").exists()


def test_fig3_is_found_beside_the_api_net_run_or_the_report_says_how_to_draw_it(tmp_path):
    """visualize.ipynb writes into <api_run>/visualize: the default report finds it under runs_root by itself; a
    visualize folder inside the report's folder is linked where it is; without one, the command that draws it."""
    F.make_runs(tmp_path / "runs", only="demo/")
    text = report.render(tmp_path / "runs", tmp_path / "out").readme.read_text()
    section = text.split("## Fig. 3: the gate's top channels, API-Net beside the Baseline\n")[1].split("\n## ")[0]
    assert "Not drawn: no visualize folder (a viz.json) was found under the runs." in section
    assert ("papermill --log-output notebooks/visualize.ipynb /tmp/visualize.ipynb -p baseline_run "
            f"{tmp_path / 'runs/demo/api-False/seed-0'} -p api_run {tmp_path / 'runs/demo/api-net/seed-0'}") in section
    F.write_viz(tmp_path / "runs" / "demo" / "api-net" / "seed-0" / "visualize")
    rep = report.render(tmp_path / "runs", tmp_path / "out")
    text = rep.readme.read_text()
    assert "Not drawn" not in text and "of API-Net's 880 peaks" in text and "](figures/gates_pair1-" in text
    inside = F.write_viz(tmp_path / "out2" / "visualize")
    text = report.render(tmp_path / "runs", tmp_path / "out2", visualize=inside).readme.read_text()
    assert "](visualize/gates_pair1.png)" in text and "](figures/gates_pair1-" not in text  # moves with the report


def test_make_report_leaves_git_status_clean(tmp_path):
    """`make report` (runs under reports/runs, the report into reports/, papermill's copy reports/report.ipynb) in a
    repository holding the project's .gitignore: git sees nothing new; the demo's committed report is not ignored."""
    import os
    import shutil
    import subprocess
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    git = lambda *args: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c",
                                        "commit.gpgsign=false", *args], cwd=repo, capture_output=True, text=True,
                                       env=env)
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    shutil.copy(ROOT / ".gitignore", repo)
    git("init", "-q")
    git("add", ".gitignore")
    git("commit", "-qm", "ignore")
    F.make_runs(repo / "reports" / "runs", only="demo/")
    rep = report.render(repo / "reports" / "runs", repo / "reports")
    (repo / "reports" / "report.ipynb").write_text("{}")
    assert rep.figures and (repo / "reports" / ".apikit-report.json").is_file()
    assert git("status", "--porcelain", "--untracked-files=all").stdout == ""
    assert git("check-ignore", "reports/demo/.apikit-report.json").returncode == 1


# ------------------------------------------------------------------------------------------------ its folder
def test_the_report_is_written_only_where_nothing_but_a_report_is_in_the_way(tmp_path):
    """A README.md of your own, a figure by a report's name, the project's folders: refused before any work,
    naming what is in the way; an empty folder, an earlier report's and other files beside it are fine."""
    F.make_runs(tmp_path / "runs", only="demo/")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("# my notes")
    with pytest.raises(report.NotAReportFolder, match=r"holds README.md, which no apikit report wrote.*choose "
                                                      r"another out_dir"):
        report.render(tmp_path / "runs", mine)
    assert sorted(p.name for p in mine.iterdir()) == ["README.md"] and (mine / "README.md").read_text() == "# my notes"
    (mine / "README.md").unlink()
    (mine / "figures").mkdir()
    (mine / "figures" / "diagnostics.png").write_bytes(b"mine")
    with pytest.raises(report.NotAReportFolder, match="holds figures/diagnostics.png, which no apikit report wrote"):
        report.render(tmp_path / "runs", mine)
    for where in (".", "notebooks", "apikit"):
        with pytest.raises(report.NotAReportFolder, match="a folder of the project itself"):
            report.render(tmp_path / "runs", where)
    assert not (ROOT / "report.html").exists() and not (ROOT / "notebooks" / "report.html").exists()


def test_no_report_goes_inside_a_folder_of_the_tools(tmp_path):
    """.git (also through a link) and __pycache__ are refused before any work: nothing is written there."""
    import os
    F.make_runs(tmp_path / "runs", only="demo/")
    refs = tmp_path / "repo" / ".git" / "refs"
    (refs / "tags").mkdir(parents=True)
    os.symlink(refs, tmp_path / "out")  # an innocent name, into .git
    for where, tool in ((refs / "tags", ".git"), (tmp_path / "out" / "tags", ".git"),
                        (tmp_path / "pkg" / "__pycache__", "__pycache__")):
        with pytest.raises(report.NotAReportFolder, match=rf"out_dir='{re.escape(str(where))}' is .*, inside "
                                                          rf"{re.escape(tool)}/, a folder the tools keep .*, not a "
                                                          r"report folder: .*choose another out_dir"):
            report.render(tmp_path / "runs", where)
    assert list((refs / "tags").iterdir()) == [] and not (tmp_path / "pkg").exists()


def test_a_rerender_replaces_its_own_report_and_removes_the_figures_it_no_longer_draws(tmp_path):
    """The figures' names follow the settings: those of the earlier report that are not drawn again go, and
    `.apikit-report.json` lists what is there now."""
    import json
    F.make_runs(tmp_path / "runs", only="demo/")
    out = tmp_path / "out"
    first = report.render(tmp_path / "runs", out)
    (out / "figures" / "old.png").write_bytes(b"not the report's")  # another name: left alone
    drawn = sorted(f"figures/{p.name}" for p in first.figures)
    assert json.loads((out / ".apikit-report.json").read_text())["files"] == sorted(["README.md", "report.html",
                                                                                      *drawn])
    stale = out / "figures" / "table1-0123abcd.png"  # as if drawn for a setting these runs no longer have
    stale.write_bytes(b"png")
    listed = json.loads((out / ".apikit-report.json").read_text())
    listed["files"].append("figures/table1-0123abcd.png")
    (out / ".apikit-report.json").write_text(json.dumps(listed))
    report.render(tmp_path / "runs", out)
    assert not stale.exists() and (out / "figures" / "old.png").read_bytes() == b"not the report's"
    assert sorted(f"figures/{p.name}" for p in (out / "figures").iterdir()) == sorted([*drawn, "figures/old.png"])


def test_a_parameter_error_of_the_report_command_is_argparses_one_line(tmp_path, capsys):
    """As for an unknown option: `error: ...` and exit status 2, no traceback, nothing written."""
    (tmp_path / "runs").mkdir()
    cases = [(["--runs-root", str(tmp_path / "nowhere")],
              f"runs_root='{tmp_path / 'nowhere'}': no such folder ({tmp_path / 'nowhere'}); point it at the folder "
              "that holds the run_dirs, e.g. reports/runs."),
             (["--out-dir", str(tmp_path / ".git" / "refs")], f"out_dir='{tmp_path / '.git' / 'refs'}' is "
              f"{tmp_path / '.git' / 'refs'}, inside .git/, a folder the tools keep (version control, Python, Jupyter, "
              "caches), not a report folder: the report writes README.md, report.html and figures/ into it; choose "
              "another out_dir (a new folder, e.g. reports/mine)."),
             (["--title", " "], "title=' ': expected a non-empty string.")]
    for args, said in cases:
        with pytest.raises(SystemExit) as e:
            report.main(["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), *args])
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 2 and err[-1] == f"python -m apikit.report: error: {said}"
        assert err[0].startswith("usage: python -m apikit.report") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".git").exists()
