"""`apikit/viz/run.py` and the thin `notebooks/visualize.ipynb` on the tiny runs of tests/viz_fixtures.py."""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apikit import viz
from viz_fixtures import ROOT, RESIZE, SIZE, SYN, finish_run

NOTEBOOK = ROOT / "notebooks" / "visualize.ipynb"
TINY = dict(dataset="synthetic", synthetic=SYN, n_pairs=1, k=3, road_percentiles=[50], bs=12)
FIGURES = ["gates_pair1.png", "gradcam.png", "part_hits.png"]


def from_root(path) -> str:
    """`path` relative to the project root (with ".." where needed), as a user would type it there."""
    return os.path.relpath(path, ROOT)


def check_outputs(out: Path, runs) -> dict:
    """What every run writes, checked on disk; returns viz.json's dict."""
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES + ["viz.json"])
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    record = json.loads((out / "viz.json").read_text())
    assert {"pairs", "road", "part_hit_rate", "part_hits_detail", "figures", "gate_ranking"} <= set(record)
    assert record["figures"] == FIGURES and record["gate_ranking"] == "pre-sigmoid x_m * x_i (Eq. 2)"
    assert len(record["pairs"]) == 1 and (record["size"], record["resize"]) == (SIZE, RESIZE)
    assert record["api_run"] == str((runs["tmp"] / "runs" / "api").resolve()) and record["out_dir"] == str(out)
    for pair in record["pairs"]:
        assert len(pair["channels_a"]) == len(pair["channels_b"]) == 3 and pair["fmap_hw"] == [2, 2]
        assert all(math.isfinite(g) for g in pair["gates_a"] + pair["gates_b"] + pair["logits_a"] + pair["logits_b"])
        assert pair["logits_a"] == sorted(pair["logits_a"], reverse=True)  # the ranking
        assert pair["ties_a"] >= 0 and pair["ties_b"] >= 0 and isinstance(pair["tie_note"], str)
    for name in ("api", "baseline"):
        assert math.isfinite(record["road"][name])
        assert 0 <= record["road"][f"{name}_empty_maps"] <= 2
    hits = record["part_hit_rate"]
    for key in ("api_gate", "baseline_gate", "api_own", "baseline_own", "chance"):
        assert 0 <= hits[key] <= 1
    for key in ("api_gate", "baseline_gate"):
        lo, hi = hits[f"{key}_ci95"]
        assert lo <= hits[key] <= hi
    assert hits["interval"].startswith("95% Student t interval over images")
    return record


def test_notebook_parameters_are_run_s():
    """The template itself is checked with the others in tests/test_notebooks.py."""
    import papermill
    params = papermill.inspect_notebook(NOTEBOOK)
    assert list(params) == list(viz.VISUALIZE_DEFAULTS)
    for name, default in viz.VISUALIZE_DEFAULTS.items():
        assert eval(params[name]["default"]) == default, name
    assert all(p["help"] for p in params.values())


def test_visualize_notebook_parameters_equal_the_schema():
    """visualize.ipynb's parameters cell: the schema's names, defaults, types and help, in order."""
    import papermill
    from apikit.schema import parameters_cell
    from apikit.data.sources import NAMES
    from apikit.viz.run import VISUALIZE_PARAMS
    nb = papermill.inspect_notebook(NOTEBOOK)
    assert list(nb) == [p.name for p in VISUALIZE_PARAMS]
    assert viz.VISUALIZE_DEFAULTS == {p.name: p.default for p in VISUALIZE_PARAMS}
    for p in VISUALIZE_PARAMS:
        assert eval(nb[p.name]["default"]) == p.default and nb[p.name]["help"] == p.help, p.name
        assert nb[p.name]["inferred_type_name"] == p.annotation.strip('"'), p.name
    assert " | ".join(NAMES) in nb["dataset"]["help"]  # the data set list is the data sources'
    assert (parameters_cell(["k"], params=VISUALIZE_PARAMS)
            == "k: int = 5  # top gate channels per image (the paper shows 5)")


