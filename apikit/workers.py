"""The launcher's executors on submitit: worker processes on this machine, and SLURM jobs; both followed to the end.

A Ctrl-C in a terminal reaches the whole foreground process group. The workers are started with SIGINT ignored,
so it reaches the launcher alone, which then stops each worker with SIGTERM: the worker interrupts its run's
kernel, the run records where it stopped, and the worker ends. SLURM jobs are stopped with scancel, which SLURM
turns into the same SIGTERM. A job that ends without its run recording it is recorded here (`record_failure`).
"""
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

from .jobs import STOP_WAIT_S, how_far, share_done, short_error, write_job
from .record import read_metrics, record_failure
from .runs import CorruptRunFile

__all__ = ["run_local", "run_slurm"]

# submitit's local jobs have a time limit; a run's is its own (it may train for days on one GPU).
_NO_LIMIT_MIN = 60 * 24 * 365
_POLL_S = 0.5


@contextmanager
def _sigint_ignored():
    """SIGINT ignored while a worker is started: it inherits that (see the module's docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _sigterm_stops():
    """SIGTERM to the launcher (a `kill`, a container stop) stops the grid as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_second_interrupt():
    """While the workers stop, another Ctrl-C (or SIGTERM) says so instead of raising."""
    def handler(signum, frame):
        print("apikit: still stopping: each run is recording where it stopped", file=sys.stderr, flush=True)
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def _top1(run_dir):
    try:
        top1 = ((read_metrics(run_dir) or {}).get("metrics") or {}).get("top1")
    except CorruptRunFile:
        return ""
    return f"top-1 {top1:.1f}%; " if isinstance(top1, (int, float)) else ""


def _outcome(sj, job, log):
    """The status a finished job leaves its run in: what the job returned, else (it died, or submitit gave up after
    `max_requeue` time limits) what its run recorded, and a failure recorded for a run that could not."""
    try:
        return sj.result()
    except Exception as e:
        reason = short_error(e)
        for _ in range(int(30 / 0.2)):  # a dying job's kernel lets go of the run within moments
            on_disk = record_failure(job.run_dir, f"the job ended without the run recording it ({reason})",
                                     config=job.params, job_log=str(sj.paths.stdout))
            if on_disk != "busy":
                break
            time.sleep(0.2)
        log(f"{job.label}: its job {sj.job_id} ended: {reason} (log: {sj.paths.stdout})")
        return on_disk if on_disk in ("finished", "interrupted", "busy") else "failed"


