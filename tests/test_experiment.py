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

from apikit.experiment import RunFinished, train
from apikit.record import model_fingerprint

from conftest import make_image_folders

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("exp"), n_classes=4, n_train=6, n_valid=3, size=20)


def tiny(folders, run_dir, **kw):
    return dict(dict(dataset="folder", data_path=str(folders), size=16, resize=18, epochs=2, n_classes=2,
                     n_images=2, lr=0.01, run_dir=str(run_dir)), **kw)


def test_run_dir_contents(folders, tmp_path):
    rec = train(**tiny(folders, tmp_path / "run"))
    run = tmp_path / "run"
    for f in ("metrics.json", "model.pkl", "model.pth", "curves.png", "confusion.png"):
        assert (run / f).stat().st_size > 0
    assert not (run / "checkpoint.pth").exists()
    assert sorted(p.name for p in run.iterdir()) == ["confusion.png", "curves.png", "metrics.json", "model.pkl",
                                                      "model.pth"]  # no .lock, no temporary or test file left
    m = json.loads((run / "metrics.json").read_text())
    assert m == json.loads(json.dumps(rec, default=str))
    assert m["status"] == "finished" and m["config"]["run_dir"] == str(run)
    assert m["weights_sha256"] == model_fingerprint(run / "model.pth")
    assert m["model_sha256"] == model_fingerprint(run / "model.pkl") and m["weights_loaded"] is None
    assert [h["epoch"] for h in m["history"]] == [1, 2]  # counted from 1, as the log and the paper
    assert m["metrics"]["n_test"] == 12 and 0 <= m["metrics"]["top1"] <= 100
    # The last epoch's logged test accuracy is the final evaluation: both are the plain CNN on the test split.
    assert m["history"][-1]["top1"] == pytest.approx(m["metrics"]["top1"], abs=1e-3)
    assert set(m["versions"]) >= {"python", "torch", "fastai", "apikit"} and m["device"]
    assert m["times"]["fit_s"] > 0
    # Pair-mining diagnostics per epoch: every image of a class-balanced batch has an intra partner.
    assert [d["epoch"] for d in m["diagnostics"]] == [1, 2]
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
    lines = []  # the same parameters again: kept, said in one line, no error
    again = train(log=lines.append, **tiny(folders, tmp_path / "run", epochs=1))
    top1 = json.loads(before)["metrics"]["top1"]
    assert lines[-1] == f"{tmp_path / 'run'}: already finished: kept (top-1 {top1:.1f}%)" and again == json.loads(before)
    with pytest.raises(RunFinished, match="already holds a finished run.*with other parameters: seed 0 -> 5.*"
                                          "overwrite=True"):
        train(**tiny(folders, tmp_path / "run", epochs=1, seed=5))
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
    assert torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["epoch"] == 0


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
    ckpt = torch.load(tmp_path / "killed" / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 0  # killed mid-epoch 1: the last checkpoint is epoch 0
    resumed = train(**params)
    strip = lambda r: [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]]
    assert strip(resumed) == strip(whole)
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["diagnostics"] == whole["diagnostics"]


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


class InterruptAfterFit(Callback):
    """Ctrl-C after the last epoch's checkpoint, before evaluation and export."""
    order = 99
    def after_fit(self):
        raise KeyboardInterrupt


class InterruptAtEpoch(Callback):
    """Ctrl-C at the start of epoch `k` (the checkpoint of epoch k-1 is on disk)."""
    order = 99
    def __init__(self, k):
        self.k = k
    def before_epoch(self):
        if self.epoch == self.k:
            raise KeyboardInterrupt


def test_resume_after_the_final_checkpoint_restores_the_trained_weights(folders, tmp_path):
    """A crash after the last checkpoint must not evaluate and export an untrained model."""
    whole = train(**tiny(folders, tmp_path / "whole"))
    params = tiny(folders, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(cbs=[InterruptAfterFit()], **params)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and "KeyboardInterrupt" in m["error"]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1
    resumed = train(**params)
    assert resumed["metrics"]["top1"] == pytest.approx(resumed["history"][-1]["top1"], abs=1e-3)
    assert resumed["metrics"] == whole["metrics"]
    from fastai.learner import load_learner
    exported = load_learner(tmp_path / "run" / "model.pkl").model.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in ckpt["model"].items())
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_final_and_best_epoch_are_both_recorded(folders, tmp_path):
    r = train(**tiny(folders, tmp_path / "run", epochs=3))
    tops = [h["top1"] for h in r["history"]]
    assert r["metrics"]["best_top1"] == max(tops) and r["metrics"]["best_epoch"] == tops.index(max(tops)) + 1
    assert r["metrics"]["top1"] == pytest.approx(tops[-1], abs=1e-3)


