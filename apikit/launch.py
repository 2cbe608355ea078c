"""Every grid of the kit on one engine, submitit: N local workers, or one SLURM job per run.

A grid is a list of `Run`s (a run folder and train.ipynb's parameters). `launch` checks them and the executor's
options before anything starts, keeps finished runs and leaves runs that another process holds or a scheduler
has queued, submits the rest and, unless told not to wait, follows them to the end with one line per run (k/N,
ETA). Each job runs what a person runs: `notebooks/train.ipynb` with papermill into its run folder (`apikit.jobs`).

- `local` (the default): `workers` processes on this machine. With GPUs, one run per GPU (CUDA_VISIBLE_DEVICES per
  run; workers = the visible GPUs unless told); on a CPU the runs share the cores, threads split between them.
  `workers=1` runs one run after another in this process, as the kit always did.
- `slurm`: one job per run, submitted as a job array, with SLURM's warning before the time limit (submitit's
  USR2): the run stops at its last checkpoint and the job is requeued, up to `max_requeue` times, to resume it.

Ctrl-C (or SIGTERM) stops every worker at its runs' last checkpoints, one line per stopped run and a summary; a
second Ctrl-C while they stop is ignored with a line saying so. The launcher's options are `Param`s like a run's,
so the CLIs, the notebooks and the checks read one table (`LAUNCH`).
"""
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .schema import Param, add_arguments, changed_params, check_params
from .jobs import TrainJob, how_far, read_job, sacct_states, scheduler_state
from .paper import PAPER_ARCHS, PAPER_SOTA, TABLES
from .record import read_metrics
from .runs import CorruptRunFile, check_run_dir, resolve, write_json

__all__ = ["Run", "GRIDS", "GRID", "GRID_DEFAULTS", "LAUNCH", "LAUNCH_KEYS", "EXECUTORS", "check_launch", "parse_time",
           "launch", "add_launch_arguments", "print_status"]

# The grids (Tables 1-5: `apikit.ablations`; Tables 6-10: `apikit.tables`) and their own knobs, once: which grid,
# its rows and seeds, where its runs go. ablations.ipynb's parameters cell holds them after a run's shared parameters
# and before the launcher's (a test checks it); the grids' CLIs read them too.
GRIDS = ("ablations", "tables")
GRID = (
    Param("tables", ["table1"], list, "which tables to run: " + ", ".join(TABLES), tuple(TABLES), item=str),
    Param("seeds", [0], list, "one run per seed and configuration", item=int),
    Param("out_root", "reports/runs/ablations", str, "run_dirs go to out_root/<configuration>/seed-<k> (relative: to "
          "the project root)"),
    Param("overwrite", False, bool, "True: train finished runs again (False: a re-run redoes only missing, failed or "
          "interrupted runs)"),
    Param("grid", "ablations", str, "ablations: Tables 1-5 (tables x seeds on the base parameters above) | tables: "
          "Tables 6-10 (datasets x archs x seeds at the paper's recipe; of the base parameters, only precision and "
          "download apply)", GRIDS),
    Param("datasets", list(PAPER_SOTA), list, "grid tables: the data sets (rows of Tables 6-10)", tuple(PAPER_SOTA),
          item=str),
    Param("archs", list(PAPER_ARCHS), list, "grid tables: the backbones", item=str),
)
GRID_DEFAULTS = {p.name: p.default for p in GRID}

EXECUTORS = ("local", "slurm")

# The launcher's knobs, once: the CLIs' flags, the notebooks' parameters and `check_launch` read this table.
LAUNCH = (
    Param("executor", "local", str, "where the runs go: local (workers on this machine) | slurm (one job per run)",
          choices=EXECUTORS),
    Param("workers", None, int, "local: runs at a time (None: one per visible GPU, else 1: one after another in "
                                "this process)", optional=True),
    Param("threads", None, int, "local: CPU threads per run (None: the cores divided between the workers)",
          optional=True),
    Param("wait", True, bool, "follow the runs to the end; False (slurm): submit, print the job ids and return"),
    Param("partition", None, str, "slurm: the partition (sinfo lists them; None: the cluster's default)",
          optional=True),
    Param("gpus_per_run", None, int, "slurm: GPUs per run (None: 1)", optional=True),
    Param("cpus_per_run", None, int, "slurm: CPU cores per run (None: SLURM's default)", optional=True),
    Param("mem", None, str, "slurm: memory per run, e.g. 64G (None: SLURM's default)", optional=True),
    Param("time", None, str, "slurm: time limit per job, minutes (90) or D-HH:MM:SS (None: the partition's); a run "
                             "that needs longer is requeued and resumes", optional=True),
    Param("account", None, str, "slurm: the account to charge", optional=True),
    Param("qos", None, str, "slurm: the quality of service", optional=True),
    Param("sbatch", None, dict, "slurm: any other sbatch option, e.g. {'constraint': 'a100', 'exclusive': True}",
          optional=True),
    Param("array_parallelism", None, int, "slurm: at most this many runs at once (None: no cap)", optional=True),
    Param("max_requeue", 3, int, "slurm: requeues after a time limit, at most, before a run is left interrupted"),
    Param("signal_delay", None, int, "slurm: SLURM warns this many seconds (up to 30 more) before the time limit "
                                     "(None: 90, or 20 for limits under 15 minutes)", optional=True),
)
_LAUNCH = {p.name: p for p in LAUNCH}
LAUNCH_KEYS = tuple(_LAUNCH)
_SLURM_ONLY = ("partition", "gpus_per_run", "cpus_per_run", "mem", "account", "qos", "sbatch", "array_parallelism",
               "time", "signal_delay")
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Run:
    """One run of a grid: its folder, the checked parameters of train.ipynb, and its name in the grid's lines."""
    run_dir: Path
    params: dict
    label: str


