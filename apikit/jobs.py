"""A run as a job: what a submitit job (or the grid's own process) executes, and what a run folder says of its job.

`TrainJob` runs `notebooks/train.ipynb` with papermill into the run folder, as a person does. In a job it stops
the run at its last checkpoint on SIGTERM (a `kill`, `scancel`, a container stop, the launcher stopping its
workers), on submitit's USR2 before a SLURM time limit (then the job is requeued and resumes), and when the
launcher that started it ends however it ends (SIGKILL included), so no worker outlives its parent. A job that
ends without its run recording how (a killed kernel, an out-of-memory kill, a lost node) is recorded by
`experiment.record_failure`, under the run's lock and never over a finished record.

The launcher writes `job.json` into each run folder when it submits the run: the executor, the job id and its
log. `scheduler_state` reads it back with the scheduler's view, for re-submissions and `grid_status`.
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .execute import TRAIN_NOTEBOOK, interrupt_kernels, run_notebook
from .locks import is_held
from .record import read_metrics, record_failure
from .runs import CorruptRunFile, read_json, write_json

__all__ = ["TrainJob", "JOB_FILE", "JOB_ENV", "job_from_env", "how_far", "short_error", "scheduler_state", "sacct_states", "write_job",
           "read_job", "QUEUED", "ENDED", "run_state", "grid_status"]

JOB_FILE = "job.json"
# A job names itself to its run through this variable, as JSON ({executor, id, log}): the run records it.
JOB_ENV = "APIKIT_JOB"
# SLURM's states (sacct) of a job that will still run the run, and of one that ended.
QUEUED = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
          "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running",
          "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running"}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE")
# How long a stopping run may take to record its stop (a long batch on a slow GPU) before its job goes anyway.
STOP_WAIT_S = 120


def short_error(e):
    """The last line of an error: the exception a notebook raised, or a job's reason."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def how_far(run_dir):
    """(status, how far it got) of a run that a stop reached, from what the run recorded (`epochs_done`)."""
    try:
        m = read_metrics(run_dir) or {}
    except CorruptRunFile:
        m = {}
    if m.get("status") == "finished":
        return "finished", "finished, and the grid stopped there"
    done = m.get("epochs_done")
    epochs = (m.get("config") or {}).get("epochs")
    of = f" of {epochs}" if isinstance(epochs, int) else ""
    if not m:
        return "not started", "stopped before it started"
    if not done:
        return "interrupted", "interrupted before its first epoch finished"
    return "interrupted", f"interrupted after epoch {done}{of}"


def _recorded(run_dir):
    try:
        return (read_metrics(run_dir) or {}).get("status")
    except CorruptRunFile:
        return "corrupt"


def _wait_for_stop(run_dir, limit=STOP_WAIT_S):
    """Wait until the run has recorded its stop: nothing holds its lock and metrics.json no longer says running."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not is_held(Path(run_dir) / ".lock") and _recorded(run_dir) != "running":
            return True
        time.sleep(0.2)
    return False


def _die_with(pid):
    """Stop this job as SIGTERM does once process `pid` (the launcher) has ended, however it ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch():
        select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="apikit-parent-watch", daemon=True).start()


