"""A private one-node SLURM cluster for tests: MariaDB, slurmdbd, slurmctld and slurmd, all under one folder.

    with slurm_cluster(tmp_path) as cluster:
        job_id = cluster.sbatch("--wrap", "echo hi", "--output", str(tmp_path / "out.txt"))
        assert cluster.wait_done(job_id) == "COMPLETED"  # the state in sacct

Plain Python, no pytest: tests/conftest.py wraps it in the session fixture `slurm`. It needs root and Debian's
packages (slurmctld slurmd slurm-client slurmdbd mariadb-server; `make ci-deps`). Nothing system-wide is used or
touched: no munge (auth/none, cred/none), no cgroups (proctrack/linuxproc, task/none), no systemd, no
/etc/slurm: every daemon runs in the foreground as this process's child on free TCP ports, with its state, pid file,
log and MariaDB's data under `root`, and the clients find the cluster through SLURM_CONF (`cluster.env`).
Accounting runs (slurmdbd over MariaDB) because submitit, like people, reads job states with `sacct`.

On exit the jobs are cancelled and the daemons stopped by the pids started here. A watchdog process does the same if
this process dies first (SIGKILL included), and both then kill what the daemons left behind (slurmstepd, job
tasks): the processes whose environment holds this cluster's marker (`SLURM_TEST_CLUSTER=<name>`, which the daemons
pass on), and their descendants. Nothing is killed by name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "sacct", "sacctmgr", "scontrol", "sinfo", "squeue", "scancel", "srun")
MARKER = "SLURM_TEST_CLUSTER"
# The states of a job that has ended (a requeued job goes from REQUEUED back to PENDING)
FINAL_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY",
                          "BOOT_FAIL", "DEADLINE"})
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def which(name: str) -> str | None:
    """`name` on PATH, or in the sbin folders a non-root PATH may lack."""
    return shutil.which(name, path=os.pathsep.join((os.environ.get("PATH", ""), _SBIN)))


def missing() -> list[str]:
    """The programs the cluster needs that are not installed here."""
    return [name for name in DAEMONS + CLIENTS if which(name) is None]


class SlurmClusterError(RuntimeError):
    pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), to tell it from a later process with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str) -> bool:
    if _start_time(pid) != start:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _marked(marker: str, spare: set[int]) -> set[int]:
    """The processes whose environment holds `marker` (NAME=value), and all their descendants, less `spare`."""
    entry = marker.encode()
    spare = spare | {os.getpid()}
    parents: dict[int, int] = {}
    marked = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        pid = int(d.name)
        try:
            parents[pid] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if pid not in spare and entry in (d / "environ").read_bytes().split(b"\0"):
                marked.add(pid)
        except (OSError, ValueError, IndexError):
            continue
    grown = True
    while grown:
        more = {pid for pid, ppid in parents.items() if ppid in marked and pid not in marked | spare}
        marked |= more
        grown = bool(more)
    return marked


def _kill(pids: list[tuple[int, str]], marker: str | None, spare: set[int], grace: float = 10.0) -> None:
    """SIGTERM each (pid, start time) in turn, SIGKILL it after `grace` seconds; then SIGKILL the marked processes."""
    for pid, start in pids:
        if not _alive(pid, start):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid, start) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
    if marker:
        for _ in range(3):  # a dying slurmstepd may still fork; look again
            left = _marked(marker, spare)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _watchdog() -> None:
    """`python slurm_cluster.py --watchdog`: reads `pid start`, `marker NAME=value` and `rm PATH` lines from stdin;
    at EOF (the test process exited or died) kills the processes as `_kill` does and removes the folders; a line
    `done` means all that is done already."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # outlive the test process, whatever signal it gets
    pids: list[tuple[int, str]] = []
    marker = None
    folders = []
    for line in sys.stdin:
        word, _, rest = line.rstrip("\n").partition(" ")
        if word == "done":
            return
        if word == "marker":
            marker = rest
        elif word == "rm":
            folders.append(rest)
        elif word:
            pids.append((int(word), rest))
    _kill(pids[::-1], marker, spare=set())  # newest first, as _Processes.stop
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class SlurmCluster:
    """A running cluster. `env` goes into os.environ (or a subprocess's env) for the SLURM clients to find it."""
    root: Path
    name: str  # ClusterName, unique
    node: str  # NodeName = `hostname -s`
    partition: str
    conf: Path  # slurm.conf; slurmdbd.conf beside it
    log_dir: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # mariadb, slurmdbd, slurmctld, slurmd
    startup: dict[str, float] = field(default_factory=dict)  # seconds from the start until each was ready

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A SLURM client command (`sbatch`, `scontrol`, ...) against this cluster; text output captured."""
        cmd = [which(args[0]) or args[0], *args[1:]]
        proc = subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise SlurmClusterError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sbatch(self, *args: str) -> str:
        """Submits with `sbatch --parsable ARGS` (in this process's working directory); returns the job id."""
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def sacct(self, job_id: str | int, steps: bool = False, duplicates: bool = False) -> list[tuple[str, str]]:
        """(JobID, State) rows of `sacct -j job_id`: the allocation only unless `steps`, its latest run only
        unless `duplicates` (a requeued job has one row per run). State as sacct writes it ("CANCELLED by 0")."""
        args = ["sacct", "-j", str(job_id), "-n", "-P", "-o", "JobID,State"]
        args += [] if steps else ["-X"]
        args += ["-D"] if duplicates else []
        rows = [line.split("|") for line in self.run(*args).stdout.splitlines() if line.strip()]
        return [(row[0], row[1]) for row in rows]

    def state(self, job_id: str | int) -> str | None:
        """The job's state in sacct, first word only ("CANCELLED", not "CANCELLED by 0"); None before sacct knows it."""
        rows = [state for jid, state in self.sacct(job_id) if jid == str(job_id)]
        return rows[-1].split()[0] if rows else None

    def wait_state(self, job_id: str | int, states: set[str] | frozenset[str] | tuple[str, ...] | str,
                   timeout: float = 60, poll: float = 0.25) -> str:
        """Polls sacct until the job's state is one of `states`; returns it, or raises SlurmClusterError with
        the last state seen, squeue and the daemons' logs after `timeout` seconds."""
        states = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.state(job_id)
            if seen in states:
                return seen
            time.sleep(poll)
        raise SlurmClusterError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s (last state in sacct: "
                                f"{seen}; squeue: {self.squeue()})\n{self.log_tails()}")

    def squeue(self) -> list[tuple[str, str]]:
        """(JobID, State) of every job slurmctld still knows (pending, running, completing, or recently ended
        within MinJobAge): real time, unlike sacct."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i|%T").stdout
        return [tuple(line.split("|", 1)) for line in out.splitlines() if line.strip()]

    def squeue_state(self, job_id: str | int) -> str | None:
        return dict(self.squeue()).get(str(job_id))

    def wait_done(self, job_id: str | int, timeout: float = 60) -> str:
        """Waits for the job to end (any of FINAL_STATES in sacct) and returns its state."""
        return self.wait_state(job_id, FINAL_STATES, timeout=timeout)

    def cancel_all(self, timeout: float = 15) -> None:
        """Cancels every job and waits (up to `timeout` seconds; KillWait=10) until none is left running."""
        ids = [jid for jid, state in self.squeue() if state not in FINAL_STATES]
        if ids:
            self.run("scancel", *ids, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(state not in FINAL_STATES for _, state in self.squeue()):
            time.sleep(0.2)

    def log_tails(self, lines: int = 25) -> str:
        """The last `lines` lines of each daemon's log, for error messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {lines} lines)\n" + "\n".join(text))
        return "\n".join(parts)


class _Processes:
    """The daemons started here, by pid, told to the watchdog as they start."""

    def __init__(self, marker: str):
        self.marker = marker
        self.popens: list[subprocess.Popen] = []
        self.watchdog = subprocess.Popen([sys.executable, __file__, "--watchdog"], stdin=subprocess.PIPE, text=True,
                                         start_new_session=True)
        self._tell(f"marker {marker}")

    def remove_later(self, folder: Path) -> None:
        """Have the watchdog remove `folder` if this process dies before `stop`."""
        self._tell(f"rm {folder}")

    def _tell(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.watchdog.stdin.write(line + "\n")
            self.watchdog.stdin.flush()

    def start(self, cmd: list[str], env: dict[str, str], out: Path) -> subprocess.Popen:
        with open(out, "ab") as f:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.popens.append(proc)
        self._tell(f"{proc.pid} {_start_time(proc.pid)}")
        return proc

    def stop(self) -> None:
        """Newest first: slurmd, slurmctld, slurmdbd, MariaDB; then what they left behind."""
        pids = [(p.pid, _start_time(p.pid)) for p in reversed(self.popens) if p.poll() is None]
        _kill([(pid, start) for pid, start in pids if start], self.marker, spare={self.watchdog.pid})
        for p in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
        self._tell("done")
        with contextlib.suppress(OSError, ValueError):
            self.watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.watchdog.wait(timeout=30)


def _wait(what: str, ready, procs: _Processes, timeout: float, logs) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        dead = [p for p in procs.popens if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"exited with {dead[0].returncode}: {dead[0].args[0]}" if dead else f"{timeout:.0f} s passed"
            raise SlurmClusterError(f"SLURM test cluster: {what} not ready ({why})\n{logs()}")
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _write(path: Path, settings: list[tuple[str, object]], extra: tuple[str, ...] = (), mode: int = 0o644) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in settings) + "".join(f"{line}\n" for line in extra))
    path.chmod(mode)


def _write_confs(cluster: SlurmCluster, state: Path, spool: Path, cpus: int, memory_mb: int) -> None:
    """slurm.conf and slurmdbd.conf (found beside it through SLURM_CONF)."""
    node, root, logs, ports = cluster.node, cluster.root, cluster.log_dir, cluster.ports
    _write(cluster.conf, [
        # The controller and the node must be called `hostname -s`; addresses stay on the loopback
        ("ClusterName", cluster.name), ("SlurmctldHost", f"{node}(127.0.0.1)"),
        ("SlurmctldPort", ports["slurmctld"]), ("SlurmdPort", ports["slurmd"]),
        ("SlurmUser", "root"), ("SlurmdUser", "root"),
        # No munge, no cgroups
        ("AuthType", "auth/none"), ("CredType", "cred/none"), ("MpiDefault", "none"),
        ("ProctrackType", "proctrack/linuxproc"), ("TaskPlugin", "task/none"), ("SwitchType", "switch/none"),
        ("StateSaveLocation", state), ("SlurmdSpoolDir", spool),
        ("SlurmctldPidFile", root / "slurmctld.pid"), ("SlurmdPidFile", root / "slurmd.pid"),
        ("SlurmctldLogFile", logs / "slurmctld.log"), ("SlurmdLogFile", logs / "slurmd.log"),
        ("SlurmctldDebug", "info"), ("SlurmdDebug", "info"),
        # Quick: a batch job starts within ~1 s of sbatch (the default batch_sched_delay is 3 s); a requeued job
        # waits cred_expire (default 120 s) before it may start again, then the next scheduling pass (60 s)
        ("SelectType", "select/cons_tres"), ("SelectTypeParameters", "CR_Core"),
        ("SchedulerType", "sched/backfill"), ("SchedulerParameters", "batch_sched_delay=0,sched_interval=2"),
        ("AuthInfo", "cred_expire=5"), ("PriorityType", "priority/basic"),
        ("JobAcctGatherType", "jobacct_gather/none"), ("JobCompType", "jobcomp/none"),
        ("AccountingStorageType", "accounting_storage/slurmdbd"), ("AccountingStorageHost", "127.0.0.1"),
        ("AccountingStoragePort", ports["slurmdbd"]),
        ("JobRequeue", 1), ("KillWait", 10), ("MinJobAge", 10), ("InactiveLimit", 0), ("ReturnToService", 2),
        ("SlurmdTimeout", 300), ("MessageTimeout", 10), ("MailProg", "/bin/true"),
        # The node's CPUs and memory as configured here, whatever the machine has
        ("SlurmdParameters", "config_overrides"),
    ], (
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={cluster.partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ))
    _write(cluster.conf.with_name("slurmdbd.conf"), [
        ("AuthType", "auth/none"), ("DbdHost", node), ("DbdAddr", "127.0.0.1"), ("DbdPort", ports["slurmdbd"]),
        ("SlurmUser", "root"), ("DebugLevel", "info"), ("LogFile", logs / "slurmdbd.log"),
        ("PidFile", root / "slurmdbd.pid"),
        ("StorageType", "accounting_storage/mysql"), ("StorageHost", "127.0.0.1"), ("StoragePort", ports["mariadb"]),
        ("StorageUser", "root"), ("StorageLoc", f"slurm_acct_{cluster.name}"),
    ], mode=0o600)  # slurmdbd insists


# MariaDB for slurmdbd: InnoDB as slurmdbd recommends (it logs an error otherwise; the buffer pool is only reserved:
# ~130 MB resident), no binary log, no fsync; the bootstrap needs none of it
_MARIADB_BOOTSTRAP = ("--skip-name-resolve", "--innodb-log-file-size=64M")
_MARIADB_SETTINGS = (*_MARIADB_BOOTSTRAP, "--innodb-buffer-pool-size=1G", "--innodb-lock-wait-timeout=900",
                     "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--bind-address=127.0.0.1")


@contextlib.contextmanager
def slurm_cluster(root: Path, partition: str = "debug", cpus: int = 4, memory_mb: int = 16000,
                  timeout: float = 60):
    """Starts a private cluster under `root` (created if needed) and yields a `SlurmCluster`; stops it on exit.

    One node (`hostname -s`) with `cpus` CPUs (more than the machine has is fine: tiny jobs run side by side) and
    `memory_mb` of memory, in partition `partition` (the default, no time limit). JobRequeue=1, KillWait=10.
    Raises SlurmClusterError (with the daemons' log tails) when something is not ready within `timeout` seconds.
    Takes ~3 s; the first job after it may wait ~3 s more for the controller's first scheduling pass.
    """
    if os.geteuid() != 0:
        raise SlurmClusterError("the SLURM test cluster runs as root (slurmd starts jobs as their users)")
    if missing():
        raise SlurmClusterError(f"not installed: {' '.join(missing())}")
    root = Path(root).resolve()
    name = "t" + uuid.uuid4().hex[:10]  # ClusterName: lower case, short; also in the database's name
    etc, state, log_dir, db = root / "etc", root / "state", root / "log", root / "mariadb"
    for d in (etc, state, log_dir):
        d.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(db, ignore_errors=True)
    ports = dict(zip(("mariadb", "slurmdbd", "slurmctld", "slurmd"), _free_ports(4)))
    env = {"SLURM_CONF": str(etc / "slurm.conf"), MARKER: name}
    cluster = SlurmCluster(root=root, name=name, node=socket.gethostname().split(".")[0], partition=partition,
                           conf=etc / "slurm.conf", log_dir=log_dir, env=env, ports=ports)
    # The daemons' environment: no settings of an enclosing allocation, this SLURM_CONF, the marker, sbin on PATH
    daemon_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    daemon_env.update(env, PATH=os.pathsep.join((os.environ.get("PATH", ""), _SBIN)))

    procs = _Processes(f"{MARKER}={name}")
    # Unix socket paths are limited to ~107 bytes: MariaDB's socket and slurmd's spool (slurmstepd's sockets)
    # go in a short folder in /tmp
    short = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp" if os.access("/tmp", os.W_OK) else None))
    procs.remove_later(short)
    procs.remove_later(db)
    try:
        spool = short / "spool"
        spool.mkdir()
        _write_confs(cluster, state, spool, cpus, memory_mb)
        logs = cluster.log_tails
        t0 = time.monotonic()

        def ready(what: str) -> None:
            cluster.startup[what] = round(time.monotonic() - t0, 2)

        install = subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
                                  "--auth-root-authentication-method=normal", "--skip-test-db",
                                  *_MARIADB_BOOTSTRAP], env=daemon_env, capture_output=True, text=True, timeout=timeout)
        (log_dir / "mariadb-install-db.out").write_text(install.stdout + install.stderr)
        if install.returncode:
            raise SlurmClusterError(f"mariadb-install-db exited {install.returncode}:\n"
                                    f"{install.stdout}{install.stderr}")
        ready("mariadb-install-db")
        procs.start([which("mariadbd"), "--no-defaults", f"--datadir={db}", "--user=root",
                     f"--socket={short / 'mysqld.sock'}", f"--port={ports['mariadb']}",
                     f"--pid-file={root / 'mariadb.pid'}", f"--log-error={log_dir / 'mariadb.log'}",
                     *_MARIADB_SETTINGS],
                    daemon_env, log_dir / "mariadb.out")
        _wait("MariaDB", lambda: _port_open(ports["mariadb"]), procs, timeout, logs)
        ready("mariadb")

        procs.start([which("slurmdbd"), "-D"], daemon_env, log_dir / "slurmdbd.out")
        _wait("slurmdbd", lambda: _port_open(ports["slurmdbd"]), procs, timeout, logs)
        added = cluster.run("sacctmgr", "-i", "add", "cluster", name, check=False)
        if added.returncode and "already exists" not in added.stdout + added.stderr:
            raise SlurmClusterError(f"sacctmgr add cluster {name}: {added.stdout}{added.stderr}\n{logs()}")
        ready("slurmdbd")

        procs.start([which("slurmctld"), "-D", "-c", "-i"], daemon_env, log_dir / "slurmctld.out")
        _wait("slurmctld", lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, procs, timeout, logs)
        ready("slurmctld")
        # niced, and its jobs with it: the runs a test leaves to SLURM take the CPU the rest of the suite leaves
        procs.start(["nice", "-n", "10", which("slurmd"), "-D"], daemon_env, log_dir / "slurmd.out")

        def idle() -> bool:
            out = cluster.run("sinfo", "-h", "-N", "-n", cluster.node, "-o", "%T", check=False).stdout.split()
            return out[:1] == ["idle"]
        _wait(f"node {cluster.node} (idle in sinfo)", idle, procs, timeout, logs)
        ready("slurmd")
        yield cluster
    finally:
        try:
            if len(procs.popens) == 4 and all(p.poll() is None for p in procs.popens):
                with contextlib.suppress(Exception):  # slurmd ends the jobs: SIGTERM, SIGKILL after KillWait
                    cluster.cancel_all()
        finally:
            procs.stop()
            shutil.rmtree(short, ignore_errors=True)
            shutil.rmtree(db, ignore_errors=True)  # ~150 MB; the logs stay

if __name__ == "__main__":
    if sys.argv[1:] == ["--watchdog"]:
        _watchdog()
    else:
        sys.exit(f"usage: {sys.argv[0]} --watchdog (started by slurm_cluster)")
