"""`apikit/workers.py`: local workers give what one process gives, stop on Ctrl-C, and never outlive the launcher."""
import os
import signal

import pytest

from apikit.ablations import run_grid
from apikit.launch import Run, launch
from conftest import make_image_folders
from grid_helpers import alive, ctrl_c, descendants, grid_process, record, same_training, tiny, wait_for


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("workers"), n_classes=4, n_train=4, n_valid=2, size=20)


def test_two_local_workers_train_what_one_process_trains(folders, tmp_path, python3_kernel):
    """The same seeds on the same thread count give the same runs, one after another or on two workers; each
    worker's run records its job and log."""
    base = tiny(folders, epochs=2)
    lines = []
    one = run_grid(base, ["table1"], seeds=[0], out_root=tmp_path / "one", kernel_name=python3_kernel, html=False,
                   threads=1)
    two = run_grid(base, ["table1"], seeds=[0], out_root=tmp_path / "two", kernel_name=python3_kernel, html=False,
                   workers=2, threads=1, log=lines.append)
    assert list(one.values()) == ["finished", "finished"] and list(two.values()) == ["finished", "finished"]
    for name in ("api-False", "api-net"):
        a, b = record(tmp_path / "one" / name / "seed-0"), record(tmp_path / "two" / name / "seed-0")
        assert same_training(a, b) and len(a["history"]) == 2
        assert a["job"] is None and b["job"]["executor"] == "local" and os.path.isfile(b["job"]["log"])
        assert "epoch 2/2" in open(b["job"]["log"]).read()  # the run's own lines are in its job's log
    assert lines[1] == f"2 runs into {tmp_path / 'two'} (2 local workers, 1 thread each)"
    assert sum(line.startswith(("[1/2] finished  ", "[2/2] finished  ")) for line in lines) == 2


GRID = """
from apikit.ablations import run_grid
run_grid({base!r}, ['table1'], seeds=[0, 1], out_root={out!r}, html=False, workers=2, threads=1)
"""


def _start(folders, out):
    """A 2-worker grid of four 40-epoch runs in its own process group, once both workers' runs have checkpointed;
    returns the process and every process below it."""
    p = grid_process(GRID.format(base=tiny(folders, epochs=40), out=str(out)))
    wait_for(lambda: len(list(out.rglob("checkpoint.pth"))) == 2, what="both workers' first checkpoints")
    return p, descendants(p.pid)


def test_ctrl_c_stops_every_worker_at_its_runs_last_checkpoint(folders, tmp_path):
    out = tmp_path / "runs"
    p, below = _start(folders, out)
    assert len(alive(below)) >= 6  # two controllers, two workers, two kernels
    text, took = ctrl_c(p, below)
    assert took < 30 and p.returncode == 0
    for run in ("api-False/seed-0", "api-False/seed-1"):
        m = record(out / run)
        assert m["status"] == "interrupted" and 1 <= m["epochs_done"] < 40
        assert f"{run} interrupted after epoch {m['epochs_done']} of 40" in text
    assert "grid stopped: 2 interrupted, 2 not started; run the same command again to resume" in text
    assert "Traceback" not in text


def test_workers_end_with_their_launcher_even_when_it_is_killed(folders, tmp_path):
    out = tmp_path / "runs"
    p, below = _start(folders, out)
    p.kill()  # SIGKILL: no handler runs in the launcher
    p.wait()
    wait_for(lambda: not alive(below), limit=20, what="every worker's exit after the launcher's SIGKILL")
    for run in ("api-False/seed-0", "api-False/seed-1"):
        assert record(out / run)["status"] == "interrupted"  # each worker stopped its run at a checkpoint


def test_a_killed_worker_is_recorded_with_its_history_and_resumes_when_the_grid_runs_again(folders, tmp_path,
                                                                                             python3_kernel):
    out = tmp_path / "runs"
    runs = [Run(out / "long", tiny(folders, epochs=10), "long"), Run(out / "short", tiny(folders, epochs=1), "short")]
    lines = []

    def kill_the_long_runs_worker():  # once it has checkpointed, as the out-of-memory killer would
        wait_for(lambda: (out / "long" / "checkpoint.pth").exists() and (out / "long" / "job.json").exists())
        job = (out / "long" / "job.json").read_text()
        import json
        controller = int(json.loads(job)["id"])
        worker = next(pid for pid in descendants(controller) if "submitit.core._submit" in
                      open(f"/proc/{pid}/cmdline").read().replace("\0", " "))
        os.kill(worker, signal.SIGKILL)
    import threading
    killer = threading.Thread(target=kill_the_long_runs_worker)
    killer.start()
    status = launch(runs, out, kernel_name=python3_kernel, html=False, log=lines.append, workers=2, threads=1)
    killer.join()
    assert status == {str(out / "long"): "failed", str(out / "short"): "finished"}
    m = record(out / "long")
    assert m["status"] == "failed" and m["error"].startswith("the job ended without the run recording it")
    assert m["epochs_done"] >= 1 and len(m["history"]) == m["epochs_done"] and os.path.isfile(m["job_log"])
    done = m["epochs_done"]
    again = launch(runs, out, kernel_name=python3_kernel, html=False, log=lines.append, workers=2, threads=1)
    assert again == {str(out / "long"): "finished", str(out / "short"): "finished (kept)"}
    m = record(out / "long")
    assert m["status"] == "finished" and [h["epoch"] for h in m["history"]] == list(range(1, 11))
    assert f"resuming after epoch {done} of 10" in open(m["job"]["log"]).read()


def test_the_eta_counts_the_running_runs_by_their_epochs(tmp_path, monkeypatch):
    """Two runs started together on two workers: when the first ends at 100 s, the other 3/4 through (as recorded
    in its metrics.json), the pace is 100 s / 1.75 runs and the 5 runs to go take 286 s, about 5 min, not 100 s x 5.
    A resumed run's epochs from before its job do not count."""
    from types import SimpleNamespace
    from apikit.runs import write_json
    from apikit.workers import _Follower

    def run(name, done, epochs=8):
        (tmp_path / name).mkdir(exist_ok=True)
        write_json(tmp_path / name / "metrics.json", dict(status="running", epochs_done=done, config=dict(epochs=epochs)))
        return SimpleNamespace(run_dir=tmp_path / name, label=name)

    class Job:
        job_id = "1"
        def __init__(self, ended): self.ended = ended
        def done(self, force_check=False): return self.ended

    now = [1000.0]
    monkeypatch.setattr("apikit.workers.time.time", lambda: now[0])
    monkeypatch.setattr("apikit.workers._outcome", lambda sj, job, log: "finished")
    lines = []
    follow = _Follower(6, 0, lines.append)
    first, second, resumed = run("a", 0), run("b", 0), run("c", 4)
    follow.started(Job(False), first)
    follow.started(Job(False), second)
    follow.started(Job(False), resumed)
    now[0] = 1100.0
    run("b", 6)  # 3/4 of its epochs since it started
    run("c", 4)  # resumed at 4 of 8, nothing since
    next(iter(follow.running)).ended = True
    follow.poll()
    assert lines[-1] == "[1/6] finished  a (100 s; 5 to go, about 5 min)"  # 100 / 1.75 x 5 = 286 s
    assert round(follow._per_run(), 1) == round(100 / 1.75, 1)
