"""`apikit/runs.py`: atomic writes, metrics.json, run locks, model fingerprints, project paths, run folders."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from apikit.record import NoModel, NotItsModel, RunRecord, model_fingerprint, read_metrics, run_status
from apikit.runs import CorruptRunFile, RunInUse, atomic_write, resolve, run_lock, write_json


def test_an_interrupted_write_leaves_the_old_metrics_intact(tmp_path, monkeypatch):
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



def test_write_json_cleans_non_finite_numbers(tmp_path):
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0), "d": (1, 2),
                                     "e": torch.tensor([1.0, float("nan")]), "f": np.arange(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, 1.5], "c": 2.0, "d": [1, 2],
                                                            "e": [1.0, None], "f": [0, 1]}


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path):
    def fail(tmp):
        Path(tmp).write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "checkpoint.pth", fail)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_metrics_is_one_clear_error(tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "fini')
    with pytest.raises(CorruptRunFile, match="metrics.json cannot be read.*overwrite=True"):
        read_metrics(tmp_path)
    assert read_metrics(tmp_path / "none") is None


def test_a_second_run_on_a_folder_is_refused_naming_the_holder(tmp_path):
    with run_lock(tmp_path) as me:
        with pytest.raises(RunInUse, match=f"in use by another run \\(pid {me['pid']} on .*started"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()
    with run_lock(tmp_path):  # released: taken again
        pass


def test_a_dead_holders_lock_blocks_nothing(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (tmp_path / ".lock").write_text(json.dumps(dict(pid=int(dead.stdout), host=socket.gethostname(), started="x")))
    write_json(tmp_path / "metrics.json", {"status": "running"})
    assert run_status(tmp_path, read_metrics(tmp_path)) == "interrupted"
    with run_lock(tmp_path) as me:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == me["pid"] == os.getpid()
        assert run_status(tmp_path, read_metrics(tmp_path)) == "running"


def test_a_runs_model_is_its_model_pth_checked_against_its_record(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"model A")
    write_json(tmp_path / "metrics.json",
               dict(status="finished", weights_sha256=model_fingerprint(tmp_path / "model.pth")))
    assert RunRecord.read(tmp_path).model() == tmp_path / "model.pth"
    (tmp_path / "model.pth").write_bytes(b"model B, left by an earlier run")
    with pytest.raises(NotItsModel, match="is not the model of .*fingerprints differ"):
        RunRecord.read(tmp_path).model()
    write_json(tmp_path / "metrics.json", {"status": "finished"})
    with pytest.raises(NotItsModel, match=r"records no model fingerprint \(weights_sha256\)"):
        RunRecord.read(tmp_path).model()


def test_a_run_with_model_pkl_alone_is_refused_with_the_fix(tmp_path):
    """model.pkl (fastai's pickle) is never what apikit loads, even with its fingerprint recorded."""
    (tmp_path / "model.pkl").write_bytes(b"an exported Learner")
    write_json(tmp_path / "metrics.json",
               dict(status="finished", model_sha256=model_fingerprint(tmp_path / "model.pkl")))
    with pytest.raises(NoModel) as e:
        RunRecord.read(tmp_path).model()
    assert str(e.value) == (f"{tmp_path} holds model.pkl but no model.pth: apikit loads a run through its weights "
                            "alone (model.pth, read with weights_only=True), never through model.pkl; re-run the "
                            "training (overwrite=True) with this apikit.")
    (tmp_path / "model.pkl").unlink()
    with pytest.raises(NoModel, match="holds no model.pth: point it at the run_dir of a finished training run.$"):
        RunRecord.read(tmp_path).model()
    with pytest.raises(NoModel, match="is no folder"):
        RunRecord.read(tmp_path / "none").model()


def test_a_run_record_is_read_once_and_holds_what_its_readers_take(tmp_path, monkeypatch):
    record = {"status": "finished", "config": {"epochs": 3, "size": 64}, "metrics": {"top1": 50.0},
              "history": [{"epoch": 0}], "normalization": {"mean": [0.5], "std": [0.2]}, "weights_sha256": "ab",
              "model_sha256": "cd", "weights_loaded": "timm:resnet18", "epochs_done": 3}
    write_json(tmp_path / "metrics.json", record)
    rec = RunRecord.read(tmp_path)
    (tmp_path / "metrics.json").unlink()  # read once: the record does not go back to the file
    assert (rec.run_dir, rec.data, rec.status) == (tmp_path, record, "finished")
    assert (rec.config, rec.metrics, rec.history, rec.normalization) == (
        record["config"], record["metrics"], record["history"], record["normalization"])
    assert (rec.fingerprint, rec.weights_loaded, rec.epochs_done, rec.unfinished) == ("ab", "timm:resnet18", 3, None)
    with pytest.raises(AttributeError):
        rec.status = "running"
    empty = RunRecord.read(tmp_path)
    assert (empty.data, empty.status, empty.config, empty.metrics, empty.history, empty.normalization) == (
        None, "unknown", {}, {}, [], {})
    assert (empty.fingerprint, empty.weights_loaded, empty.epochs_done, empty.unfinished) == (None, None, 0, None)
    write_json(tmp_path / "metrics.json", {"status": "running", "epochs_done": 2, "config": {"epochs": 5}})
    assert RunRecord.read(tmp_path).unfinished == (f"{tmp_path}: interrupted after epoch 2 of 5, before its model was "
                                                   "saved; run the same training command again to resume it, then "
                                                   "visualize it.")  # nobody holds its lock
    (tmp_path / "metrics.json").write_text('{"status": 3}')
    with pytest.raises(CorruptRunFile, match="status is 3, not a string"):
        RunRecord.read(tmp_path)


def test_relative_paths_resolve_against_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("reports/runs") == Path(__file__).resolve().parents[1] / "reports" / "runs"
    assert resolve(tmp_path / "x") == tmp_path / "x"


# ---------------------------------------------------------------- full disks, crafted run files, run folders

def test_a_full_disk_is_named_whatever_the_writer_raised(tmp_path, monkeypatch):
    """torch says "unexpected pos" on a full disk: the free space left says what it was, and nothing stays behind."""
    import shutil
    from apikit.runs import DiskFull

    def torch_on_a_full_disk(tmp):
        Path(tmp).write_bytes(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(3 << 20, 3 << 20, 0))
    with pytest.raises(DiskFull, match="the disk is full: .*checkpoint.pth could not be written .*unexpected pos"):
        atomic_write(tmp_path / "checkpoint.pth", torch_on_a_full_disk)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()  # plenty of space: the same error is what it is
    with pytest.raises(RuntimeError, match="unexpected pos") as e:
        atomic_write(tmp_path / "checkpoint.pth", torch_on_a_full_disk)
    assert not isinstance(e.value, DiskFull) and list(tmp_path.iterdir()) == []


def _fifo(path):
    os.mkfifo(path)
    return path


CRAFTED = {
    "nested": ("[" * 100_000 + "]" * 100_000, "nested deeper than Python can parse"),
    "nested-30": ('{"status": "finished", "config": ' + "[" * 30 + "]" * 30 + "}", "nested more than 16 levels"),
    "huge-number": ('{"status": "finished", "metrics": {"top1": 1' + "0" * 400 + "}}",
                    "metrics.top1 is 1000000000000000000000000000000000000..., not a finite number"),
    "string-in-history": ('{"status": "finished", "history": ["x"]}', "history\\[0\\] is 'x', not an object"),
    "string-top1": ('{"status": "finished", "history": [{"epoch": 1, "top1": "high"}]}',
                    "history\\[0\\].top1 is 'high', not a finite number"),
    "diagnostics-without-epoch": ('{"status": "finished", "diagnostics": [{"rank_active": 0.5}]}',
                                  "diagnostics\\[0\\] has no epoch number"),
    "list": ("[1]", "it holds \\[1\\], not a JSON object"),
    "status-list": ('{"status": [1]}', "status is \\[1\\], not a string"),
    "config-type": ('{"status": "finished", "config": {"arch": ["resnet50"]}}',
                    "config.arch is \\['resnet50'\\], not a str"),
    "oversized": ('{"error": "' + "x" * (5 << 20) + '"}', "bytes, more than a file apikit writes"),
    # integers beyond a float's range where the report computes with them (scale_class_sizes, matplotlib)
    "huge-n_classes": ('{"status": "finished", "config": {"n_classes": 1' + "0" * 400 + "}}",
                       "config.n_classes is 1000000000000000000000000000000000000\\.\\.\\., not a finite number"),
    "huge-epochs": ('{"status": "finished", "config": {"epochs": 1' + "0" * 400 + "}}",
                    "config.epochs is 1000000000000000000000000000000000000\\.\\.\\., not a finite number"),
    "huge-diagnostics-epoch": ('{"status": "finished", "diagnostics": [{"epoch": 1' + "0" * 400 + "}]}",
                               "diagnostics\\[0\\].epoch is 1000000000000000000000000000000000000\\.\\.\\., not a "
                               "finite number"),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_a_crafted_metrics_json_is_one_clear_error(tmp_path, name):
    text, reason = CRAFTED[name]
    (tmp_path / "metrics.json").write_text(text)
    with pytest.raises(CorruptRunFile, match=f"metrics.json .*{reason}.*overwrite=True"):
        read_metrics(tmp_path)
    assert run_status(tmp_path, None) == "unknown"


def test_a_fifo_named_metrics_json_is_never_opened(tmp_path):
    """Opening a FIFO for reading waits for a writer that never comes: it is refused from its stat alone."""
    import threading
    _fifo(tmp_path / "metrics.json")
    result = []

    def read():
        try:
            read_metrics(tmp_path)
        except CorruptRunFile as e:
            result.append(str(e))
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader before failing
        os.close(os.open(tmp_path / "metrics.json", os.O_WRONLY | os.O_NONBLOCK))
    assert result and "metrics.json is a FIFO, not a file apikit wrote: skipped unread" in result[0]


def test_only_a_run_folder_takes_a_run(tmp_path):
    from apikit.runs import NotARunFolder, check_run_dir, project_root
    assert check_run_dir(tmp_path / "new") == tmp_path / "new"  # missing: created by the run
    (tmp_path / "empty").mkdir()
    papermill = tmp_path / "papermill"  # papermill writes the executed notebook before the run starts
    papermill.mkdir()
    (papermill / "train.ipynb").write_text("{}")
    (papermill / ".metrics.json.1-ab.tmp").write_text("")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "checkpoint.pth").write_bytes(b"")
    (earlier / "notes.md").write_text("mine")
    for ok in ("empty", "papermill", "earlier"):
        assert check_run_dir(tmp_path / ok) == tmp_path / ok
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("")
    with pytest.raises(NotARunFolder, match=r"holds what no run wrote \('thesis.tex'\).*choose another run_dir"):
        check_run_dir(mine)
    for own in ("", "notebooks", "reports", ".."):
        with pytest.raises(NotARunFolder, match="a folder of the project itself"):
            check_run_dir(project_root() / own)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotARunFolder, match="which is a file, not a folder"):
        check_run_dir(tmp_path / "file")