def parse_time(value):
    """A SLURM time limit in minutes (rounded up): minutes ("90", 90) or SLURM's forms (MM:SS, HH:MM:SS, D-HH,
    D-HH:MM, D-HH:MM:SS)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _TIME.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"time={value!r} is not a time limit: give minutes (90) or SLURM's D-HH:MM:SS (0-01:30:00, "
                         "2-00:00:00).")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is None:  # MM, MM:SS, HH:MM:SS
        parts = [x for x in (a, b, c) if x is not None]
        seconds = {1: lambda: a * 60, 2: lambda: a * 60 + b, 3: lambda: a * 3600 + b * 60 + c}[len(parts)]()
    else:  # D-HH, D-HH:MM, D-HH:MM:SS
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if seconds <= 0:
        raise ValueError(f"time={value!r} is no time at all: give a positive limit, e.g. 90 or 2-00:00:00.")
    return math.ceil(seconds / 60)


def _partitions():
    """The cluster's partitions (sinfo), the default one first; a clear error where SLURM's commands are missing."""
    missing = [c for c in ("sbatch", "sinfo", "sacct", "scontrol") if shutil.which(c) is None]
    if missing:
        raise ValueError(f"executor='slurm' needs SLURM's commands on PATH ({', '.join(missing)} not found): submit "
                         "from the cluster's login node, or use executor='local'.")
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ValueError(f"executor='slurm': sinfo failed ({out.stderr.strip() or out.returncode}); is the cluster "
                         "reachable from here?")
    names = [n.strip() for n in out.stdout.split() if n.strip()]
    return sorted({n.rstrip("*") for n in names}, key=lambda n: (not any(x == n + "*" for x in names), n))


def _partition_time(partition):
    """A job's time limit where none is given: the partition's default, else its maximum (minutes)."""
    out = subprocess.run(["scontrol", "-o", "show", "partition", partition], capture_output=True, text=True,
                         timeout=60)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    for key in ("DefaultTime", "MaxTime"):
        try:
            return parse_time(fields.get(key, ""))
        except ValueError:  # NONE, UNLIMITED
            continue
    raise ValueError(f"time=None: partition {partition!r} sets no time limit (scontrol: DefaultTime "
                     f"{fields.get('DefaultTime')}, MaxTime {fields.get('MaxTime')}), and a job needs one to be "
                     "warned before it; give one, e.g. --time 2-00:00:00.")


def check_launch(**options):
    """The launcher's options, typed and checked against `LAUNCH` before anything is submitted (a SLURM partition
    against the cluster's list); returns them complete, with the derived values filled in."""
    unknown = set(options) - set(_LAUNCH)
    if unknown:
        raise ValueError(f"launcher option(s) {', '.join(sorted(unknown))} do not exist; valid ones: "
                         f"{', '.join(_LAUNCH)}.")
    o = {p.name: options.get(p.name, p.default) for p in LAUNCH}
    for p in LAUNCH:
        v = o[p.name]
        if v is None and p.optional:
            continue
        if p.type is int and isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = o[p.name] = int(v)
        ok = isinstance(v, p.type) and not (p.type is int and isinstance(v, bool))
        if p.name == "time":
            ok = isinstance(v, (str, int)) and not isinstance(v, bool)
        if not ok or (p.choices and v not in p.choices):
            want = f"one of {', '.join(map(repr, p.choices))}" if p.choices else f"a {p.type.__name__}"
            raise ValueError(f"launcher option {p.name}={v!r} is not valid: expected {want} ({p.help}).")
    for name in ("workers", "threads", "gpus_per_run", "cpus_per_run", "array_parallelism", "signal_delay"):
        if o[name] is not None and o[name] < 1:
            raise ValueError(f"launcher option {name}={o[name]!r} is not valid: expected a whole number >= 1.")
    if o["max_requeue"] < 0:
        raise ValueError(f"launcher option max_requeue={o['max_requeue']!r} is not valid: expected 0 or more.")
    if o["executor"] == "local":
        given = [n for n in _SLURM_ONLY if o[n] is not None]
        if given:
            raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} SLURM's: add executor='slurm' "
                             "(--executor slurm), or leave them out for local workers.")
        if not o["wait"]:
            raise ValueError("wait=False (--no-wait) needs executor='slurm': local workers are this process's "
                             "children and stop with it; run the grid in tmux or under nohup instead.")
        gpus = _visible_gpus()
        o["workers"] = o["workers"] or max(1, len(gpus))
        o["gpus"] = gpus
        if o["workers"] > 1:  # one after another in this process, a run keeps torch's own thread count unless told
            o["threads"] = o["threads"] or max(1, (os.cpu_count() or 1) // o["workers"])
        return o
    if o["workers"] is not None or o["threads"] is not None:
        raise ValueError("workers and threads are the local executor's; with executor='slurm' use array_parallelism "
                         "and cpus_per_run.")
    if o["time"] is not None:
        o["time"] = parse_time(o["time"])
    if o["mem"] is not None and not _MEM.match(o["mem"]):
        raise ValueError(f"launcher option mem={o['mem']!r} is not valid: expected SLURM's form, e.g. 64G or 16000M.")
    for key in o["sbatch"] or {}:
        if not (isinstance(key, str) and _SBATCH_KEY.match(key)):
            raise ValueError(f"sbatch option {key!r} is not valid: expected sbatch's long option names without "
                             "dashes, e.g. {'constraint': 'a100', 'mail-type': 'END'}.")
    partitions = _partitions()
    if o["partition"] is not None and o["partition"] not in partitions:
        raise ValueError(f"partition={o['partition']!r} is not a partition of this cluster; sinfo lists "
                         f"{', '.join(partitions) or 'none'}.")
    if o["time"] is None:
        o["time"] = _partition_time(o["partition"] or partitions[0])
    if o["signal_delay"] is None:
        # SLURM warns at the first of its 30-s checks within signal_delay + 30 s of the limit, and a run stops in
        # moments at its last checkpoint: 20 s suffices for any limit, submitit's 90 for long jobs is kinder to a
        # slow file system, and too long for a limit of a few minutes.
        o["signal_delay"] = 20 if o["time"] < 15 else 90
    if o["time"] is not None and o["signal_delay"] >= o["time"] * 60:
        raise ValueError(f"signal_delay={o['signal_delay']} s is not shorter than time={o['time']} min: the warning "
                         "would come before the job starts; lower signal_delay or raise time.")
    return o


def _visible_gpus():
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (torch counts them where it is unset)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    import torch
    return [str(k) for k in range(torch.cuda.device_count())]


def add_launch_arguments(parser):
    """The launcher's options as `--executor`, `--workers`, ... `--no-wait` (from `LAUNCH`)."""
    add_arguments(parser, params=LAUNCH)
    return parser


def _plural(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def _eta(t_start, n_done, n_left):
    if not n_done or not n_left:
        return ""
    per_run = (time.time() - t_start) / n_done
    return f"; {n_left} to go, about {per_run * n_left / 60:.0f} min"


def _triage(runs, overwrite, log):
    """(what to submit, {run_dir: status}) before anything starts: finished runs kept, unreadable ones skipped,
    runs held by another process or queued by the scheduler left to it."""
    todo, status, n = [], {}, len(runs)  # todo: (k, run), k counting from 1 in the grid's order
    queued = [job["id"] for job in map(read_job, (r.run_dir for r in runs)) if job and job["executor"] == "slurm"]
    states = sacct_states(queued)  # one sacct for the whole grid
    for k, run in enumerate(runs, start=1):
        try:
            m = read_metrics(run.run_dir) or {}
        except CorruptRunFile as e:
            log(f"[{k}/{n}] corrupt ({e})")
            if not overwrite:
                status[str(run.run_dir)] = "corrupt"
                continue
            m = {}
        if m.get("status") == "finished" and not overwrite:
            changed = changed_params(m.get("config") or {}, run.params)
            status[str(run.run_dir)] = "finished (other parameters)" if changed else "finished (kept)"
            log(f"[{k}/{n}] kept      {run.label}" + (f": it finished with other parameters ({changed}); to train "
                                                       "these, pass overwrite=True (--overwrite) or choose another "
                                                       "out_root" if changed else ""))
            continue
        busy = scheduler_state(run.run_dir, states)
        if busy is not None:
            status[str(run.run_dir)] = busy
            log(f"[{k}/{n}] {busy:9s} {run.label} (left to it; not submitted again)")
            continue
        todo.append((k, run))
    return todo, status


def launch(runs, out_root, kernel_name="python3", html=True, overwrite=False, log=print, stdout=True, **options):
    """Run a grid's `runs` with the launcher `options` (`LAUNCH`); returns {run_dir: status}.

    Checks every run folder and option before anything starts. Writes `out_root/batch.json` with the statuses and
    the job logs under `out_root/logs`. Ctrl-C stops the workers at their runs' last checkpoints; the statuses so
    far are returned, so a notebook's next cell renders what finished.
    """
    o = check_launch(**options)
    checked = []
    for run in runs:  # every run's parameters, and every run_dir a run folder (NotARunFolder names what is in the way)
        params = check_params(**{**run.params, "run_dir": str(run.run_dir)})
        params.pop("run_dir")
        checked.append(Run(check_run_dir(run.run_dir), params, run.label))
    runs = checked
    out_root = resolve(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    where = (f"{_plural(o['workers'], 'local worker')}, {_plural(o['threads'], 'thread')} each"
             if o["executor"] == "local" and o["workers"] > 1 else "SLURM jobs" if o["executor"] == "slurm" else
             "one after another")
    log(f"{_plural(len(runs), 'run')} into {out_root} ({where})")
    todo, status = _triage(runs, overwrite, log)
    jobs = [TrainJob(run.run_dir, run.params, run.label, kernel_name=kernel_name, html=html, overwrite=overwrite)
            for _, run in todo]
    if o["executor"] == "local" and o["workers"] == 1:
        status.update(_inline(jobs, [k for k, _ in todo], len(runs), log, stdout, o["threads"]))
    elif o["executor"] == "local":
        from .workers import run_local
        status.update(run_local(jobs, out_root / "logs", o, len(runs), log))
    else:
        from .workers import run_slurm
        status.update(run_slurm(jobs, out_root / "logs", o, len(runs), log))
    status = {str(r.run_dir): status[str(r.run_dir)] for r in runs if str(r.run_dir) in status}  # the grid's order
    write_json(out_root / "batch.json", status)
    return status


def _inline(jobs, ks, n, log, stdout, threads=None):
    """One run after another in this process (workers=1): the run's own lines as they come; Ctrl-C stops the run at
    its last checkpoint and the grid with it, in one line. `ks`: each job's number in the grid; `threads`: the
    kernels' CPU threads, where given (they inherit this process's environment)."""
    given = dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)) if threads is not None else {}
    before = {k: os.environ.get(k) for k in given}
    os.environ.update(given)
    status, t_start = {}, time.time()
    try:
        for i, (k, job) in enumerate(zip(ks, jobs)):
            taken = job.taken()  # another grid on the same runs may have got there first
            if taken:
                status[str(job.run_dir)] = taken
                log(f"[{k}/{n}] {taken:9s} {job.label} (by another process; not started here)")
                continue
            log(f"[{k}/{n}] starting  {job.label}")
            t0 = time.time()
            try:
                status[str(job.run_dir)] = job.run(stdout=sys.stdout if stdout is True else stdout or None)
            except KeyboardInterrupt:
                status[str(job.run_dir)], where = how_far(job.run_dir)
                log(f"[{k}/{n}] {job.label} {where}; re-run to resume")
                break
            log(f"[{k}/{n}] {status[str(job.run_dir)]:9s} {job.label} ({time.time() - t0:.0f} s"
                f"{_eta(t_start, i + 1, len(jobs) - i - 1)})")
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return status


def print_status(out_root, log=print):
    """`--status`: each run's state under `out_root` from its folder and the scheduler (`jobs.grid_status`), and
    the counts; returns the rows."""
    from .jobs import grid_status
    root = resolve(out_root)
    rows = grid_status(root)
    if not rows:
        log(f"{root}: no runs yet")
        return rows
    width = max(len(run) for run, _, _ in rows)
    for run, state, detail in rows:
        log(f"{run:{width}s}  {state:11s}  {detail}".rstrip())
    counts = {}
    for _, state, _ in rows:
        counts[state] = counts.get(state, 0) + 1
    log(f"{_plural(len(rows), 'run')} in {root}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return rows
