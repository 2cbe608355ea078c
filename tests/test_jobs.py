"""`apikit/jobs.py`: a run as a job; a finished result is never lost to a dying kernel or a second grid; a grid's
state from its run folders."""
import json
import os
import signal
import threading

import pytest

import apikit.execute as execute
from apikit.ablations import run_grid
from apikit.jobs import grid_status, how_far, write_job
from apikit.runs import run_lock, write_json
from conftest import make_image_folders
from grid_helpers import grid_process, record, tiny, wait_for


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("jobs"), n_classes=4, n_train=4, n_valid=2, size=20)


def test_a_kernel_killed_after_its_run_finished_leaves_the_finished_record(folders, tmp_path, python3_kernel):
    """Kill the train kernel the moment its metrics.json says finished: the record, its history and the model
    stay, and the next grid keeps the run instead of training it again."""
    out, run = tmp_path / "runs", tmp_path / "runs" / "api-False" / "seed-0"
    killed = []

    def kill_at_finished():
        def finished():
            try:
                return record(run)["status"] == "finished"
            except (OSError, ValueError):
                return False
        wait_for(finished, what="the finished record")
        pid = execute._KERNELS[0].provisioner.pid  # the kernel still runs the notebook's last cells
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    threading.Thread(target=kill_at_finished, daemon=True).start()
    lines = []
    status = run_grid(tiny(folders, epochs=2), ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel,
                      html=False, log=lines.append, stdout=False)
    assert killed and status[str(run)] == "finished"
    m = record(run)
    assert m["status"] == "finished" and m["metrics"]["top1"] is not None and len(m["history"]) == 2
    assert (run / "model.pth").is_file() and m["weights_sha256"]
    before = (run / "metrics.json").read_bytes()
    again = run_grid(tiny(folders, epochs=2), ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel,
                     html=False, log=lines.append, stdout=False)
    assert again[str(run)] == "finished (kept)" and (run / "metrics.json").read_bytes() == before


SECOND = """
from apikit.ablations import run_grid
run_grid({base!r}, ['table1'], seeds=[0], out_root={out!r}, html=False)
"""


def test_two_grids_on_one_out_root_never_mark_each_others_runs(folders, tmp_path, python3_kernel):
    """A grid started while another trains the same runs leaves the busy run to it and trains what is free; the
    first grid then finds that run taken. No run is marked failed, each trained once."""
    out, base = tmp_path / "runs", tiny(folders, epochs=8)
    first = grid_process(SECOND.format(base=base, out=str(out)))
    wait_for(lambda: (out / "api-False" / "seed-0" / "checkpoint.pth").exists(), what="the first grid's checkpoint")
    lines = []
    second = run_grid(base, ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel, html=False,
                      log=lines.append, stdout=False)
    text, _ = first.communicate(timeout=300)
    assert second[str(out / "api-False" / "seed-0")] == "busy"
    assert any("busy      api-False/seed-0 (left to it; not submitted again)" in line for line in lines)
    # api-net was free: whichever grid came to it first trained it, and the other found it taken
    said_first = [line for line in text.splitlines() if line.startswith("[2/2]") and "api-net/seed-0" in line][-1]
    both = sorted([second[str(out / "api-net" / "seed-0")], said_first[6:said_first.index("api-net")].strip()])
    assert both in (["busy", "finished"], ["finished", "finished (kept)"], ["finished", "kept"]), (both, said_first)
    assert "failed" not in text and first.returncode == 0
    for name in ("api-False", "api-net"):
        m = record(out / name / "seed-0")
        assert m["status"] == "finished" and [h["epoch"] for h in m["history"]] == list(range(1, 9))


def test_how_far_a_stopped_run_got():
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        assert how_far(run) == ("not started", "stopped before it started")
        write_json(run / "metrics.json", {"status": "interrupted", "config": {"epochs": 6}, "epochs_done": 2})
        assert how_far(run) == ("interrupted", "interrupted after epoch 2 of 6")
        write_json(run / "metrics.json", {"status": "interrupted", "config": {"epochs": 6}, "epochs_done": 0})
        assert how_far(run) == ("interrupted", "interrupted before its first epoch finished")