def test_run_resolves_relative_paths_against_the_project_root(runs, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"  # where a kernel might start; nothing is read or written here
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "visualize"
    record = viz.run(baseline_run=from_root(runs["tmp"] / "runs" / "baseline"),
                     api_run=from_root(runs["tmp"] / "runs" / "api"), data_path=from_root(runs["root"]),
                     out_dir=from_root(out), **TINY)
    assert record == check_outputs(out, runs)
    assert not any(elsewhere.iterdir())
    printed = capsys.readouterr().out
    for line in (f"baseline_run: {(runs['tmp'] / 'runs' / 'baseline').resolve()}",
                 f"api_run: {(runs['tmp'] / 'runs' / 'api').resolve()}", f"out_dir: {out.resolve()}"):
        assert printed.count(line) == 1
    assert "part hits, api_gate: " in printed and "95% t interval" in printed


@pytest.mark.parametrize("metrics, message", [
    ({"weights_sha256": "0" * 64}, "it was left by another run"),
    ({}, "records no model fingerprint"),
    ({"model_sha256": "0" * 64}, r"records no model fingerprint \(weights_sha256\)"),  # model.pkl's is not model.pth's
])
def test_run_refuses_a_model_its_run_did_not_write(runs, tmp_path, metrics, message):
    api_run = tmp_path / "api"
    shutil.copytree(runs["tmp"] / "runs" / "api", api_run)
    (api_run / "metrics.json").write_text(json.dumps({"config": {"size": SIZE, "resize": RESIZE}, **metrics}))
    with pytest.raises(ValueError, match=message):
        viz.run(baseline_run=str(runs["tmp"] / "runs" / "baseline"), api_run=str(api_run),
                data_path=str(runs["root"]), out_dir=str(tmp_path / "out"), **TINY)
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("record, says", [
    ({"status": "interrupted", "epochs_done": 2}, "interrupted after epoch 2 of 6, before its model was saved; run the "
                                                  "same training command again to resume it, then visualize it."),
    ({"status": "interrupted", "epochs_done": 0}, "interrupted before its first epoch finished, before its model was "
                                                  "saved; run the same training command again to resume it, then "
                                                  "visualize it."),
    ({"status": "running", "epochs_done": 3}, "interrupted after epoch 3 of 6"),  # killed: nothing holds its lock
    ({"status": "failed", "epochs_done": 1, "error": "Traceback ...\nRuntimeError: out of memory"},
     "failed before its model was saved (RuntimeError: out of memory); fix that and run the same training command "
     "again."),
])
def test_a_run_that_did_not_finish_is_named_for_what_it_is(tmp_path, monkeypatch, record, says):
    """visualize on a run stopped before its model was written: what happened to it and what to do, in one line,
    also where a model file of an earlier run of that folder is still there."""
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pkl").write_bytes(b"left by the folder's earlier run")
    (run / "metrics.json").write_text(json.dumps({**record, "config": {"epochs": 6, "size": SIZE, "resize": RESIZE}}))
    with pytest.raises(FileNotFoundError) as e:
        viz.run(baseline_run=str(run), api_run=str(run), out_dir=str(tmp_path / "out"), **TINY)
    assert e.value._render_traceback_() == [f"NoModel: {e.value}"]  # one line in the notebook
    assert str(e.value).startswith(f"{run}: {says}") and "fingerprint" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_run_still_training_is_named_so(tmp_path, monkeypatch):
    from apikit.runs import run_lock
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "running", "epochs_done": 3, "config": {"epochs": 6}}))
    with run_lock(run), pytest.raises(FileNotFoundError) as e:
        viz.run(baseline_run=str(run), api_run=str(run), out_dir=str(tmp_path / "out"), **TINY)
    assert e.value._render_traceback_() == [f"NoModel: {run}: still training (epoch 4 of 6); its model is saved when "
                                            "it finishes: visualize it then."]


def test_run_refuses_a_baseline_as_api_net_and_a_missing_model(runs, tmp_path):
    base = str(runs["tmp"] / "runs" / "baseline")
    with pytest.raises(ValueError, match="holds a model without an API module: is it the Baseline"):
        viz.run(baseline_run=base, api_run=base, data_path=str(runs["root"]), out_dir=str(tmp_path / "out"), **TINY)
    with pytest.raises(FileNotFoundError, match="holds no model.pth") as e:
        viz.run(baseline_run=base, api_run=str(tmp_path), data_path=str(runs["root"]),
                out_dir=str(tmp_path / "out"), **TINY)
    assert e.value._render_traceback_() == [f"NoModel: {tmp_path} holds no model.pth: point it at the run_dir of a "
                                            "finished training run."]  # one line in the notebook


def test_run_refuses_runs_trained_on_other_classes(runs, tmp_path):
    other = {**SYN, "n_classes": 3}
    with pytest.raises(ValueError, match="was trained on other classes than 'synthetic'"):
        viz.run(baseline_run=str(runs["tmp"] / "runs" / "baseline"), api_run=str(runs["tmp"] / "runs" / "api"),
                data_path=str(tmp_path / "other"), out_dir=str(tmp_path / "out"), **{**TINY, "synthetic": other})


