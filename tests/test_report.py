"""`apikit/report/` and `notebooks/report.ipynb` on hand-written run_dirs (tests/report_fixtures.py).

Every figure asserted here is recomputed from the fixture's metrics.json numbers (mean, sample sd, paired gains).
"""
import json
import math
import os
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

import report_fixtures as F
from apikit import report
from apikit.paper import PAPER, PAPER_GAIN, PAPER_SOTA, TABLE_TITLES, TABLES, recipe
from apikit.report import match

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "report.ipynb"
PAPER_LABEL = "cub, resnet101, ImageNet-pretrained, 448 px from 512, 100 epochs (8 frozen), sgd lr 0.01 wd 0.0005, batch 30 classes x 4 images, fp32"
DEMO_LABEL = "synthetic, resnet18, from scratch, 64 px from 72, 2 epochs, sgd lr 0.01 wd 0.0005, batch 6 classes x 2 images, fp32"
BEST = "best epoch, as the authors' code selects"
TOP1 = {rel: top1 for rel, *_, top1 in F.FINISHED + [F.MINIMAL]}


def ours(*rels):
    """The expected 'ours' cell of these fixture runs, computed here by hand."""
    v = [TOP1[r] for r in rels]
    if len(v) == 1:
        return f"{v[0]:.1f} (n=1)"
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f} (n={len(v)})"


def diff(paper, *rels):
    return f"{round(statistics.mean(TOP1[r] for r in rels) - paper, 1):+.1f}"


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
    assert by_dir.loc[str(runs_root / F.MINIMAL[0]), "history"] == []
    assert by_dir.loc[str(runs_root / "gpu/api-net/seed-0"), "fit_s"] == 100.0
    # Runs record what was loaded; one written with only the required keys claims nothing about its weights.
    assert not by_dir.loc[str(runs_root / F.MINIMAL[0]), "weights_recorded"]
    new = by_dir.loc[str(runs_root / "gpu/api-net/seed-0")]
    assert new["weights_loaded"] == "ResNet101_Weights.IMAGENET1K_V1" and new["best_top1"] == 88.9


def test_a_running_run_without_a_live_lock_holder_is_interrupted(runs, runs_root):
    # The fixture's "running" run has no .lock at all: nobody is training it.
    assert runs.set_index("run_dir").loc[str(runs_root / F.RUNNING[0]), "status"] == "interrupted"