class TrainJob:
    """One run of a grid as a job: train.ipynb executed with papermill into `run_dir` (submitit calls it, and asks
    `checkpoint` for what to requeue; the grid's own process calls `run`)."""

    def __init__(self, run_dir, params, label, kernel_name="python3", html=True, overwrite=False, env=None,
                 parent=None):
        self.run_dir, self.params, self.label = Path(run_dir), dict(params), label
        self.kernel_name, self.html, self.overwrite = kernel_name, html, overwrite
        self.env, self.parent = dict(env or {}), parent

    def with_place(self, env=None, parent=None):
        """The same run with the environment of a worker (threads, GPU) and the launcher to die with."""
        return TrainJob(self.run_dir, self.params, self.label, self.kernel_name, self.html, self.overwrite, env,
                        parent)

    def run(self, stdout=None, repeats="raise"):
        """Execute the run's notebook; returns the status recorded afterwards. A notebook that failed without the
        run recording it (a dead kernel, a bad parameter) is recorded failed here, never over a finished run."""
        params = {**self.params, "run_dir": str(self.run_dir), "overwrite": self.overwrite}
        heard = _Heard(stdout)
        try:
            run_notebook(TRAIN_NOTEBOOK, self.run_dir / "train.ipynb", params, kernel_name=self.kernel_name,
                         html=self.html, stdout=heard, repeats=repeats)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            job = _this_job()
            on_disk = record_failure(self.run_dir, short_error(e), config=params, job_log=job and job["log"])
            if on_disk == "finished":  # it finished before its kernel died, or another grid had finished it
                # RunInUse: another grid held the run when this one's notebook came to it, and finished it since
                return "finished (kept)" if getattr(e, "ename", None) in ("RunFinished", "RunInUse") else "finished"
            return "busy" if on_disk == "busy" else "failed"  # busy: another grid runs it (RunInUse here)
        status = _recorded(self.run_dir)
        return "finished (kept)" if status == "finished" and heard.kept else status

    def taken(self):
        """Why this run should not start after all, now that its turn has come: another grid has finished it
        ("finished (kept)") or is running it ("busy"); None when it should start."""
        if not self.overwrite and _recorded(self.run_dir) == "finished":
            return "finished (kept)"
        return "busy" if is_held(self.run_dir / ".lock") else None

    def __call__(self):
        """In a submitit job: the worker's environment, the stop signals, then the run; returns its status."""
        def stop_before_start(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, stop_before_start)  # until run_notebook forwards it to the kernel
        os.environ.update(self.env)
        job = _this_job()
        if job is not None:
            os.environ[JOB_ENV] = json.dumps(job)
        if self.parent is not None:
            _die_with(self.parent)
        try:
            return self.run(stdout=sys.stdout, repeats="ignore")
        except KeyboardInterrupt:  # the run recorded its stop (NotebookInterrupted), or it had not started
            return how_far(self.run_dir)[0]

    def checkpoint(self, *args, **kwargs):
        """submitit, on SLURM's warning before the time limit or a preemption: stop the run at its last checkpoint,
        wait until it has recorded that, and requeue the same run, which resumes from the checkpoint."""
        import submitit
        interrupt_kernels()
        _wait_for_stop(self.run_dir)
        again = TrainJob(self.run_dir, self.params, self.label, self.kernel_name, self.html, False, self.env)
        return submitit.helpers.DelayedSubmission(again)


class _Heard:
    """The notebook's printed lines on their way to `out` (None: nowhere), listened to for train()'s one line when
    another grid had finished the run: heard here, since a second grid on the same run writes its own executed
    notebook to the same path."""

    def __init__(self, out=None):
        self.out, self.kept = out, False

    def write(self, text):
        self.kept = self.kept or ": already finished: kept" in text
        return self.out.write(text) if self.out is not None else len(text)

    def flush(self):
        if self.out is not None:
            self.out.flush()


def _this_job():
    """This process's submitit job as the run records it ({executor, id, log}), or None outside a job."""
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if executor is None:
        return None
    import submitit
    env = submitit.JobEnvironment()
    return dict(executor=executor, id=env.job_id, log=str(env.paths.stdout).replace("%t", "0"))


def job_from_env():
    """The job running this run as its launcher named it (JOB_ENV), with SLURM's requeue count; None outside one."""
    try:
        job = json.loads(os.environ[JOB_ENV])
    except (KeyError, ValueError):
        return None
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return {**job, "requeues": int(restarts) if restarts.isdigit() else 0} if isinstance(job, dict) else None


def write_job(run_dir, executor, job_id, log):
    """Record in the run folder which job runs it (the launcher, on submitting)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / JOB_FILE, dict(executor=executor, id=str(job_id), log=str(log), host=socket.gethostname(),
                                        submitted=time.strftime("%Y-%m-%d %H:%M:%S")))


def read_job(run_dir):
    """The job.json of a run folder, or None (none, or not one apikit wrote)."""
    f = Path(run_dir) / JOB_FILE
    if not f.is_file():
        return None
    try:
        job = read_json(f)
    except CorruptRunFile:
        return None
    ok = isinstance(job, dict) and all(isinstance(job.get(k), str) for k in ("executor", "id", "log", "host"))
    return job if ok else None


def _ask(command):
    """The lines a SLURM client prints, [] where it cannot answer."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []


def sacct_states(job_ids):
    """{job id: SLURM state} for the given ids (array tasks as 'A_i'): squeue's for the jobs the controller holds
    (sacct may not know a job submitted a moment ago), sacct's for the others; {} where SLURM cannot answer."""
    if not job_ids:
        return {}
    wanted = sorted(set(job_ids))
    states = {}
    for command in (["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(wanted)],
                    ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted({j.split("_")[0] for j in wanted}))]):
        for line in _ask(command):  # squeue's second: what the controller holds now wins
            jid, _, state = line.partition("|")
            if jid and state:
                for k in _expand(jid.strip()):  # a pending array's tasks share one line in sacct
                    states[k] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return states