def test_run_needs_the_crop_when_metrics_json_lacks_it(runs, tmp_path):
    api_run = tmp_path / "api"
    shutil.copytree(runs["tmp"] / "runs" / "api", api_run)
    finish_run(api_run, size=None, resize=None)
    with pytest.raises(ValueError, match="does not record them: pass both"):
        viz.run(baseline_run=str(runs["tmp"] / "runs" / "baseline"), api_run=str(api_run), out_dir=str(tmp_path),
                **TINY)


def test_the_runs_input_statistics_feed_and_unnormalise_the_images(runs, tmp_path):
    """Runs trained with EfficientNet-Lite's statistics (mean = std = 0.5, in metrics.json) are fed and drawn with
    them; two runs with other statistics are refused."""
    from apikit.data import get_dls
    from apikit.model import input_stats
    from apikit.viz.batches import display_image
    lite = {"name": "inception", "mean": [0.5] * 3, "std": [0.5] * 3, "source": "test"}
    for name in ("api", "baseline"):
        shutil.copytree(runs["tmp"] / "runs" / name, tmp_path / name)
        rec = json.loads((tmp_path / name / "metrics.json").read_text())
        (tmp_path / name / "metrics.json").write_text(json.dumps({**rec, "normalization": lite}))
    record = viz.run(baseline_run=str(tmp_path / "baseline"), api_run=str(tmp_path / "api"),
                     data_path=str(runs["root"]), out_dir=str(tmp_path / "out"), **TINY)
    assert record["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    dls = get_dls("synthetic", runs["root"], size=SIZE, resize=RESIZE, n_classes=2, n_images=2, device="cpu",
                  synthetic=SYN, stats=([0.5] * 3, [0.5] * 3))
    x = dls.valid.one_batch()[0][:1]
    assert np.allclose(display_image(x, dls), (x[0] * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy(), atol=1e-6)
    rec = json.loads((tmp_path / "baseline" / "metrics.json").read_text())
    for stats, refused in ((input_stats("resnet18", False), "trained with other input statistics"),
                           ({}, "does not record the input statistics it was trained with")):
        (tmp_path / "baseline" / "metrics.json").write_text(json.dumps({**rec, "normalization": stats}))
        with pytest.raises(ValueError, match=refused):
            viz.run(baseline_run=str(tmp_path / "baseline"), api_run=str(tmp_path / "api"),
                    data_path=str(runs["root"]), out_dir=str(tmp_path / "out2"), **TINY)


@pytest.mark.parametrize("params, message", [
    (dict(colour="red"), "unknown parameter"),
    (dict(n_pair=1), r"unknown parameter\(s\) n_pair \(did you mean n_pairs\?\); valid ones: baseline_run"),
    (dict(dataset="imagenet"), "parameter dataset='imagenet' is not valid: choose one of 'cub', 'aircraft'"),
    (dict(dataset="cub", synthetic={"n_classes": 4}), "only applies to dataset='synthetic'"),
    (dict(synthetic=[]), r"parameter synthetic=\[\] is not valid: expected dict or None\."),
    (dict(k=0), "parameter k=0 is not valid: must be >= 1"),
    (dict(size=True), "parameter size=True is not valid: expected int or None"),
    (dict(radius=0), "parameter radius=0.0 is not valid: must be a finite number > 0"),
    (dict(road_percentiles=[0, 50]), r"parameter road_percentiles=\[0, 50\] is not valid: expected a non-empty list of "
                                     r"numbers in \(0, 100\)"),
    (dict(n_hit_images=1), "parameter n_hit_images=1 is not valid: expected None or an integer >= 2"),
    (dict(api_run=""), "parameter api_run='' is not valid: expected a folder path"),
])
def test_bad_parameters_stop_before_any_work(params, message):
    """The schema's types, choices and ranges (schema.check_against) in the run parameters' one-line form."""
    with pytest.raises(ValueError, match=message):
        viz.check_visualize_params(**params)


def test_notebook_runs_with_papermill_from_notebooks(runs, python3_kernel, tmp_path, caplog):
    """python3_kernel (conftest.py): a `python3` kernelspec running this interpreter, first on JUPYTER_PATH.
    The kernel starts in notebooks/, as JupyterLab starts it; the relative paths still mean the project root.
    With --log-output each stage's progress is a few lines with its counts and times, never a line per redraw."""
    import logging
    import re
    import papermill
    out = tmp_path / "visualize"
    caplog.set_level(logging.INFO, logger="papermill")
    nb = papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name=python3_kernel, progress_bar=False, log_output=True,
        cwd=str(ROOT / "notebooks"),
        # the crop and the data (dataset, data_path, synthetic) are left to the notebook, which reads them from
        # the API-Net run's metrics.json, as after `make demo`
        parameters=dict(baseline_run=from_root(runs["tmp"] / "runs" / "baseline"),
                        api_run=from_root(runs["tmp"] / "runs" / "api"), out_dir=from_root(out),
                        **{k: v for k, v in TINY.items() if k not in ("dataset", "synthetic")}))
    check_outputs(out, runs)
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) == len(FIGURES)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "insecure pickle" not in printed  # checked by fingerprint: fastai's warning is not actionable here
    log = [line for r in caplog.records if r.name == "papermill" for line in r.getMessage().splitlines()]
    n_test = len(json.loads((out / "viz.json").read_text())["part_hits_detail"]["api_gate"]["per_image"])
    stages = [("the Baseline's confusions on the test split", "images"), ("Fig. 3", "pairs"),
              ("Grad-CAM and ROAD on 2 images", "models"), ("part hits, API-Net's feature maps", "images"),
              ("part hits, the Baseline's feature maps", "images")]
    for stage, unit in stages:
        bar = [line for line in log if line.startswith(f"{stage}: ")]
        assert 2 <= len(bar) <= 11, bar
        assert re.fullmatch(rf"{re.escape(stage)}: 0/\d+ {unit}", bar[0]), bar
        assert re.fullmatch(rf"{re.escape(stage)}: (\d+)/\1 {unit} \(100%\) in \d\d:\d\d", bar[-1]), bar
    assert any(line.startswith(f"part hits, API-Net's feature maps: {n_test}/{n_test} images") for line in log)
    assert not any("HTML object" in line or "IProgress" in line for line in log)
    assert len(log) < 80  # every line the run printed, papermill's own included


