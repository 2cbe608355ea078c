"""`apikit/report.py` and `notebooks/report.ipynb` on hand-written run_dirs (tests/report_fixtures.py).

Every figure asserted here is recomputed from the fixture's metrics.json numbers (mean, sample std).
"""
import json
import os
import re
import statistics
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from PIL import Image

import report_fixtures as F
from apikit import report
from apikit.ablations import PAPER, PAPER_SOTA, TABLE_TITLES, TABLES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "report.ipynb"
PAPER_LABEL = "cub, resnet101, ImageNet-pretrained, 448 px, 100 epochs, batch 30 x 4"
DEMO_LABEL = "synthetic, resnet18, from scratch, 64 px, 2 epochs, batch 6 x 2"
TOP1 = {rel: top1 for rel, *_, top1 in F.FINISHED + [F.MINIMAL]}


def ours(*rels):
    """The expected 'ours' cell of these fixture runs, computed here by hand."""
    v = [TOP1[r] for r in rels]
    if len(v) == 1:
        return f"{v[0]:.1f} (n=1)"
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f} (n={len(v)})"


def diff(paper, *rels):
    d = round(statistics.mean(TOP1[r] for r in rels) - paper, 1)
    return f"{d:+.1f}"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    F.make_runs(root)
    return root


@pytest.fixture(scope="module")
def runs(runs_root):
    with pytest.warns(UserWarning, match=re.escape(str(runs_root / F.CORRUPT))):
        return report.collect(runs_root)


def rows(table, setting):
    return table[table["setting"] == setting].set_index("row")


# ------------------------------------------------------------------------------------------------ collect
def test_collect_one_row_per_readable_metrics_json(runs, runs_root):
    assert len(runs) == len(F.FINISHED) + 3  # + minimal, failed, running; the corrupt file is skipped
    assert runs.attrs["skipped"] == [str(runs_root / F.CORRUPT)]
    by_dir = runs.set_index("run_dir")
    for rel, base, overrides, seed, top1 in F.FINISHED + [F.MINIMAL]:
        row = by_dir.loc[str(runs_root / rel)]
        assert row["status"] == "finished" and row["top1"] == top1 and row["seed"] == seed
        for key in ("dataset", "arch", "size", "n_classes", "mutual", "intra", "rank_weight"):
            want = {**base, **overrides}[key]
            assert row[key] == want if want is not None else pd.isna(row[key])
    failed = by_dir.loc[str(runs_root / F.FAILED[0])]
    assert failed["status"] == "failed" and failed["error"] == F.FAILED[-1]
    assert by_dir.loc[str(runs_root / F.RUNNING[0]), "status"] == "running"
    assert by_dir.loc[str(runs_root / F.MINIMAL[0]), "history"] == []
    assert by_dir.loc[str(runs_root / "gpu/api-net/seed-0"), "fit_s"] == 100.0