def test_record_failure_never_writes_over_a_runs_own_end(tmp_path):
    """A grid records a run that died without recording it, keeping what the run wrote; it never touches a record
    the run finished (or failed, or stopped) itself, and never a run that another process holds."""
    from apikit.record import record_failure
    run = tmp_path / "run"
    run.mkdir()
    finished = {"status": "finished", "config": {"seed": 0}, "metrics": {"top1": 50.0},
                "history": [{"epoch": 1, "top1": 50.0}], "epochs_done": 1}
    write_json(run / "metrics.json", finished)
    assert record_failure(run, "Kernel died") == "finished"
    assert json.loads((run / "metrics.json").read_text()) == finished
    for own in ("failed", "interrupted"):
        write_json(run / "metrics.json", {**finished, "status": own, "error": "its own"})
        assert record_failure(run, "Kernel died") == own
        assert json.loads((run / "metrics.json").read_text())["error"] == "its own"
    running = {"status": "running", "config": {"seed": 0, "epochs": 6}, "metrics": None,
               "history": [{"epoch": 1, "top1": 10.0}, {"epoch": 2, "top1": 20.0}], "epochs_done": 2}
    write_json(run / "metrics.json", running)
    with run_lock(run):  # the run's kernel still holds it
        assert record_failure(run, "Kernel died") == "busy"
    assert json.loads((run / "metrics.json").read_text()) == running
    assert record_failure(run, "Kernel died", job_log="/logs/7_0_log.out") == "failed"
    assert json.loads((run / "metrics.json").read_text()) == {**running, "status": "failed", "error": "Kernel died",
                                                              "job_log": "/logs/7_0_log.out"}
    fresh = tmp_path / "never-started"  # a notebook that failed before training: the grid's parameters recorded
    assert record_failure(fresh, "UnknownParameter: bogus", config={"seed": 3}) == "failed"
    assert json.loads((fresh / "metrics.json").read_text()) == {"status": "failed", "error": "UnknownParameter: bogus",
                                                                "config": {"seed": 3}, "metrics": None, "history": []}