class _Follower:
    """Submits while workers are free and reports each run as its job ends: one line per run with k/N and an ETA."""

    def __init__(self, n, offset, log):
        self.n, self.k, self.submitted, self.log, self.t0, self.ended = n, offset, offset, log, time.time(), 0
        self.running, self.status = {}, {}

    def track(self, sj, job):
        # a resumed run's epochs from before this job are not this grid's progress
        self.running[sj] = (job, time.time(), share_done(job.run_dir))

    def started(self, sj, job, where=""):
        self.track(sj, job)
        self.submitted += 1
        self.log(f"[{self.submitted}/{self.n}] started   {job.label} (job {sj.job_id}{where})")

    def skip(self, job, why):
        self.k, self.submitted = self.k + 1, self.submitted + 1
        self.status[str(job.run_dir)] = why
        self.log(f"[{self.k}/{self.n}] {why:9s} {job.label} (by another process; not started here)")

    def poll(self, force=False):
        """Report the jobs that have ended since the last poll; returns them."""
        ended = [sj for sj in self.running if sj.done(force_check=force)]
        for sj in ended:
            job, t0, _ = self.running.pop(sj)
            status = self.status[str(job.run_dir)] = _outcome(sj, job, self.log)
            self.k, self.ended = self.k + 1, self.ended + 1
            left = self.n - self.k
            eta = f"; {left} to go, about {self._per_run() * left / 60:.0f} min" if left else ""
            self.log(f"[{self.k}/{self.n}] {status:9s} {job.label} ({_top1(job.run_dir)}{time.time() - t0:.0f} s{eta})")
        return ended

    def _per_run(self):
        """Wall time per run: elapsed over the runs done, the running ones counted by their share of epochs done,
        so that the first end of runs started together is not taken for the pace of one run after another."""
        running = sum(max(0.0, share_done(job.run_dir) - before) for job, _, before in self.running.values())
        return (time.time() - self.t0) / (self.ended + running)

    def stop(self, stop_job, pending=()):
        """Ctrl-C: stop every running job, wait for their runs to record it, and say what each run is now."""
        previous = _quiet_second_interrupt()
        try:
            self.log(f"stopping {len(self.running)} running job{'s' * (len(self.running) != 1)} at their runs' last "
                     "checkpoints ...")
            for sj in self.running:
                stop_job(sj)
            end = time.monotonic() + STOP_WAIT_S
            while self.running and time.monotonic() < end:
                for sj in [sj for sj in self.running if sj.done(force_check=True)]:
                    job = self.running.pop(sj)[0]
                    self.status[str(job.run_dir)], where = how_far(job.run_dir)
                    self.k += 1
                    self.log(f"[{self.k}/{self.n}] {job.label} {where}")
                time.sleep(_POLL_S)
            for sj, (job, *_) in self.running.items():
                self.log(f"{job.label}: its job {sj.job_id} has not ended after {STOP_WAIT_S} s; see {sj.paths.stdout}")
                self.status[str(job.run_dir)] = "stopping"
            for job in pending:
                self.status[str(job.run_dir)] = "not started"
            counts = {}
            for s in self.status.values():
                counts[s] = counts.get(s, 0) + 1
            said = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            self.log(f"grid stopped: {said}; run the same command again to resume (finished runs are kept)")
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def run_local(jobs, logs, o, n, log):
    """`jobs` on `o["workers"]` local processes (one per GPU where there are GPUs, sharing the cores on a CPU);
    returns {run_dir: status}."""
    import submitit
    ex = submitit.LocalExecutor(folder=logs)
    ex.update_parameters(timeout_min=_NO_LIMIT_MIN, stderr_to_stdout=True)
    threads = str(o["threads"])
    places = [dict(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   CUDA_VISIBLE_DEVICES=o["gpus"][w % len(o["gpus"])] if o["gpus"] else "")
              for w in range(o["workers"])]
    follow, pending, free = _Follower(n, n - len(jobs), log), list(jobs), list(range(o["workers"]))
    slot_of = {}
    try:
        with _sigterm_stops():
            while pending or follow.running:
                while pending and free:
                    w, job = free.pop(0), pending.pop(0)
                    taken = job.taken()  # another grid on the same runs may have got there first
                    if taken:
                        follow.skip(job, taken)
                        free.append(w)
                        continue
                    with _sigint_ignored():
                        sj = ex.submit(job.with_place(places[w], parent=os.getpid()))
                    write_job(job.run_dir, "local", sj.job_id, sj.paths.stdout)
                    slot_of[sj] = w
                    gpu = places[w]["CUDA_VISIBLE_DEVICES"]
                    follow.started(sj, job, f", worker {w + 1}" + (f", GPU {gpu}" if gpu else ""))
                free += [slot_of.pop(sj) for sj in follow.poll()]
                time.sleep(_POLL_S)
    except KeyboardInterrupt:
        follow.stop(lambda sj: _signal(sj, signal.SIGTERM), pending)
    return follow.status


def _signal(sj, signum):
    """Signal a local job's controller (its pid is the job id), which forwards the signal to the worker."""
    try:
        os.kill(int(sj.job_id), signum)
    except (OSError, ValueError):
        pass


def slurm_parameters(o):
    """submitit's SlurmExecutor parameters for the launcher options `o` (checked by `launch.check_launch`)."""
    names = dict(partition="partition", time="time", gpus_per_run="gpus_per_node", cpus_per_run="cpus_per_task",
                 mem="mem", account="account", qos="qos", sbatch="additional_parameters",
                 array_parallelism="array_parallelism")
    params = {names[k]: o[k] for k in names if o[k] is not None}
    return dict(params, signal_delay_s=o["signal_delay"], stderr_to_stdout=True)


def run_slurm(jobs, logs, o, n, log):
    """`jobs` as one SLURM job array (a job per run); returns {run_dir: status}, or "submitted (job ID)" per run
    with `wait=False`."""
    import submitit
    if not jobs:
        return {}
    ex = submitit.SlurmExecutor(folder=logs, max_num_timeout=o["max_requeue"])
    ex.update_parameters(**slurm_parameters(o))
    with ex.batch():
        sjs = [ex.submit(job) for job in jobs]
    follow = _Follower(n, n - len(jobs), log)
    for sj, job in zip(sjs, jobs):
        write_job(job.run_dir, "slurm", sj.job_id, sj.paths.stdout)
        log(f"submitted {job.label}: SLURM job {sj.job_id}, log {sj.paths.stdout}")
    if not o["wait"]:
        log(f"{len(sjs)} job{'s' * (len(sjs) != 1)} submitted; their logs are in {logs}. The grid's state: the same "
            "command with --status")
        return {str(job.run_dir): f"submitted (job {sj.job_id})" for sj, job in zip(sjs, jobs)}
    for sj, job in zip(sjs, jobs):
        follow.track(sj, job)
    try:
        with _sigterm_stops():
            polls = 0
            while follow.running:
                follow.poll(force=polls % 20 == 0)  # sacct now and then: a killed job leaves no result file
                polls += 1
                time.sleep(_POLL_S)
    except KeyboardInterrupt:
        follow.stop(lambda sj: sj.cancel(check=False))
    return follow.status