def test_a_folder_in_use_is_refused_at_once(folders, tmp_path):
    from apikit.runs import RunInUse, run_lock
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        with pytest.raises(RunInUse, match=f"{run} is in use by another run \\(pid {os.getpid()}"):
            train(**tiny(folders, run))
    assert not (run / "metrics.json").exists()


def test_corrupt_metrics_is_reported_and_replaced_with_overwrite(folders, tmp_path):
    from apikit.runs import CorruptRunFile
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(CorruptRunFile, match="metrics.json cannot be read.*overwrite=True"):
        train(**tiny(folders, run, epochs=1))
    assert train(overwrite=True, **tiny(folders, run, epochs=1))["status"] == "finished"


def test_truncated_checkpoint_names_the_file_and_the_way_out(folders, tmp_path):
    from apikit.runs import CorruptRunFile
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cbs=[InterruptAtEpoch(1)], **tiny(folders, run))
    data = (run / "checkpoint.pth").read_bytes()
    (run / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptRunFile, match="checkpoint.pth cannot be read.*delete it.*overwrite=True"):
        train(**tiny(folders, run))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PAYLOAD_MARK}",))


PAYLOAD_MARK = "/tmp/apikit-payload-ran"


def test_a_crafted_checkpoint_cannot_run_code(folders, tmp_path):
    from apikit.runs import CorruptRunFile
    Path(PAYLOAD_MARK).unlink(missing_ok=True)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {}, "epoch": 0, "x": Payload()}, run / "checkpoint.pth")
    with pytest.raises(CorruptRunFile):
        train(**tiny(folders, run))
    assert not Path(PAYLOAD_MARK).exists()