def test_no_run_goes_inside_a_folder_of_the_tools(tmp_path):
    """.git (also through a link), __pycache__, a virtual environment: refused by name before anything is written."""
    import re
    from apikit.runs import NotARunFolder, check_run_dir, project_root
    tags = tmp_path / "repo" / ".git" / "refs" / "tags"
    tags.mkdir(parents=True)
    (tmp_path / "repo" / "pkg" / "__pycache__").mkdir(parents=True)
    os.symlink(tmp_path / "repo" / ".git" / "refs", tmp_path / "runs")  # an innocent name, into .git
    cases = [(tags, ".git"), (tmp_path / "runs" / "tags", ".git"), (tmp_path / "runs" / "new", ".git"),
             (tmp_path / "repo" / "pkg" / "__pycache__" / "run", "__pycache__"), (tmp_path / ".venv" / "x", ".venv"),
             (".git/refs/tags", ".git"), (project_root() / "apikit" / "__pycache__", "__pycache__")]
    for run_dir, tool in cases:
        with pytest.raises(NotARunFolder) as e:
            check_run_dir(run_dir)
        assert re.fullmatch(rf"run_dir='{re.escape(str(run_dir))}' is .*, inside {re.escape(tool)}/, a folder the tools "
                            r"keep \(version control, Python, Jupyter, caches\), not a run folder: .*choose another "
                            r"run_dir \(a new folder, e.g. reports/runs/mine\).", str(e.value)), str(e.value)
    assert list(tags.iterdir()) == [] and not (tmp_path / ".venv").exists()


def test_a_path_is_shown_one_way_everywhere(tmp_path):
    """`shown`: project-relative, ~ for home, else as is; with a base, relative to it (.. included); `shown_in`:
    the same in a text (an HTML page)."""
    from apikit.runs import project_root, shown, shown_in
    root, home = project_root(), Path.home()
    assert shown(root / "reports" / "runs" / "a") == "reports/runs/a"
    assert shown("/elsewhere/x") == "/elsewhere/x"
    if not root.is_relative_to(home):
        assert shown(home / "data" / "cub") == "~/data/cub"
    assert shown(tmp_path / "runs" / "a" / "seed-0", base=tmp_path / "runs") == "a/seed-0"
    assert shown(tmp_path / "other", base=tmp_path / "runs") == "../other"
    page = f"<p>{root}/reports/demo/visualize/gates.png and {home}/x.png</p>"
    assert shown_in(page) == "<p>reports/demo/visualize/gates.png and ~/x.png</p>"