def test_collect_names_a_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        report.collect(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ ablations
def test_table1_numbers_paper_and_diff_per_setting(runs):
    t = report.ablation_table(runs, "table1")
    assert list(dict.fromkeys(t["setting"])) == [PAPER_LABEL, DEMO_LABEL]  # the paper's setting first
    p = rows(t, PAPER_LABEL)
    assert list(p.index) == ["Baseline", "API-Net"]
    base, api = ("gpu/api-False/seed-0", "gpu/api-False/seed-1"), ("gpu/api-net/seed-0", "gpu/api-net/seed-1")
    assert p.loc["Baseline", "ours"] == ours(*base) == "84.7 ± 0.8 (n=2)"  # seed-1's API keys are blank
    assert p.loc["API-Net", "ours"] == ours(*api) == "88.7 ± 1.0 (n=2)"  # the failed seed-2 does not count
    assert p.loc["Baseline", "paper"] == "85.4" and p.loc["API-Net", "paper"] == "88.6"
    assert p.loc["Baseline", "diff"] == diff(85.4, *base) == "-0.7"
    assert p.loc["API-Net", "diff"] == diff(88.6, *api) == "+0.1"
    d = rows(t, DEMO_LABEL)
    assert d.loc["Baseline", "ours"] == "35.0 (n=1)" and d.loc["API-Net", "ours"] == "40.0 (n=1)"


def test_table2_keeps_missing_rows_in_the_papers_order(runs):
    t = report.ablation_table(runs, "table2")
    assert set(t["setting"]) == {PAPER_LABEL}  # the demo ran no Table 2 row besides its base
    p = rows(t, PAPER_LABEL)
    assert list(p.index) == [name for name, _ in TABLES["table2"]]
    assert list(p["paper"]) == [f"{PAPER['table2'][name]:.1f}" for name, _ in TABLES["table2"]]
    prod = ("gpu/mutual-product/seed-0", "gpu/mutual-product/seed-1", "gpu/mutual-product/seed-2")
    assert p.loc["Product", "ours"] == ours(*prod) and p.loc["Product", "diff"] == diff(88.4, *prod)
    assert p.loc["Sum", "ours"] == ours("gpu/mutual-sum/seed-0") and p.loc["Sum", "diff"] == "-1.2"
    assert p.loc["MLP", "ours"] == ours("gpu/api-net/seed-0", "gpu/api-net/seed-1")
    for name in ("Individual", "Compact Bilinear Pooling", "Subtract Square", "Weight Attention"):
        assert p.loc[name, "ours"] == report.MISSING and p.loc[name, "diff"] == report.MISSING


def test_table3_gate_counts_a_minimal_metrics_json_and_not_a_running_run(runs):
    p = rows(report.ablation_table(runs, "table3_gate"), PAPER_LABEL)
    assert p.loc["Single", "ours"] == ours(F.MINIMAL[0])  # gate-single/seed-0 is still running


def test_table5_rows_are_scaled_to_the_settings_batch(runs):
    d = rows(report.ablation_table(runs, "table5_classes"), DEMO_LABEL)
    assert d.loc["N_cl=10", "ours"] == ours("demo/n_classes-2/seed-0")  # round(10 * 6 / 30) = 2 classes
    assert d.loc["N_cl=20", "ours"] == report.MISSING  # 4 classes: not run
    assert d.loc["N_cl=30", "ours"] == ours("demo/api-net/seed-0")
    s = report.ablation_stats(runs, "table5_images")
    d = s[s["setting"] == DEMO_LABEL].set_index("row")
    # N_im=2 and 3 scale to the base's 2 images: flagged, and one run per seed, the row's own folder first.
    assert d.loc["N_im=2", "note"] and d.loc["N_im=3", "note"] and not d.loc["N_im=4", "note"]
    assert d.loc["N_im=2", "values"] == [41.0] and d.loc["N_im=4", "values"] == [40.0]


def test_base_chooses_the_setting_and_missing_settings_show_every_row(runs):
    t = report.ablation_table(runs, "table1", base={"dataset": "synthetic"})
    assert set(t["setting"]) == {DEMO_LABEL}
    t = report.ablation_table(runs, "table4", base={"dataset": "dogs"})
    assert list(t["row"]) == [name for name, _ in TABLES["table4"]]
    assert set(t["ours"]) == {report.MISSING} and t["setting"].iloc[0].startswith("dogs, resnet101")
    with pytest.raises(ValueError, match="table9"):
        report.ablation_table(runs, "table9")
    with pytest.raises(ValueError, match="colour"):
        report.ablation_table(runs, "table1", base={"colour": "red"})


# ------------------------------------------------------------------------------------------------ SOTA
def test_sota_table_every_paper_cell_present_with_our_numbers(runs):
    t = report.sota_table(runs)
    paper = t[t["setting"] == "ImageNet-pretrained, 448 px"].set_index("data set")
    assert list(paper.index) == list(PAPER_SOTA)
    for d, archs in PAPER_SOTA.items():
        for a, fig in archs.items():
            assert paper.loc[d, f"{a} paper"] == f"{fig:.1f}"
    r50 = ("sota/cub-resnet50/seed-0", "sota/cub-resnet50/seed-1")
    assert paper.loc["cub", "resnet50"] == ours(*r50) == "87.6 ± 0.6 (n=2)"
    assert paper.loc["cub", "resnet50 diff"] == diff(87.7, *r50) == "-0.1"
    assert paper.loc["cub", "resnet101"] == ours("gpu/api-net/seed-0", "gpu/api-net/seed-1")
    assert paper.loc["cub", "densenet161"] == report.MISSING and paper.loc["cub", "densenet161 diff"] == report.MISSING
    assert (paper.drop(index="cub")[["resnet50", "resnet101", "densenet161"]] == report.MISSING).all().all()
    demo = t[t["setting"] == "from scratch, 64 px"].set_index("data set")
    assert list(demo.index) == list(PAPER_SOTA) + ["synthetic"]  # paper rows kept; the extra data set added
    assert demo.loc["synthetic", "resnet18"] == "40.0 (n=1)"  # demo/api-net, not its same-seed duplicate
    assert demo.loc["synthetic", "resnet18 paper"] == report.MISSING


# ------------------------------------------------------------------------------------------------ provenance
def test_manifest_maps_each_cell_to_its_run_dirs(runs, runs_root):
    s_stats = report.sota_stats(runs)
    a_stats = {t: report.ablation_stats(runs, t) for t in TABLES}
    m = report.manifest(s_stats, a_stats, runs_root)

    def dirs(table, cell, setting):
        sel = m[(m["table"] == table) & (m["cell"] == cell) & (m["setting"] == setting)]
        return sorted(sel["run_dir"]), sorted(sel["top1"])

    assert dirs("Tables 6-10", "cub / resnet50", "ImageNet-pretrained, 448 px") == (
        ["sota/cub-resnet50/seed-0", "sota/cub-resnet50/seed-1"], ["87.2", "88.0"])
    assert dirs(TABLE_TITLES["table1"], "Baseline", PAPER_LABEL)[0] == ["gpu/api-False/seed-0", "gpu/api-False/seed-1"]
    assert dirs(TABLE_TITLES["table2"], "Product", PAPER_LABEL)[0] == [f"gpu/mutual-product/seed-{k}" for k in range(3)]
    assert dirs(TABLE_TITLES["table5_classes"], "N_cl=10", DEMO_LABEL)[0] == ["demo/n_classes-2/seed-0"]
    others = report.other_runs(runs, set(m["run_dir"].map(lambda d: str(runs_root / d))), runs_root).set_index("run_dir")
    assert others.loc[F.FAILED[0], "error"] == F.FAILED[-1] and others.loc[F.RUNNING[0], "status"] == "running"
    assert len(others) == 2


# ------------------------------------------------------------------------------------------------ files
def test_render_with_no_runs_shows_the_papers_tables_empty(tmp_path):
    (tmp_path / "runs").mkdir()
    rep = report.render(tmp_path / "runs", tmp_path / "out", title="Empty")
    text = rep.readme.read_text()
    assert "| Baseline | — | 85.4 | — |" in text and "| cub | — | 87.7 | — |" in text
    assert rep.figures == [] and rep.html.is_file()


def test_notebook_parameters():
    """The template itself is checked with the others in tests/test_notebooks.py."""
    import papermill
    params = papermill.inspect_notebook(str(NOTEBOOK))
    assert set(params) == {"runs_root", "out_dir", "title"} and all(p["help"] for p in params.values())


def test_notebook_checks_runs_root_before_any_work(tmp_path):
    code = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    env = {}
    exec(code[0], env)
    env["runs_root"] = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="runs_root="):
        exec(code[1], env)