# ---------------------------------------------------------------- pickle trust

PAYLOAD_MARK = "/tmp/apikit-viz-payload-ran"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PAYLOAD_MARK}",))


def test_a_run_is_loaded_through_its_weights_and_nothing_is_unpickled(runs, tmp_path):
    """model.pth (weights_only) and the architecture in metrics.json: a model.pkl that would run code is not read."""
    import pickle
    import warnings
    import torch
    from apikit.record import RunRecord
    from apikit.record import model_fingerprint
    from apikit.viz.run import _load
    if os.path.exists(PAYLOAD_MARK):
        os.unlink(PAYLOAD_MARK)
    api_run = tmp_path / "api"
    shutil.copytree(runs["tmp"] / "runs" / "api", api_run)
    (api_run / "model.pkl").write_bytes(pickle.dumps(Payload()))
    rec = json.loads((api_run / "metrics.json").read_text())
    (api_run / "metrics.json").write_text(json.dumps({**rec, "model_sha256": model_fingerprint(api_run / "model.pkl")}))
    record = RunRecord.read(api_run)
    model = record.model()
    assert model == api_run / "model.pth"
    vocab = [str(v) for v in runs["dls"].vocab]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learn = _load("api_run", record, model, vocab, "synthetic", runs["root"], runs["dls"])
    assert not os.path.exists(PAYLOAD_MARK) and not [w for w in caught if "pickle" in str(w.message)]
    want = runs["api"].model.state_dict()
    assert hasattr(learn.model, "api") and all(torch.equal(v.cpu(), want[k].cpu())
                                               for k, v in learn.model.state_dict().items())
    (api_run / "model.pth").write_bytes(b"another model")
    with pytest.raises(ValueError, match="model.pth is not the model of .*fingerprints differ"):
        RunRecord.read(api_run).model()


