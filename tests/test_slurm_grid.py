"""Grids on a real SLURM cluster (the `slurm` fixture: tests/slurm_cluster.py): every run a job, requeued past its
time limit and resumed, scancel leaving its run interrupted, nothing submitted twice, the state without waiting.

SLURM checks time limits twice a minute and its shortest limit is a minute, so a run that outlives its limit takes
minutes. Those runs are submitted without waiting by the first test, the quick tests run while SLURM works on them,
and the last tests wait for them; `make test` runs these files on one of its two processes (conftest.SLURM_FILES)
while the other goes through the rest of the suite."""
import json
import math
import threading

import pytest

from apikit.ablations import run_grid
from apikit.jobs import grid_status, read_job
from apikit.launch import Run, launch
from conftest import make_image_folders
from grid_helpers import record, same_training, tiny, wait_for

TIME_LIMIT = 2  # minutes: SLURM's warning (45 s before) comes 75-105 s into a job, its time-limit check every 30 s

# one process of `make test` holds the cluster and runs these files in order (conftest.SLURM_FILES)


@pytest.fixture(scope="session")
def env(slurm):
    """The cluster's SLURM_CONF for this process (the whole session: the late tests use it too), so that submitit's sbatch, sacct and scontrol find it."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in slurm.env.items():
            mp.setenv(key, value)
        yield slurm


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("slurm-data"), n_classes=4, n_train=4, n_valid=2, size=20)


@pytest.fixture(scope="session")
def quick(env, folders, tmp_path_factory, python3_kernel):
    """Table 1 x seed 0 through run_grid on SLURM, waited for: two tiny runs, each a job of one array."""
    out, lines = tmp_path_factory.mktemp("quick") / "runs", []
    status = run_grid(tiny(folders, epochs=2), ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel,
                      html=False, log=lines.append, executor="slurm", partition=env.partition, time=TIME_LIMIT)
    return out, status, lines


def _jobs_submitted(slurm):
    return len(slurm.run("sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now-1days").stdout.split())


@pytest.fixture(scope="session")
def limits(env, folders, quick, tmp_path_factory, python3_kernel):
    """Submitted without waiting: a run that needs longer than its job's time limit, a long run to scancel, and the
    first run again under a generous limit, uninterrupted. Its epochs are sized from the quick runs' fastest on this
    machine, so that it needs about 170 s of training: more than one job's time even if SLURM's check comes late
    (120-150 s into the job); sized from their mean (a first epoch's warm-up, their evaluations), a quiet machine
    finished it within the limit."""
    out = tmp_path_factory.mktemp("limits")
    quick_out, _, _ = quick
    per_epoch = min(h["time_s"] for name in ("api-False", "api-net")
                    for h in record(quick_out / name / "seed-0")["history"])
    epochs = max(60, math.ceil(170 / max(per_epoch, 0.05)))
    long = tiny(folders, epochs=epochs, test_every=0)
    lines = []
    runs = [Run(out / "runs" / "long", long, "long"), Run(out / "runs" / "stop", tiny(folders, epochs=2000), "stop")]
    launched = launch(runs, out / "runs", kernel_name=python3_kernel, html=False, log=lines.append,
                      executor="slurm", partition=env.partition, time=TIME_LIMIT, max_requeue=5, wait=False)
    right_after = grid_status(out / "runs")
    launch([Run(out / "ref" / "long", long, "long")], out / "ref", kernel_name=python3_kernel, html=False,
           log=lines.append, executor="slurm", partition=env.partition, time=30, wait=False)
    stop, cancelled = out / "runs" / "stop", []

    def cancel_after_its_first_checkpoint():  # as a person would: it has trained a while
        wait_for(lambda: (stop / "checkpoint.pth").exists(), limit=600, what="the run's first checkpoint")
        env.run("scancel", read_job(stop)["id"])
        cancelled.append(True)
    threading.Thread(target=cancel_after_its_first_checkpoint, daemon=True).start()
    return dict(cancelled=cancelled, out=out, runs=runs, launched=launched, right_after=right_after, lines=lines, epochs=epochs)


def test_no_wait_submits_prints_the_jobs_and_returns(limits):
    out = limits["out"] / "runs"
    assert {k: v.split(" (")[0] for k, v in limits["launched"].items()} == {
        str(out / "long"): "submitted", str(out / "stop"): "submitted"}
    for name in ("long", "stop"):
        job = read_job(out / name)
        assert job["executor"] == "slurm" and f"submitted {name}: SLURM job {job['id']}, log {job['log']}" in \
            limits["lines"]
    assert any("2 jobs submitted; their logs are in" in line for line in limits["lines"])
    assert {run: state for run, state, _ in limits["right_after"]} in (
        {"long": a, "stop": b} for a in ("pending", "running") for b in ("pending", "running"))


def test_scancel_leaves_its_run_interrupted(env, limits):
    stop = limits["out"] / "runs" / "stop"
    wait_for(lambda: limits["cancelled"], limit=600, what="the scancel")
    wait_for(lambda: record(stop)["status"] != "running", limit=60, what="the cancelled run's record")
    m = record(stop)
    assert m["status"] == "interrupted" and m["epochs_done"] >= 1
    assert env.wait_done(read_job(stop)["id"], timeout=60) == "CANCELLED"


def test_a_grid_on_slurm_runs_every_run_as_a_job(env, quick):
    out, status, lines = quick
    assert status == {str(out / "api-False" / "seed-0"): "finished", str(out / "api-net" / "seed-0"): "finished"}
    ids = set()
    for name in ("api-False", "api-net"):
        m = record(out / name / "seed-0")
        assert m["status"] == "finished" and m["job"]["executor"] == "slurm" and m["job"]["requeues"] == 0
        assert env.wait_done(m["job"]["id"], timeout=60) == "COMPLETED"
        assert "epoch 2/2" in open(m["job"]["log"]).read()
        ids.add(m["job"]["id"].split("_")[0])
    assert len(ids) == 1  # one job array
    assert sum(line.startswith(("[1/2] finished  ", "[2/2] finished  ")) for line in lines) == 2


def test_resubmitting_a_finished_grid_submits_nothing(env, folders, quick, python3_kernel):
    out, _, _ = quick
    before = _jobs_submitted(env)
    lines = []
    again = run_grid(tiny(folders, epochs=2), ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel,
                     html=False, log=lines.append, executor="slurm", partition=env.partition, time=TIME_LIMIT)
    assert set(again.values()) == {"finished (kept)"} and _jobs_submitted(env) == before


def test_slurm_options_are_checked_before_anything_is_submitted(env, folders, tmp_path, python3_kernel):
    before = _jobs_submitted(env)
    with pytest.raises(ValueError, match=r"partition='gpu' is not a partition of this cluster; sinfo lists debug"):
        run_grid(tiny(folders), ["table1"], seeds=[0], out_root=tmp_path, kernel_name=python3_kernel,
                 executor="slurm", partition="gpu", time=5)
    with pytest.raises(ValueError, match=r"time='1h' is not a time limit: give minutes \(90\)"):
        run_grid(tiny(folders), ["table1"], seeds=[0], out_root=tmp_path, kernel_name=python3_kernel,
                 executor="slurm", time="1h")
    assert _jobs_submitted(env) == before and not list(tmp_path.iterdir())


def test_a_run_past_its_time_limit_is_requeued_and_ends_as_if_uninterrupted(env, limits):
    long, ref = limits["out"] / "runs" / "long", limits["out"] / "ref" / "long"

    def ended():
        return all(state not in ("pending", "running", "requeued") for _, state, _ in grid_status(long.parent)) and \
            all(state not in ("pending", "running") for _, state, _ in grid_status(ref.parent))
    wait_for(ended, limit=480, what="the long runs' end")
    m, r = record(long), record(ref)
    assert m["status"] == "finished" and r["status"] == "finished", (m.get("error"), r.get("error"))
    assert m["job"]["requeues"] >= 1 and r["job"]["requeues"] == 0
    assert len(m["history"]) == limits["epochs"] and same_training(m, r)
    assert ("REQUEUED" in [s for _, s in env.sacct(m["job"]["id"], duplicates=True)])
    assert env.wait_done(m["job"]["id"], timeout=60) == "COMPLETED"
    log = open(m["job"]["log"]).read()
    assert "resuming after epoch" in log and "RunInterrupted: interrupted after epoch" in log
    rows = {run: (state, detail) for run, state, detail in grid_status(long.parent)}
    assert rows["long"][0] == "finished" and rows["long"][1].startswith(f"requeued {m['job']['requeues']} time")
    assert rows["stop"][0] == "interrupted"
    json.dumps(rows)  # the status command's rows are plain data