def test_a_moved_run_dir_resumes(folders, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(cbs=[InterruptAtEpoch(1)], **tiny(folders, tmp_path / "a"))
    (tmp_path / "a").rename(tmp_path / "b")
    lines = []
    r = train(log=lines.append, **tiny(folders, tmp_path / "b"))
    assert "resuming after epoch 1 of 2 from checkpoint.pth" in lines and r["status"] == "finished"


def test_bad_cli_parameters_leave_no_run_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "apikit.experiment", "--lr", "-1", "--run-dir", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "parameter lr=-1.0 is not valid" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_top5_is_recorded_every_epoch(tmp_path):
    """fastai's recorder names the metric `top5`, so every epoch row has it (more than 5 classes)."""
    data = make_image_folders(tmp_path / "six", n_classes=6, n_train=4, n_valid=2, size=16)
    r = train(**tiny(data, tmp_path / "run", epochs=1, n_classes=3))
    assert r["history"][0]["top5"] is not None
    assert r["history"][0]["top5"] == pytest.approx(r["metrics"]["top5"], abs=1e-3) and r["metrics"]["top5"] >= r["metrics"]["top1"]


def test_training_leaves_the_kernels_matplotlib_backend(folders, tmp_path):
    """Run figures are drawn without pyplot state, so a kernel's inline backend stays as it was."""
    import matplotlib
    matplotlib.use("svg")  # a stand-in for the notebook kernel's inline backend
    try:
        train(**tiny(folders, tmp_path / "run", epochs=1))
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use("Agg")


def test_test_every_skips_the_evaluations_between(folders, tmp_path):
    """test_every=2 over 3 epochs: the test split after epochs 2 and 3 only; skipped epochs record None, never a
    stale value; 0: after the last epoch only."""
    m = train(**tiny(folders, tmp_path / "two", epochs=3, test_every=2))
    assert [h["top1"] is None for h in m["history"]] == [True, False, False]
    assert [h["valid_loss"] is None for h in m["history"]] == [True, False, False]
    assert all(h["train_loss"] is not None for h in m["history"])
    assert m["history"][-1]["top1"] == pytest.approx(m["metrics"]["top1"], abs=1e-3)
    assert m["metrics"]["best_epoch"] in (2, 3)
    lines = []
    last = train(log=lines.append, **tiny(folders, tmp_path / "last", epochs=3, test_every=0))
    assert [h["top1"] is None for h in last["history"]] == [True, True, False]
    # One line per epoch; the last carries the final evaluation's figures, not dashes beside a table that has them.
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert "test loss —  top-1 —" in epochs[0] and "test loss —" not in epochs[2] and "top-1 —" not in epochs[2]
    f = last["metrics"]
    assert f"test loss {f['valid_loss']:.4f}  top-1 {f['top1']:.2f}%" in epochs[2]
    assert (tmp_path / "last" / "curves.png").stat().st_size > 0
    with pytest.raises(ValueError, match="test_every=-1 is not valid: must be >= 0"):
        train(**tiny(folders, tmp_path / "bad", test_every=-1))


def test_a_timm_backbone_is_fed_its_own_statistics(folders, tmp_path):
    """EfficientNet-Lite (timm's pretrained_cfg: mean = std = 0.5): recorded in metrics.json and used by the data."""
    from fastai.learner import load_learner
    m = train(**tiny(folders, tmp_path / "lite", arch="tf_efficientnet_lite0", size=32, resize=36, epochs=1))
    assert m["normalization"]["mean"] == [0.5] * 3 and m["normalization"]["std"] == [0.5] * 3
    assert m["normalization"]["name"] == "inception"
    learn = load_learner(tmp_path / "lite" / "model.pkl")
    norm = [t for t in learn.dls.after_batch.fs if type(t).__name__ == "Normalize"]
    assert len(norm) == 1 and torch.allclose(norm[0].mean.flatten().cpu(), torch.tensor([0.5] * 3))
    r18 = json.loads((tmp_path / "lite" / "metrics.json").read_text())["normalization"]
    assert r18 == m["normalization"]
    assert train(**tiny(folders, tmp_path / "r18", epochs=1))["normalization"]["name"] == "imagenet"


def test_the_checked_parameters_reach_the_functions_by_their_names():
    """_train gives get_dls, api_learner and fit_paper the parameters their signatures name; it uses the rest itself."""
    from fastai.learner import Learner
    from apikit.schema import DEFAULTS
    from apikit.data import get_dls
    from apikit.experiment import _taken_by
    from apikit.learner import api_learner
    taken = {fn.__name__: set(_taken_by(fn, DEFAULTS)) for fn in (get_dls, api_learner, Learner.fit_paper)}
    assert taken["get_dls"] == {"size", "resize", "n_classes", "n_images", "download", "cache", "synthetic"}
    assert taken["fit_paper"] == {"epochs", "lr", "freeze_epochs", "test_every"}
    assert {"mutual", "gate", "intra", "inter", "mining", "margin", "rank_weight", "api", "opt"} <= taken["api_learner"]
    # dataset and data_path are get_dls' first two arguments, wd goes to the Learner, normalize to input_stats
    assert set(DEFAULTS) - set().union(*taken.values()) == {"dataset", "data_path", "normalize", "wd", "seed",
                                                            "run_dir"}


# ---------------------------------------------------------------- races, full disks, run folders

def _train_when_the_other_does(params, barrier, outcomes):
    """One process: train() on the shared run_dir at the same instant as the other."""
    from apikit.runs import RunInUse
    barrier.wait()
    try:
        outcomes.put(("trained", train(log=lambda line: None, **params)["status"]))
    except (RunInUse, RunFinished) as e:
        outcomes.put((type(e).__name__, str(e)))
    except BaseException as e:  # reported to the test, which names it
        outcomes.put(("error", f"{type(e).__name__}: {e}"))


def test_two_runs_started_together_on_one_folder_train_it_once(folders, tmp_path):
    """Two train() calls at the same instant on one run_dir: exactly one trains, the other is refused naming the
    holder (and no shared test file gives a false "not writable"). 2 trials here; benchmarks/bench_races.py runs 12."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    for trial in range(2):
        run = tmp_path / f"run{trial}"
        barrier, outcomes = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_train_when_the_other_does, args=(tiny(folders, run, epochs=1), barrier, outcomes))
                 for _ in range(2)]
        for p in procs:
            p.start()
        got = sorted(outcomes.get(timeout=300) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert [g[0] for g in got].count("trained") == 1, got
        other = next(g for g in got if g[0] != "trained")
        refused = other[0] == "RunInUse" and "is in use by another run (pid" in other[1]
        assert refused or other[0] == "RunFinished", got
        m = json.loads((run / "metrics.json").read_text())
        assert m["status"] == "finished" and [h["epoch"] for h in m["history"]] == [1]


def _mount_tmpfs(path, size):
    path.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if out.returncode:
        pytest.skip(f"mounting a {size} tmpfs is not allowed here ({out.stderr.strip()}); CI runs the tests as root")


def test_a_full_disk_is_recorded_as_one(folders, tmp_path):
    """A run on a 3 MB filesystem: its first checkpoint (45 MB) fills it, torch says "unexpected pos". metrics.json
    says failed, "the disk is full", and no temporary file is left or keeps its space."""
    import shutil
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "3m")
    try:
        with pytest.raises(OSError, match="the disk is full"):
            train(**tiny(folders, disk / "run", epochs=1))
        m = json.loads((disk / "run" / "metrics.json").read_text())
        assert m["status"] == "failed" and m["error"].startswith("the disk is full") and "unexpected pos" in m["error"]
        assert sorted(p.name for p in (disk / "run").iterdir()) == ["metrics.json"]
        assert shutil.disk_usage(disk).free > 2 << 20  # the failed write's space is free again
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_is_recognised_whatever_the_writer_raised(folders, tmp_path, monkeypatch):
    """The same without a small filesystem: torch's RuntimeError on a disk with no space left reads as a full disk."""
    import shutil
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        if "checkpoint.pth" in str(f):
            Path(f).write_bytes(b"PK" * 100)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    with pytest.raises(OSError, match="the disk is full"):
        train(**tiny(folders, tmp_path / "run", epochs=1))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "failed" and "unexpected pos" in m["error"]
    assert m["error"].startswith(f"the disk is full ({tmp_path / 'run' / 'checkpoint.pth'}): free space and re-run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]


def test_a_full_disk_while_drawing_the_generated_set_names_the_data_root_not_the_run_dir(tmp_path, monkeypatch):
    import errno
    from PIL import Image as PILImage
    from apikit.runs import DiskFull
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "data"))
    save = PILImage.Image.save

    def full(self, fp, *args, **kwargs):
        if ".tmp" in str(fp):  # the set's images, drawn into a temporary sibling; not the run's figures
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)
    monkeypatch.setattr(PILImage.Image, "save", full)
    run = tmp_path / "run"
    with pytest.raises(DiskFull, match=f"the generated set could not be drawn into {tmp_path / 'data'}/synthetic-"):
        train(dataset="synthetic", synthetic=dict(n_classes=2, n_train=2, n_test=1, size=16), n_classes=2,
              n_images=2, size=16, resize=16, epochs=1, run_dir=str(run))
    error = json.loads((run / "metrics.json").read_text())["error"]
    assert error.startswith(f"the disk is full ({tmp_path / 'data'}/synthetic-") and str(run) not in error


