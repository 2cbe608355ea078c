"""The private SLURM cluster (tests/slurm_cluster.py, fixture `slurm`) does what a submitit launcher relies on:
batch jobs run and sacct reports their end state, submitit's jobs return their values, scancel and
`scontrol requeue` act on running jobs (the warning before a time limit: tests/test_slurm_grid.py)."""
import sys
import time

import pytest

# one process of `make test` holds the cluster and runs these files in order (conftest.SLURM_FILES)


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def test_sbatch_wrap_completes_with_its_output(slurm, tmp_path):
    out = tmp_path / "hi.out"
    job = slurm.sbatch("--wrap", "echo hi", "--output", str(out))
    assert slurm.wait_done(job, timeout=30) == "COMPLETED"
    assert slurm.sacct(job, steps=True) == [(job, "COMPLETED"), (f"{job}.batch", "COMPLETED")]
    assert out.read_text() == "hi\n"


def test_submitit_job_returns_its_value(slurm, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    for key, value in slurm.env.items():  # submitit runs sbatch, sacct and scontrol with os.environ
        monkeypatch.setenv(key, value)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition=slurm.partition, timeout_min=5, cpus_per_task=1, mem_gb=1,
                               slurm_signal_delay_s=5)

    def where(x):  # a closure: cloudpickle sends it by value, so the job need not import this test module
        import os
        import sys
        return x * x, os.environ.get("SLURM_JOB_ID"), sys.executable

    job = executor.submit(where, 7)
    assert slurm.wait_done(job.job_id, timeout=60) == "COMPLETED", job.stderr()
    assert job.result() == (49, job.job_id, sys.executable)
    assert job.get_info()["State"] == "COMPLETED"  # submitit's own reading of sacct
    assert [state for _, state in slurm.sacct(job.job_id, steps=True)] == ["COMPLETED"] * 3  # job, batch, srun step


def test_scancel_of_running_job_is_cancelled(slurm):
    job = slurm.sbatch("--output", "/dev/null", "--wrap", "sleep 300")
    slurm.wait_state(job, "RUNNING", timeout=30)
    slurm.run("scancel", job)
    assert slurm.wait_done(job, timeout=30) == "CANCELLED"
    assert slurm.squeue_state(job) in ("CANCELLED", None)  # slurmctld agrees (or has forgotten it: MinJobAge)


def test_requeue_runs_a_running_job_again(slurm, tmp_path):
    out = tmp_path / "requeue.out"
    job = slurm.sbatch("--output", str(out), "--open-mode=append", "--wrap",
                       'echo "run ${SLURM_RESTART_COUNT:-0}"; sleep 300')
    slurm.wait_state(job, "RUNNING", timeout=30)
    _wait_for(lambda: out.exists() and "run 0" in out.read_text(), 10, "the first run's output")
    slurm.run("scontrol", "requeue", job)  # as submitit does on a timeout or preemption signal
    _wait_for(lambda: "run 1" in out.read_text(), 30, "the second run (cred_expire=5 s after the requeue)")
    slurm.wait_state(job, "RUNNING", timeout=10)  # sacct records a start ~1-2 s after it happens
    lines = out.read_text().splitlines()
    assert lines[0] == "run 0" and lines[-1] == "run 1" and "DUE TO JOB REQUEUE" in out.read_text()
    assert [state for _, state in slurm.sacct(job, duplicates=True)] == ["REQUEUED", "RUNNING"]
    slurm.run("scancel", job)
    assert slurm.wait_done(job, timeout=30) == "CANCELLED"