@pytest.fixture(scope="module")
def notebook_out(runs_root, tmp_path_factory, python3_kernel):
    """Execute notebooks/report.ipynb with papermill on the fixture runs; returns the out_dir."""
    import papermill
    tmp = tmp_path_factory.mktemp("notebook")
    out = tmp / "out"
    (out / "figures").mkdir(parents=True)
    (out / "keep.md").write_text("not the report's")
    (out / "figures" / "old.png").write_bytes(b"not the report's")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLBACKEND", "Agg")
        papermill.execute_notebook(str(NOTEBOOK), str(tmp / "executed.ipynb"), kernel_name=python3_kernel,
                                   parameters=dict(runs_root=str(runs_root), out_dir=str(out)), progress_bar=False,
                                   cwd=str(tmp))
    return out


def test_notebook_writes_the_report_with_the_runs_numbers(notebook_out):
    text = (notebook_out / "README.md").read_text()
    r50, r101 = ("sota/cub-resnet50/seed-0", "sota/cub-resnet50/seed-1"), ("gpu/api-net/seed-0", "gpu/api-net/seed-1")
    base = ("gpu/api-False/seed-0", "gpu/api-False/seed-1")
    assert (f"| cub | {ours(*r50)} | 87.7 | {diff(87.7, *r50)} | {ours(*r101)} | 88.6 | {diff(88.6, *r101)} "
            f"| — | 90.0 | — |") in text
    assert "| aircraft | — | 93.0 | — | — | 93.4 | — | — | 93.9 | — |" in text
    assert f"| Baseline | {ours(*base)} | 85.4 | {diff(85.4, *base)} |" in text
    assert f"| Sum | {ours('gpu/mutual-sum/seed-0')} | 88.5 | -1.2 |" in text
    assert "| Individual | — | 87.9 | — |" in text
    for title in TABLE_TITLES.values():
        assert f"### {title}" in text
    assert "| sota/cub-resnet50/seed-1 | 1 | 88.0 |" in text  # the manifest
    assert F.FAILED[-1] in text and F.CORRUPT in text  # the failed run's error, the skipped file


def test_notebook_writes_valid_images_and_html_and_touches_nothing_else(notebook_out):
    text = (notebook_out / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "figures/table1-cub-resnet101-pt-448px-100ep-b30-x-4.png" in links and len(links) >= 6
    for link in links:
        with Image.open(notebook_out / link) as im:
            im.verify()
            assert im.format == "PNG"
    html = (notebook_out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "http" not in html.split("<body>")[0]
    assert set(re.findall(r'<img src="([^"]+)"', html)) == set(links)
    assert "<td>84.7 ± 0.8 (n=2)</td>" in html
    assert (notebook_out / "keep.md").read_text() == "not the report's"
    assert (notebook_out / "figures" / "old.png").read_bytes() == b"not the report's"
    assert not list(notebook_out.rglob("*.tmp"))


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