def test_a_status_that_cannot_be_written_is_said_on_the_console(folders, tmp_path, monkeypatch):
    import errno
    import apikit.experiment as experiment
    from apikit.runs import DiskFull
    write_json = experiment.write_json

    def full_once_running(path, obj):
        if obj.get("status") != "running":
            raise DiskFull(errno.ENOSPC, "the disk is full: metrics.json could not be written", str(path))
        return write_json(path, obj)
    monkeypatch.setattr(experiment, "write_json", full_once_running)
    lines = []
    with pytest.raises(FloatingPointError):
        train(cbs=[Explode()], log=lines.append, **tiny(folders, tmp_path / "run"))
    said = [line for line in lines if line.startswith("apikit: the run failed (FloatingPointError")]
    assert len(said) == 1 and f"could not be written to {tmp_path / 'run' / 'metrics.json'} either" in said[0]
    assert 'it still says "running"' in said[0]


def test_a_run_is_written_only_into_a_run_folder(folders, tmp_path, capsys):
    """A folder holding other files, the project root and notebooks/ are refused before any work, with or without
    overwrite; an empty name and a NUL byte are one clear error."""
    from apikit import experiment
    from apikit.runs import NotARunFolder, project_root
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("draft")
    for overwrite in (False, True):
        with pytest.raises(NotARunFolder, match=r"holds what no run wrote \('thesis.tex'\).*choose another run_dir"):
            train(overwrite=overwrite, **tiny(folders, mine))
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    root = project_root()
    template = (root / "notebooks" / "train.ipynb").read_bytes()
    with pytest.raises(ValueError, match="parameter run_dir='' is not valid: expected a folder"):
        train(**tiny(folders, ""))
    for where in ("notebooks", ".", str(root)):
        with pytest.raises(NotARunFolder, match="a folder of the project itself"):
            train(overwrite=True, **tiny(folders, where))
    with pytest.raises(SystemExit) as e:  # before papermill writes train.ipynb; argparse's one line, exit status 2
        experiment.main(["--run-dir", "notebooks", "--dataset", "folder", "--data-path", str(folders)])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and err[-1].startswith("python -m apikit.experiment: error: run_dir='notebooks' is ")
    assert err[-1].endswith(f"{root / 'notebooks'}, a folder of the project itself (or above it), not a run folder: "
                            "a run writes metrics.json, model.pkl and figures into its run_dir; choose another run_dir "
                            "(a new folder, e.g. reports/runs/mine).")
    assert (root / "notebooks" / "train.ipynb").read_bytes() == template
    written = {"metrics.json", "model.pkl", "model.pth", "curves.png", ".lock"}
    assert not written & (set(os.listdir(root)) | set(os.listdir(root / "notebooks")))
    with pytest.raises(ValueError, match="a NUL byte cannot be part of a name or path"):
        train(**tiny(folders, str(tmp_path / "a\x00b")))