@pytest.mark.parametrize("weights_recorded", [False, True])
def test_a_run_without_model_pth_is_refused_and_its_model_pkl_never_read(runs, tmp_path, monkeypatch,
                                                                        weights_recorded):
    """A run from an apikit before model.pth (or one whose model.pth is gone): one line naming what is missing and
    the fix; its model.pkl, fingerprint and all, is never unpickled."""
    import pickle
    from apikit.record import model_fingerprint
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    if os.path.exists(PAYLOAD_MARK):
        os.unlink(PAYLOAD_MARK)
    base = tmp_path / "baseline"
    shutil.copytree(runs["tmp"] / "runs" / "baseline", base)
    (base / "model.pkl").write_bytes(pickle.dumps(Payload()))
    if weights_recorded:  # a run whose model.pth is gone since
        finish_run(base, arch="resnet18", api=False, dataset="synthetic")
        (base / "model.pth").unlink()
    else:  # a run from before model.pth: its metrics.json records model.pkl's fingerprint alone
        (base / "model.pth").unlink()
        finish_run(base, arch="resnet18", api=False, dataset="synthetic")
    rec = json.loads((base / "metrics.json").read_text())
    assert rec["model_sha256"] == model_fingerprint(base / "model.pkl")
    assert ("weights_sha256" in rec) == weights_recorded
    with pytest.raises(FileNotFoundError) as e:
        viz.run(baseline_run=str(base), api_run=str(runs["tmp"] / "runs" / "api"), data_path=str(runs["root"]),
                out_dir=str(tmp_path / "out"), **TINY)
    assert e.value._render_traceback_() == [
        f"NoModel: {base} holds model.pkl but no model.pth: apikit loads a run through its weights alone (model.pth, "
        "read with weights_only=True), never through model.pkl; re-run the training (overwrite=True) with this "
        "apikit."]
    assert not os.path.exists(PAYLOAD_MARK) and not (tmp_path / "out").exists()


def test_figures_go_beside_the_api_run_by_default_and_coarse_maps_are_named(runs, tmp_path, capsys):
    """out_dir None: <api_run>/visualize (never a tracked folder); 2 x 2 maps are named with the reason, in one plain
    line (no Python warning, which would show the kernel's file and line)."""
    import warnings
    for name in ("api", "baseline"):
        shutil.copytree(runs["tmp"] / "runs" / name, tmp_path / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = viz.run(baseline_run=str(tmp_path / "baseline"), api_run=str(tmp_path / "api"),
                         data_path=str(runs["root"]), **TINY)
    assert not [w for w in caught if "feature maps" in str(w.message)]
    said = [line for line in capsys.readouterr().out.splitlines() if "last-stage feature maps" in line]
    assert said == ["warning: the runs' last-stage feature maps are 2 x 2 at size=64: a peak chosen at random lands "
                    "within radius 1.0 of a part almost as often as a gate's does, so Fig. 3 and the part hits say "
                    "little; train at a crop that gives 4 x 4 or more (size >= 97 for stride-32 backbones)"]
    assert record["out_dir"] == str(tmp_path / "api" / "visualize")
    assert (tmp_path / "api" / "visualize" / "viz.json").is_file()


def test_runs_of_two_settings_are_refused_naming_the_difference(runs, tmp_path):
    for name in ("api", "baseline"):
        shutil.copytree(runs["tmp"] / "runs" / name, tmp_path / name)
    rec = json.loads((tmp_path / "baseline" / "metrics.json").read_text())
    rec["config"].update(epochs=2)
    (tmp_path / "baseline" / "metrics.json").write_text(json.dumps(rec))
    rec = json.loads((tmp_path / "api" / "metrics.json").read_text())
    rec["config"].update(epochs=6)
    (tmp_path / "api" / "metrics.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"trained in other settings \(epochs 2 -> 6\); visualize compares a "
                                         "Baseline and an API-Net of one setting") as e:
        viz.run(baseline_run=str(tmp_path / "baseline"), api_run=str(tmp_path / "api"), data_path=str(runs["root"]),
                out_dir=str(tmp_path / "out"), **TINY)
    assert not (tmp_path / "out").exists()
    assert e.value._render_traceback_() == [  # one line in the notebook
        "Refused: baseline_run and api_run were trained in other settings (epochs 2 -> 6); visualize compares a "
        "Baseline and an API-Net of one setting: pass two such runs (e.g. the same seed of one ablation batch)"]
    for name, where in (("baseline", "/data/a"), ("api", "/data/b")):  # two image folders: two data sets
        rec = json.loads((tmp_path / name / "metrics.json").read_text())
        rec["config"].update(epochs=6, dataset="folder", data_path=where)
        (tmp_path / name / "metrics.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"trained in other settings \(data_path '/data/a' -> '/data/b'\)"):
        viz.run(baseline_run=str(tmp_path / "baseline"), api_run=str(tmp_path / "api"), data_path=str(runs["root"]),
                out_dir=str(tmp_path / "out"), **TINY)