def test_grid_status_reads_each_run_folder(tmp_path):
    """Finished, running (the lock held), interrupted, failed with its error and log, never started, and a run
    recorded running that nothing runs any more."""
    def put(name, **m):
        (tmp_path / name).mkdir(parents=True)
        write_json(tmp_path / name / "metrics.json", {"config": {"epochs": 6}, "history": [], **m})
    put("done/seed-0", status="finished", metrics={"top1": 71.25}, epochs_done=6)
    put("now/seed-0", status="running", epochs_done=2)
    put("stopped/seed-0", status="interrupted", epochs_done=3, job={"executor": "slurm", "requeues": 2})
    put("broken/seed-0", status="failed", error="Traceback ...\nValueError: n_classes=7 is larger than the 4 classes",
        job_log="/logs/9_0_log.out")
    put("lost/seed-0", status="running", epochs_done=4)
    write_job(tmp_path / "queued/seed-0", "local", "123", "/logs/123_0_log.out")
    with run_lock(tmp_path / "now/seed-0"):
        rows = grid_status(tmp_path)
    assert rows == [
        ("broken/seed-0", "failed", "ValueError: n_classes=7 is larger than the 4 classes; log: /logs/9_0_log.out"),
        ("done/seed-0", "finished", "top-1 71.2%"),
        ("lost/seed-0", "interrupted", "stopped after epoch 4 of 6 without recording it (no process holds it)"),
        ("now/seed-0", "running", "epoch 3 of 6"),
        ("queued/seed-0", "not started", ""),
        ("stopped/seed-0", "interrupted", "requeued 2 times; after epoch 3 of 6"),
    ]
    assert json.loads((tmp_path / "queued/seed-0/job.json").read_text())["log"] == "/logs/123_0_log.out"


def test_a_run_another_grid_finished_is_kept_by_what_its_notebook_printed(tmp_path, monkeypatch):
    """Two grids on one run write their executed notebooks to one path: whether train() kept the run is heard from
    this notebook's own printed line as it runs, not read back from a file the other grid may have replaced."""
    from apikit import jobs
    from apikit.runs import write_json
    run = tmp_path / "api-net" / "seed-0"
    run.mkdir(parents=True)

    def notebook(src, dst, params, stdout=None, **kwargs):
        write_json(run / "metrics.json", dict(status="finished", config={}, metrics=dict(top1=50.0)))
        stdout.write(f"{run}: already finished: kept (top-1 50.0%)\n")
        dst.write_text("{}")  # the other grid's notebook, written over this one's
    monkeypatch.setattr(jobs, "run_notebook", notebook)
    assert jobs.TrainJob(run, {}, "api-net seed 0").run() == "finished (kept)"

    def trains(src, dst, params, stdout=None, **kwargs):
        write_json(run / "metrics.json", dict(status="finished", config={}, metrics=dict(top1=50.0)))
        stdout.write("epoch 1/1  train loss 1.0\n")
    monkeypatch.setattr(jobs, "run_notebook", trains)
    assert jobs.TrainJob(run, {}, "api-net seed 0").run() == "finished"


def test_a_run_another_grid_held_then_finished_is_kept_not_finished_here(tmp_path, monkeypatch):
    """This grid's notebook met the run's lock (RunInUse: another grid trained it) and, by the time the failure was
    to be recorded, the other grid had finished it: "finished (kept)", the record untouched; a notebook that failed
    for another reason after recording finished stays "finished"."""
    from apikit import jobs

    class Raised(Exception):
        def __init__(self, ename):
            super().__init__(ename)
            self.ename = ename

    record_ = dict(status="finished", config={"epochs": 2}, metrics={"top1": 50.0}, history=[], epochs_done=2)
    for ename, want in (("RunInUse", "finished (kept)"), ("DeadKernelError", "finished")):
        run_dir = tmp_path / ename

        def other_grid_finishes_it(*args, ename=ename, run_dir=run_dir, **kwargs):
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "metrics.json", record_)
            raise Raised(ename)
        monkeypatch.setattr(jobs, "run_notebook", other_grid_finishes_it)
        assert jobs.TrainJob(run_dir, {}, "x").run() == want
        assert record(run_dir) == record_
