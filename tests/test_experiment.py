"""`apikit/experiment.py`: parameter checks, run_dir contents, determinism, resume, and nothing lost."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback

from apikit.experiment import DEFAULTS, RunFinished, check_params, train

from conftest import make_image_folders

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("exp"), n_classes=4, n_train=6, n_valid=3, size=20)


def tiny(folders, run_dir, **kw):
    return dict(dict(dataset="folder", data_path=str(folders), size=16, resize=18, epochs=2, n_classes=2,
                     n_images=2, lr=0.01, run_dir=str(run_dir)), **kw)


@pytest.mark.parametrize("params,message", [
    (dict(mutual="foo"), "parameter mutual='foo' is not valid: choose one of 'mlp', 'sum'"),
    (dict(epochs=-1), "parameter epochs=-1 is not valid: must be >= 1"),
    (dict(epochs="3"), "parameter epochs='3' is not valid: expected int"),
    (dict(n_images=1), "parameter n_images=1 is not valid: must be >= 2"),
    (dict(dataset="imagenet"), "parameter dataset='imagenet' is not valid: choose one of 'cub'"),
    (dict(intra="random"), "Random construction takes intra='random' and inter='random' together"),
    (dict(size=100, resize=90), "parameter size=100 is not valid: the crop must not exceed resize=90"),
    (dict(precision="fp16"), "fp16 needs a CUDA GPU"),
    (dict(lr=float("nan")), "parameter lr=nan is not valid"),
    (dict(freeze_epochs=20, epochs=10), "parameter freeze_epochs=20 is not valid: must be in [0, epochs=10]"),
    (dict(learning_rate=0.1), "unknown parameter(s) learning_rate"),
    (dict(chunk_size=0), "parameter chunk_size=0 is not valid: expected None or an integer >= 1"),
])
def test_bad_parameters_are_one_clear_error(params, message):
    with pytest.raises(ValueError) as e:
        check_params(**params)
    assert message in str(e.value)


def test_defaults_are_valid_and_ints_pass_as_floats():
    p = check_params(lr=1)
    assert p["lr"] == 1.0 and isinstance(p["lr"], float) and set(p) == set(DEFAULTS)


def test_run_dir_contents(folders, tmp_path):
    rec = train(**tiny(folders, tmp_path / "run"))
    run = tmp_path / "run"
    for f in ("metrics.json", "model.pkl", "curves.png", "confusion.png"):
        assert (run / f).stat().st_size > 0
    assert not (run / "checkpoint.pth").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert m == json.loads(json.dumps(rec, default=str))
    assert m["status"] == "finished" and m["config"]["run_dir"] == str(run)
    assert [h["epoch"] for h in m["history"]] == [0, 1]
    assert m["metrics"]["n_test"] == 12 and 0 <= m["metrics"]["top1"] <= 100
    # The last epoch's logged test accuracy is the final evaluation: both are the plain CNN on the test split.
    assert m["history"][-1]["top1"] == pytest.approx(m["metrics"]["top1"], abs=1e-3)
    assert set(m["versions"]) >= {"python", "torch", "fastai", "apikit"} and m["device"]
    assert m["times"]["fit_s"] > 0
    # Pair-mining diagnostics per epoch (issue 6): every image of a class-balanced batch has an intra partner.
    assert [d["epoch"] for d in m["diagnostics"]] == [0, 1]
    assert all(d["no_intra_partner"] == 0.0 and 0 <= d["rank_active"] <= 1 for d in m["diagnostics"])


def test_same_seed_same_figures(folders, tmp_path):
    a = train(**tiny(folders, tmp_path / "a"))
    b = train(**tiny(folders, tmp_path / "b"))
    c = train(**tiny(folders, tmp_path / "c", seed=1))
    strip = lambda r: [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]]
    assert strip(a) == strip(b) and a["metrics"] == b["metrics"]
    assert strip(a) != strip(c)


def test_finished_run_is_never_overwritten(folders, tmp_path):
    train(**tiny(folders, tmp_path / "run", epochs=1))
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(RunFinished, match="already holds a finished run.*overwrite=True"):
        train(**tiny(folders, tmp_path / "run", epochs=1))
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before
    train(overwrite=True, **tiny(folders, tmp_path / "run", epochs=1, seed=3))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["seed"] == 3


def test_unwritable_run_dir(folders, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permission bits: make the path a file instead
        ro.chmod(0o700)
        ro.rmdir()
        ro.write_text("a file, not a folder")
    with pytest.raises(PermissionError, match="run_dir=.* is not writable.*choose a folder you can write to"):
        train(**tiny(folders, ro / "run"))


class Explode(Callback):
    """Make the training loss non-finite at epoch 1, batch 1."""
    order = 89
    def after_loss(self):
        if self.epoch == 1 and self.iter == 1:
            self.learn.loss_grad = self.learn.loss_grad * float("nan")


def test_non_finite_loss_stops_with_advice_and_keeps_the_checkpoint(folders, tmp_path):
    with pytest.raises(FloatingPointError, match="at epoch 1, batch 1. Lower lr"):
        train(cbs=[Explode()], **tiny(folders, tmp_path / "run"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "failed" and "FloatingPointError" in m["error"]
    assert torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=False)["epoch"] == 0


KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from fastai.callback.core import Callback
from apikit.experiment import train
class Kill(Callback):
    def after_batch(self):
        if self.epoch == 1 and self.iter == 1:
            os.kill(os.getpid(), signal.SIGKILL)
train(cbs=[Kill()], **{params!r})
"""