def scheduler_state(run_dir, states=None):
    """What still runs or will run this run: "busy" (a process holds its lock), "pending" or "running" (its job is
    queued or running, by the scheduler), or None."""
    if is_held(Path(run_dir) / ".lock"):
        return "busy"
    job = read_job(run_dir)
    if job is None:
        return None
    if job["executor"] != "slurm":  # a local worker runs only while its launcher does, and holds the lock meanwhile
        return None
    state = (states if states is not None else sacct_states([job["id"]])).get(job["id"])
    return QUEUED.get(state)


def _expand(jid):
    """sacct's line for array tasks not yet started ('12_[1-3,5%2]') as their ids ('12_1', '12_2', ...)."""
    head, _, rest = jid.partition("_[")
    if not rest:
        return [jid]
    ids = []
    for part in rest.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            ids += [f"{head}_{k}" for k in range(int(lo), int(hi or lo) + 1)]
    return ids


def _epochs(m):
    done, epochs = m.get("epochs_done"), (m.get("config") or {}).get("epochs")
    return (done if isinstance(done, int) else 0), (epochs if isinstance(epochs, int) else None)


def share_done(run_dir):
    """The share of its epochs a run has recorded done (0 to 1; 0 where it records nothing yet)."""
    try:
        done, epochs = _epochs(read_metrics(run_dir) or {})
    except CorruptRunFile:
        return 0.0
    return min(1.0, done / epochs) if epochs else 0.0


def run_state(run_dir, states):
    """(state, detail) of one run from its folder and the scheduler's `states` (`sacct_states`): finished, running
    (epoch k of n), pending, requeued, failed (the error's last line and the job's log), interrupted, not started.
    A run recorded running that nothing runs, whose SLURM job has ended, is recorded failed here with the job's end."""
    run_dir = Path(run_dir)
    try:
        m = read_metrics(run_dir) or {}
    except CorruptRunFile as e:
        return "corrupt", str(e)
    job = read_job(run_dir) or {}
    sched = states.get(job.get("id")) if job.get("executor") == "slurm" else None
    log = job.get("log") or m.get("job_log")
    requeues = (m.get("job") or {}).get("requeues") or 0
    again = f"requeued {requeues} time{'s' * (requeues != 1)}; " if requeues else ""
    status, (done, epochs) = m.get("status"), _epochs(m)
    of = f" of {epochs}" if epochs else ""
    if status == "finished":
        top1 = (m.get("metrics") or {}).get("top1")
        return "finished", f"{again}top-1 {top1:.1f}%" if isinstance(top1, (int, float)) else again.rstrip("; ")
    if is_held(run_dir / ".lock") or QUEUED.get(sched) == "running":
        return "running", f"{again}epoch {done + 1}{of}" if status == "running" else f"{again}starting"
    if QUEUED.get(sched) == "pending":
        return ("requeued" if requeues or done else "pending"), f"{again}SLURM job {job['id']}"
    if status == "running" and sched in ENDED:
        record_failure(run_dir, f"its SLURM job {job['id']} ended {sched} without the run recording it", job_log=log)
        return run_state(run_dir, states)
    if status == "running":
        return "interrupted", f"{again}stopped after epoch {done}{of} without recording it (no process holds it)"
    if status == "failed":
        return "failed", f"{short_error(m.get('error') or 'no error recorded')}" + (f"; log: {log}" if log else "")
    if status == "interrupted":
        return "interrupted", f"{again}after epoch {done}{of}" + (f"; log: {log}" if log else "")
    return "not started", f"SLURM job {job['id']} ended {sched}" if sched else ""


def grid_status(out_root):
    """[(run, state, detail)] for every run folder under `out_root` (a metrics.json or a job.json), with one sacct
    call for all of them."""
    out_root = Path(out_root)
    folders = sorted({f.parent for name in ("metrics.json", JOB_FILE) for f in out_root.rglob(name)})
    jobs = [j for j in map(read_job, folders) if j and j["executor"] == "slurm"]
    states = sacct_states([j["id"] for j in jobs])
    return [(str(f.relative_to(out_root)), *run_state(f, states)) for f in folders]