def test_collect_names_a_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        report.collect(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ settings
def test_settings_paper_first_and_differences_from_the_recipe(runs):
    found = report.settings(runs)
    assert match.describe(found[0]) == PAPER_LABEL and match.is_paper_setting(found[0])
    demo = next(s for s in found if s["dataset"] == "synthetic")
    assert (demo["n_classes"], demo["n_images"]) == (6, 2)
    assert match.differences(demo) == [("dataset", "synthetic", "cub"), ("arch", "resnet18", "resnet101"),
                                       ("pretrained", False, True), ("size", 64, 448), ("resize", 72, 512),
                                       ("epochs", 2, 100), ("freeze_epochs", 0, 8), ("n_classes", 6, 30),
                                       ("n_images", 2, 4)]
    dogs = {**recipe("dogs"), "arch": "densenet161"}
    assert match.is_paper_setting(dogs, sota=True) and not match.is_paper_setting({**dogs, "lr": 0.01}, sota=True)
    assert match.describe({"epochs": 1}) == "1 epoch"
    with pytest.raises(ValueError, match="colour"):
        report.settings(runs, base={"colour": "red"})


# ------------------------------------------------------------------------------------------------ statistics
def test_paired_gain_against_a_hand_worked_example():
    # API-Net 40.0, 42.5, 39.0 and Baseline 35.0, 36.0, 37.5 (seeds 0-2; Baseline's seed 3 has no partner):
    # gains 5.0, 6.5, 1.5 -> mean 13/3 = 4.333; sd = sqrt(((2/3)^2 + (13/6)^2 + (17/6)^2) / 2) = sqrt(79/12)
    # = 2.5658; half-width = t(0.975, 2) * sd / sqrt(3) = 4.302653 * 1.481366 = 6.3739.
    mean, half, n, pairs = report.paired_gain({0: 40.0, 1: 42.5, 2: 39.0}, {0: 35.0, 1: 36.0, 2: 37.5, 3: 33.0})
    assert n == 3 and [s for s, _ in pairs] == [0, 1, 2]
    assert mean == pytest.approx(13 / 3) and half == pytest.approx(4.302653 * math.sqrt(79 / 12) / math.sqrt(3))
    # An interval reads as [lo, hi], "±" being kept for spreads: 4.333 -+ 6.374.
    assert report.format_gain(mean, half, n) == "+4.3 [-2.0, +10.7] (n=3)"
    mean, half, n, _ = report.paired_gain({1: 88.0}, {1: 85.0, 2: 84.0})
    assert (mean, n) == (3.0, 1) and math.isnan(half) and report.format_gain(mean, half, n) == "+3.0 (n=1, no interval)"
    assert report.paired_gain({}, {0: 1.0})[2] == 0 and report.format_gain(math.nan, math.nan, 0) == report.MISSING


# ------------------------------------------------------------------------------------------------ Tables 1-5
def test_table1_paper_setting_has_paper_best_epoch_diff_and_gain(runs):
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
    # Best epoch: both API-Net seeds recorded it (88.9, 89.6); of the Baseline only seed 0 (84.5).
    assert p.loc["API-Net", BEST] == "89.2 ± 0.5 (n=2)" and p.loc["Baseline", BEST] == "84.5 (n=1)"
    # Gains paired by seed: 88.0 - 84.1 = 3.9, 89.4 - 85.3 = 4.1 -> 4.0 -+ t(0.975, 1) * 0.1414 / sqrt(2) = 1.27.
    assert p.loc["API-Net", "gain over Baseline (95% CI)"] == "+4.0 [+2.7, +5.3] (n=2)"
    assert p.loc["API-Net", "paper gain"] == "+3.2" and p.loc["Baseline", "paper gain"] == "reference"


def test_table1_outside_the_papers_setting_shows_gains_not_paper_figures(runs):
    t = report.ablation_table(runs, "table1")
    d = rows(t, DEMO_LABEL)
    assert d["paper"].isna().all() and d["diff"].isna().all() and d[BEST].isna().all()
    assert d.loc["Baseline", "ours"] == ours(*(f"demo/api-False/seed-{k}" for k in range(4)))
    assert d.loc["API-Net", "gain over Baseline (95% CI)"] == "+4.3 [-2.0, +10.7] (n=3)"  # the hand-worked example
    assert d.loc["API-Net", "paper gain"] == f"+{PAPER_GAIN['table1']['API-Net']:.1f}" == "+3.2"
    s = report.ablation_stats(runs, "table1")
    s = s[s["setting"] == DEMO_LABEL].set_index("row")
    assert s.loc["API-Net", "gains"] == [("0", 5.0), ("1", 6.5), ("2", 1.5)] and math.isnan(s.loc["Baseline", "gain"])
    assert s["paper"].isna().all() and s["diff"].isna().all()


def test_table2_keeps_missing_rows_in_the_papers_order(runs):
    t = report.ablation_table(runs, "table2")
    assert set(t["setting"]) == {PAPER_LABEL}  # the demo ran no Table 2 row besides its base
    p = rows(t, PAPER_LABEL)
    assert list(p.index) == [name for name, _ in TABLES["table2"]]
    assert list(p["paper"]) == [f"{PAPER['table2'][name]:.1f}" for name, _ in TABLES["table2"]]
    prod = ("gpu/mutual-product/seed-0", "gpu/mutual-product/seed-1", "gpu/mutual-product/seed-2")
    assert p.loc["Product", "ours"] == ours(*prod) and p.loc["Product", "diff"] == diff(88.4, *prod)
    # Product pairs with MLP on seeds 0 and 1 only: 88.0 - 88.0 = 0.0, 88.5 - 89.4 = -0.9.
    g = (0.0 - 0.9) / 2
    half = 12.706205 * statistics.stdev([0.0, -0.9]) / math.sqrt(2)
    assert p.loc["Product", "gain over MLP (95% CI)"] == f"{g:+.1f} [{g - half:+.1f}, {g + half:+.1f}] (n=2)" \
        == "-0.5 [-6.2, +5.3] (n=2)"
    assert p.loc["Sum", "ours"] == ours("gpu/mutual-sum/seed-0") and p.loc["Sum", "diff"] == "-1.2"
    assert p.loc["Sum", "gain over MLP (95% CI)"] == "-0.7 (n=1, no interval)"  # 87.3 - 88.0, seed 0
    assert p.loc["MLP", "ours"] == ours("gpu/api-net/seed-0", "gpu/api-net/seed-1")
    for name in ("Individual", "Compact Bilinear Pooling", "Subtract Square", "Weight Attention"):
        assert p.loc[name, "ours"] == report.MISSING and p.loc[name, "diff"] == report.MISSING


def test_table3_gate_counts_a_minimal_metrics_json_and_not_an_interrupted_run(runs):
    p = rows(report.ablation_table(runs, "table3_gate"), PAPER_LABEL)
    assert p.loc["Single", "ours"] == ours(F.MINIMAL[0])  # gate-single/seed-0 never finished


def test_table5_rows_are_scaled_to_the_settings_batch(runs):
    d = rows(report.ablation_table(runs, "table5_classes"), DEMO_LABEL)
    assert d.loc["N_cl=10", "ours"] == ours("demo/n_classes-2/seed-0")  # round(10 * 6 / 30) = 2 classes
    assert d.loc["N_cl=20", "ours"] == report.MISSING  # 4 classes: not run
    assert d.loc["N_cl=30", "ours"] == ours("demo/api-net/seed-0", "demo/api-net/seed-1", "demo/api-net/seed-2")
    s = report.ablation_stats(runs, "table5_images")
    d = s[s["setting"] == DEMO_LABEL].set_index("row")
    # N_im=2 and 3 scale to the base's 2 images: flagged, and one run per seed, the row's own folder first.
    assert d.loc["N_im=2", "note"] and d.loc["N_im=3", "note"] and not d.loc["N_im=4", "note"]
    assert d.loc["N_im=2", "values"] == [42.5, 39.0, 41.0] and d.loc["N_im=4", "values"] == [40.0, 42.5, 39.0]


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


# ------------------------------------------------------------------------------------------------ Tables 6-10
def test_sota_paper_figures_only_in_the_papers_setting_for_each_data_set(runs):
    s = report.sota_stats(runs)
    paper = s[s["paper_setting"]].set_index(["dataset", "arch"])
    assert len(paper) == 15 and all(paper.loc[(d, a), "paper"] == v for d, av in PAPER_SOTA.items() for a, v in av.items())
    t = report.sota_table(runs)
    p = t[t["setting"] == report.tables.SOTA_PAPER_BLOCK].set_index("data set")
    assert list(p.index) == ["cub (Table 6)"]  # only what was run; the rest is in the not-run table
    r50 = ("sota/cub-resnet50/seed-0", "sota/cub-resnet50/seed-1")
    assert p.loc["cub (Table 6)", "resnet50"] == ours(*r50) == "87.6 ± 0.6 (n=2)"
    assert p.loc["cub (Table 6)", "resnet50 paper"] == "87.7" and p.loc["cub (Table 6)", "resnet50 diff"] == "-0.1"
    assert p.loc["cub (Table 6)", f"resnet50 {BEST}"] == "88.4 (n=1)"  # seed 0 predates best_top1
    assert p.loc["cub (Table 6)", "resnet101"] == ours("gpu/api-net/seed-0", "gpu/api-net/seed-1")
    assert "densenet161" not in p.columns
    others = t[t["setting"] != report.tables.SOTA_PAPER_BLOCK]
    assert not any("paper" in c or "diff" in c for c in others.dropna(axis=1, how="all").columns)
    row = lambda d: others[others["data set"] == d].dropna(axis=1, how="all").iloc[0]
    assert row("cars (Table 8)")["resnet50"] == "93.1 (n=1) [bf16]"
    # Weights the config names are in the setting's label, once, not in every cell.
    assert row("aircraft (Table 7)")["resnet101"] == "92.0 (n=1)"
    assert any("pretrained (IMAGENET1K_V2)" in s for s in others[others["data set"] == "aircraft (Table 7)"]["setting"])
    assert row("synthetic")["resnet18"] == ours("demo/api-net/seed-0", "demo/api-net/seed-1", "demo/api-net/seed-2")


def test_a_run_that_loaded_other_weights_is_marked_and_not_compared(tmp_path):
    cfg = {**F.PAPER_CONFIG, "seed": 0}
    F.write(tmp_path, "paper/cub-resnet101/seed-0",
            F.metrics_json(cfg, top1=88.0, weights_loaded="ResNet101_Weights.IMAGENET1K_V2"))
    s = report.sota_stats(report.collect(tmp_path)).set_index(["dataset", "arch"]).loc[("cub", "resnet101")]
    assert s["marks"] == ["loaded ResNet101_Weights.IMAGENET1K_V2"] and math.isnan(s["paper"]) and s["n"] == 1


def test_runs_on_other_images_are_other_settings(tmp_path):
    """Two generated sets, two image folders: four settings, each paired within itself. A benchmark's data_path
    only says where it lives: CUB read from two places is one setting."""
    small, large = {"n_classes": 6, "seed": 0}, {"n_classes": 12, "seed": 0}
    top1 = {("small", False): (30.0, 32.0), ("small", True): (31.0, 35.0),  # gains 1, 3
            ("large", False): (50.0, 52.0), ("large", True): (49.0, 52.0)}  # gains -1, 0
    for (name, api), values in top1.items():
        for seed, v in enumerate(values):
            cfg = {**F.DEMO_CONFIG, "synthetic": {"small": small, "large": large}[name], "api": api, "seed": seed}
            F.write(tmp_path, f"{name}/api-{api}/seed-{seed}", F.metrics_json(cfg, top1=v))
    for where, v in (("/data/a", 60.0), ("/data/b", 70.0)):
        cfg = {**F.DEMO_CONFIG, "dataset": "folder", "data_path": where, "seed": 0}
        F.write(tmp_path, f"folder{where}/api-net/seed-0", F.metrics_json(cfg, top1=v))
    for seed, where in enumerate(("/x/cub", "/y/cub")):
        cfg = {**F.PAPER_CONFIG, "data_path": where, "seed": seed}
        F.write(tmp_path, f"cub/seed-{seed}", F.metrics_json(cfg, top1=88.0, weights_loaded=F.weights_loaded(cfg)))
    runs = report.collect(tmp_path)
    s = report.ablation_stats(runs, "table1")
    gains = {row.setting: (row.gain, row.gain_n) for row in s[~s["reference"]].itertuples()}
    label = lambda d: DEMO_LABEL.replace("synthetic", f"synthetic ({d['n_classes']} species, seed 0)")
    assert gains[label(small)] == (2.0, 2) and gains[label(large)] == (-0.5, 2)
    sota = report.sota_stats(runs).set_index(["dataset", "arch"])
    assert sota.loc[("folder /data/a", "resnet18"), "values"] == [60.0]
    assert sota.loc[("folder /data/b", "resnet18"), "values"] == [70.0]
    assert sota.loc[("cub", "resnet101"), "n"] == 2 and sota.loc[("cub", "resnet101"), "paper_setting"]


# ------------------------------------------------------------------------------------------------ provenance
def test_manifest_maps_each_cell_to_its_run_dirs(runs, runs_root):
    s_stats = report.sota_stats(runs)
    a_stats = {t: report.ablation_stats(runs, t) for t in TABLES}
    m = report.manifest(s_stats, a_stats, runs_root)

    def dirs(table, cell, setting):
        sel = m[(m["table"] == table) & (m["cell"] == cell) & (m["setting"] == setting)]
        return sorted(sel["run_dir"]), sorted(sel["top1"])

    assert dirs("Tables 6-10", "cub / resnet50", report.tables.SOTA_PAPER_BLOCK) == (
        ["sota/cub-resnet50/seed-0", "sota/cub-resnet50/seed-1"], ["87.2", "88.0"])
    assert dirs(TABLE_TITLES["table1"], "Baseline", PAPER_LABEL)[0] == ["gpu/api-False/seed-0", "gpu/api-False/seed-1"]
    assert dirs(TABLE_TITLES["table2"], "Product", PAPER_LABEL)[0] == [f"gpu/mutual-product/seed-{k}" for k in range(3)]
    assert dirs(TABLE_TITLES["table5_classes"], "N_cl=10", DEMO_LABEL)[0] == ["demo/n_classes-2/seed-0"]
    others = report.other_runs(runs, set(m["run_dir"].map(lambda d: str(runs_root / d))), runs_root).set_index("run_dir")
    assert others.loc[F.FAILED[0], "error"] == F.FAILED[-1] and others.loc[F.RUNNING[0], "status"] == "interrupted"
    assert len(others) == 2
    todo = report.not_run(s_stats, a_stats)
    cells, rows = todo["to fill"]
    # one grid command per grid (finished runs are kept), on local GPUs then on SLURM, not one line per cell
    assert todo["command"].tolist() == [
        "make tables PRECISION=fp32\nmake tables PRECISION=fp32 " + report.provenance.SLURM_EXAMPLE,
        "make ablations PRECISION=fp32\nmake ablations PRECISION=fp32 " + report.provenance.SLURM_EXAMPLE]
    assert cells.startswith("Tables 6-10 at the paper's recipe: Table 6 (cub): densenet161; ")
    assert cells.endswith("; Table 10 (nabirds): resnet50, resnet101, densenet161")
    assert "Table 4: pair construction: Random" in rows and "Table 1" not in rows


# ------------------------------------------------------------------------------------------------ crafted files
def crafted_root(root):
    """Good runs (the demo's) beside crafted folders: {folder: what the report must say of it}."""
    F.make_runs(root, only="demo/api-")
    good = F.metrics_json({**F.DEMO_CONFIG, "seed": 5}, top1=40.0)
    crafted = {
        "deep": ("[" * 100_000 + "]" * 100_000, "nested deeper than Python can parse"),
        "huge": (json.dumps({**good, "metrics": {"top1": 10**400}}), "metrics.top1 is 1000000"),
        "string-history": (json.dumps({**good, "history": ["x"]}), "history[0] is 'x', not an object"),
        "no-epoch": (json.dumps({**good, "diagnostics": [{"rank_active": 0.5}]}), "diagnostics[0] has no epoch"),
        # integers beyond a float: Table 5's scaling, the settings' comparison and matplotlib would overflow
        "huge-n_classes": (json.dumps({**good, "config": {**good["config"], "n_classes": 10**400}}),
                           "config.n_classes is 1000000000000000000000000000000000000..., not a finite number"),
        "huge-epochs": (json.dumps({**good, "config": {**good["config"], "epochs": 10**400}}),
                        "config.epochs is 1000000000000000000000000000000000000..., not a finite number"),
        "huge-diagnostics-epoch": (json.dumps({**good, "diagnostics": [{"epoch": 10**400, "rank_active": 0.5}]}),
                                   "diagnostics[0].epoch is 1000000000000000000000000000000000000..., not a finite"),
    }
    for name, (text, _) in crafted.items():
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(text)
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "metrics.json")
    for name, lock in (("lock-x", '"x"'), ("lock-list", "[1]")):
        F.write(root, name, F.metrics_json({**F.DEMO_CONFIG, "seed": 6}, status="running"))
        (root / name / ".lock").write_text(lock)
    return {**{f"{k}/metrics.json": why for k, (_, why) in crafted.items()},
            "fifo/metrics.json": "metrics.json is a FIFO, not a file apikit wrote: skipped unread",
            "lock-x/.lock": ".lock holds '\"x\"', not a holder record", "lock-list/.lock": ".lock holds '[1]'"}