def test_resume_after_kill_9_matches_an_uninterrupted_run(folders, tmp_path):
    whole = train(**tiny(folders, tmp_path / "whole", epochs=3))
    params = tiny(folders, tmp_path / "killed", epochs=3)
    proc = subprocess.run([sys.executable, "-c", KILLER.format(tests=str(HERE), params=params)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(tmp_path / "killed" / "checkpoint.pth", weights_only=False)
    assert ckpt["epoch"] == 0  # killed mid-epoch 1: the last checkpoint is epoch 0
    resumed = train(**params)
    strip = lambda r: [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]]
    assert strip(resumed) == strip(whole)
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["diagnostics"] == whole["diagnostics"]


def test_an_interrupted_write_leaves_the_old_metrics_intact(tmp_path, monkeypatch):
    from apikit.experiment import write_json
    f = tmp_path / "metrics.json"
    write_json(f, {"status": "finished", "metrics": {"top1": 50.0}})
    before = f.read_bytes()

    def crash(self, text, *a, **k):  # the disk fills up half way through the write
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise OSError("No space left on device")
    monkeypatch.setattr(Path, "write_text", crash)
    with pytest.raises(OSError):
        write_json(f, {"status": "finished", "metrics": {"top1": 99.0}, "history": list(range(1000))})
    assert f.read_bytes() == before and json.loads(before)["metrics"]["top1"] == 50.0


RUN = """
import json, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(2)
from apikit.experiment import train
r = train(**{params!r})
print(json.dumps(dict(history=[{{k: v for k, v in h.items() if k != "time_s"}} for h in r["history"]],
                      metrics=r["metrics"])))
"""


def test_same_seed_same_figures_across_processes_with_two_threads(tmp_path):
    """Separate processes, two threads each (as the demo's papermill kernels run): still identical figures.

    The batch is large enough (80 pair rows x 512 features) for a CPU to accumulate the gradient of
    `feats[idx]` in parallel, which made two seeded runs differ before the callback used index_select.
    """
    data = make_image_folders(tmp_path / "data", n_classes=4, n_train=12, n_valid=2, size=20)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = [subprocess.run([sys.executable, "-c", RUN.format(tests=str(HERE), params=tiny(
        data, tmp_path / f"p{k}", n_classes=4, n_images=10))], capture_output=True, text=True, env=env,
        check=True).stdout.strip().splitlines()[-1] for k in range(2)]
    assert json.loads(out[0]) == json.loads(out[1])