def test_a_run_never_goes_inside_a_folder_of_the_tools(folders, tmp_path):
    """train(run_dir=".git/refs/tags") wrote a run into git's refs (git fsck then fails): refused, as are __pycache__
    and a link into .git, before anything is written. (A repository of its own here: were the check gone, this
    project's .git would be spared; tests/test_runs.py checks that the project's own .git/refs/tags is refused.)"""
    from apikit.runs import NotARunFolder
    refs = tmp_path / "repo" / ".git" / "refs"
    (refs / "tags").mkdir(parents=True)
    os.symlink(refs, tmp_path / "runs")
    for run_dir in (refs / "tags", tmp_path / "runs" / "mine", tmp_path / "repo" / "pkg" / "__pycache__" / "run"):
        with pytest.raises(NotARunFolder, match=r"inside (\.git|__pycache__)/, a folder the tools keep"):
            train(**tiny(folders, run_dir))
    assert list((refs / "tags").iterdir()) == [] and not (tmp_path / "repo" / "pkg").exists()


def test_a_parameter_error_on_the_command_line_is_argparses_one_line(folders, tmp_path, capsys):
    """As for an unknown option: `error: ...` on stderr and exit status 2, no traceback; nothing is written."""
    from apikit import experiment
    cases = [(["--epochs", "0"], "parameter epochs=0 is not valid: must be >= 1."),
             (["--synthetic", "{'n_test': 0}"], "parameter synthetic={'n_test': 0} is not valid: n_test=0 holds out "
                                                 "no image, and a run is evaluated on its held-out images; use "
                                                 "n_test >= 1."),
             (["--paper", "--dataset", "dogs", "--lr", "-1"], "parameter lr=-1.0 is not valid: must be a finite "
                                                             "number > 0.")]
    for args, said in cases:
        with pytest.raises(SystemExit) as e:
            experiment.main([*args, "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 2 and err[-1] == f"python -m apikit.experiment: error: {said}"
        assert err[0].startswith("usage: python -m apikit.experiment") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()


def test_a_leftover_checkpoint_of_a_finished_run_is_removed(folders, tmp_path):
    """A run stopped after recording "finished" but before removing its checkpoint: the next call removes it."""
    run = tmp_path / "run"
    train(**tiny(folders, run, epochs=1))
    (run / "checkpoint.pth").write_bytes(b"x" * 1000)
    assert train(**tiny(folders, run, epochs=1))["status"] == "finished"  # kept
    assert not (run / "checkpoint.pth").exists() and (run / "model.pkl").exists()


@pytest.mark.parametrize("state, problem", [
    ({"epoch": 0}, "it lacks config, history, model, opt, rng"),
    (["x"], "it holds a list, not a dict"),
    ({"config": {}, "epoch": "0", "history": [], "model": {}, "opt": {}, "rng": {}}, "epoch is a str"),
])
def test_a_malformed_checkpoint_is_one_clear_error(folders, tmp_path, state, problem):
    from apikit.runs import CorruptRunFile
    run = tmp_path / "run"
    run.mkdir()
    torch.save(state, run / "checkpoint.pth")
    with pytest.raises(CorruptRunFile, match=rf"checkpoint.pth is not a checkpoint apikit wrote \({problem}\); "
                                             "delete it.*overwrite=True"):
        train(**tiny(folders, run))


@pytest.mark.parametrize("kind", ["nested", "fifo"])
def test_overwrite_replaces_any_unreadable_metrics_json(folders, tmp_path, kind):
    from apikit.runs import CorruptRunFile
    run = tmp_path / "run"
    run.mkdir()
    if kind == "nested":
        (run / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    else:
        os.mkfifo(run / "metrics.json")
    with pytest.raises(CorruptRunFile, match="nested deeper than Python can parse" if kind == "nested" else
                       "is a FIFO, not a file apikit wrote"):
        train(**tiny(folders, run, epochs=1))
    assert train(overwrite=True, **tiny(folders, run, epochs=1))["status"] == "finished"
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"


def test_a_finished_run_dir_with_other_parameters_says_which_differ_and_the_ways_out(folders, tmp_path):
    first = train(**tiny(folders, tmp_path / "run", epochs=1))
    with pytest.raises(RunFinished) as e:
        train(**tiny(folders, tmp_path / "run", epochs=2, lr=0.1))
    msg = str(e.value)
    top1 = first["metrics"]["top1"]
    assert f"already holds a finished run (top-1 {top1:.1f}%) with other parameters: epochs 1 -> 2, lr 0.01 -> 0.1." \
        in msg  # one decimal, old -> new
    assert "choose another run_dir" in msg and "overwrite=True (in the notebook's parameters cell; -p overwrite True" \
        in msg
    assert e.value._render_traceback_() == [f"RunFinished: {msg}"]  # Jupyter and papermill show the message alone
    assert train(**tiny(folders, tmp_path / "run", epochs=1)) == first  # its own parameters: kept, no error


def test_an_interrupt_is_one_line_saying_how_far_the_run_got(folders, tmp_path):
    from apikit.experiment import RunInterrupted
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted) as e:
        train(cbs=[InterruptAtEpoch(1)], **tiny(folders, run, epochs=3))
    assert str(e.value) == f"interrupted after epoch 1 of 3; re-run to resume ({run})"
    assert e.value._render_traceback_() == [f"RunInterrupted: {e.value}"] and e.value.__cause__ is None
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["epochs_done"] == 1 and "KeyboardInterrupt" in m["traceback"]
    assert torch.load(run / "checkpoint.pth", weights_only=True)["epoch"] + 1 == m["epochs_done"]


def test_fastais_bar_shows_each_epochs_batches_only_where_a_notebook_draws_it_live(folders, tmp_path, monkeypatch):
    """In JupyterLab the fit has fastai's own bar; in papermill and a terminal the epoch lines are the progress."""
    import apikit.experiment as experiment
    from fastai.callback.progress import ProgressCallback
    seen = []

    class Look(Callback):
        def before_fit(self):
            seen.append(any(isinstance(cb, ProgressCallback) for cb in self.learn.cbs))
    for live in (True, False):
        monkeypatch.setattr(experiment, "live_display", lambda: live)
        train(cbs=[Look()], **tiny(folders, tmp_path / f"live-{live}", epochs=1))
    assert seen == [True, False]