def test_the_report_names_each_crafted_folder_and_goes_on(tmp_path):
    """Deep nesting, a number beyond any float (also an integer in the config or a diagnostics epoch), a string in
    the history, diagnostics without an epoch, a FIFO, locks apikit did not write: `python -m apikit.report`
    finishes, naming each file with its reason."""
    expected = crafted_root(tmp_path / "runs")
    with pytest.warns(UserWarning, match="apikit.report: skipping"):
        report.main(["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")])
    text = (tmp_path / "out" / "README.md").read_text()
    listed = text.split("## Run files skipped or flagged")[1]
    for file, why in expected.items():
        line = next((l for l in listed.splitlines() if l.startswith(f"| {file} |")), None)
        assert line is not None and why in line, (file, line)
    with pytest.warns(UserWarning, match="apikit.report: skipping a run: .*deep/metrics.json cannot be read"):
        runs = report.collect(tmp_path / "runs")
    assert sorted(runs["run_dir"].map(lambda d: Path(d).name)) == ["lock-list", "lock-x", "seed-0", "seed-0",
                                                                    "seed-1", "seed-1", "seed-2", "seed-2", "seed-3"]
    assert set(runs.set_index("run_dir").loc[[str(tmp_path / "runs" / n) for n in ("lock-x", "lock-list")],
                                            "status"]) == {"interrupted"}
    assert "API-Net" in text and "| Baseline |" in text  # the good runs' table is there


def test_diagnostics_without_an_epoch_and_huge_numbers_do_not_stop_the_frames():
    """Rows built by hand (not read from files): entries without an epoch are left out, a huge number is no number."""
    runs = pd.DataFrame([{"run_dir": "a", "diagnostics": [{"rank_active": 0.5}, {"epoch": 1, "rank_active": 0.2,
                                                                                 "intra_distance": "x"}]}])
    frame = report.diagnostics_frame(runs)
    assert frame["epoch"].tolist() == [1] and frame["intra_distance"].isna().all()
    from apikit.report.collect import number
    assert number(10**400) is None and number(1.5) == 1.5
