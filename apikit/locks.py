"""Locks the kernel releases: one run per run folder, one process building a shared cache at a time.

A lock is `fcntl.flock` on an open lock file, held for as long as the file stays open: however its holder ends
(SIGKILL, power loss), the kernel releases it, so nothing guesses whether a holder is alive and two processes
starting at the same instant never both hold it. After taking it, the holder writes its pid, host and start time
into the file, for the message of whoever finds it taken, and removes the file when it lets go. A record left by
another host is never taken over: flock on a network filesystem (NFS) may not be shared between hosts, so this
machine cannot tell whether that run still holds the folder, and the message says how to clear it.
"""
import fcntl
import json
import os
import socket
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RunInUse", "BadLockFile", "run_lock", "file_lock", "holder", "is_held", "lock_problem", "file_kind"]

# Attempts, over about 20 ms, before a run is refused: `is_held` takes the lock shared for microseconds to look.
_TRIES, _PAUSE = 4, 0.005
# A cache lock's waiter polls this many times 0.1 s apart before it says whom it waits for.
QUIET_WAIT = 20


class RunInUse(RuntimeError):
    """Another process holds the run folder, or its lock file records a run on another host."""


class BadLockFile(RuntimeError):
    """A lock file that is not a regular file (a link, a FIFO, a folder), or one with other names (a hard link to a
    file that may be outside the folder): apikit neither follows, writes through nor replaces it."""


def _me():
    return dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"))


def file_kind(mode):
    """What a file that is not a regular one is, in words ("a FIFO"), from its `st_mode`."""
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a link"
            if stat.S_ISLNK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device file")


def _not_a_lock(st):
    """What a lock file with this stat is instead ("a FIFO", "a hard link ..."), or None for a plain file of its own."""
    if not stat.S_ISREG(st.st_mode):
        return file_kind(st.st_mode)
    if st.st_nlink > 1:  # the holder's record would be written into that other file too
        return (f"a hard link (one of {st.st_nlink} names of one file, which may be outside this folder; deleting this "
                "name leaves that file as it is)")
    return None


def _open(path, flags):
    """A descriptor on the regular file `path` that has no other name: links are not followed, a FIFO never blocks
    the open, and a hard link is never written through."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if os.path.islink(path) or os.path.isdir(path):
            raise BadLockFile(f"{path} is {file_kind(os.lstat(path).st_mode)}, not a lock file apikit wrote; delete it "
                              "and try again.") from None
        raise e
    kind = _not_a_lock(os.fstat(fd))
    if kind is not None:
        os.close(fd)
        raise BadLockFile(f"{path} is {kind}, not a lock file apikit wrote; delete it and try again.")
    return fd


def _take(path, blocking):
    """(fd, True) holding the lock on the file now at `path`, or (fd, False) when another process holds it."""
    while True:
        fd = _open(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return fd, False
        except BaseException:
            os.close(fd)
            raise
        # The holder before us removes the file as it lets go: a lock on a removed file would lock nothing.
        try:
            st, own = os.stat(path, follow_symlinks=False), os.fstat(fd)
            if (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev):
                return fd, True
        except FileNotFoundError:
            pass
        os.close(fd)


def _record(fd, info):
    """Write the holder's record into the lock file; the lock holds even where the record cannot be written."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError:
        pass


def _let_go(path, fd):
    """Remove the lock file if it is still ours, then close it (which releases the lock)."""
    try:
        st, own = os.stat(path, follow_symlinks=False), os.fstat(fd)
        if (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev):
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path, limit=4096):
    """The first `limit` bytes of the regular file `path` (no link followed, no FIFO opened), or None."""
    try:
        fd = _open(path, os.O_RDONLY)
    except (OSError, BadLockFile):
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse(raw):
    """The holder record in a lock file's bytes, or None when they are not one."""
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: a crafted file nested deeper than Python recurses
        return None
    ok = (isinstance(info, dict) and isinstance(info.get("pid"), int) and isinstance(info.get("host"), str)
          and isinstance(info.get("started"), str))
    return info if ok else None


def holder(lock_file):
    """The holder recorded in a lock file ({pid, host, started}), or None if there is none or it is not a record."""
    raw = _read(lock_file)
    return None if not raw else _parse(raw)


def lock_problem(lock_file):
    """Why a lock file is not one apikit wrote (its content, shortened), or None (no file, empty, or a record)."""
    path = Path(lock_file)
    try:
        kind = _not_a_lock(os.lstat(path))
    except OSError:
        return None
    if kind is not None:
        return f"{path.name} is {kind}, not a lock file"
    raw = _read(path, 200)
    if not raw or _parse(raw) is not None:
        return None
    return f"{path.name} holds {raw[:40].decode('utf-8', 'replace')!r}, not a holder record (pid, host, started)"


def is_held(lock_file):
    """Whether a live process holds the lock on `lock_file` (False when there is no such regular file)."""
    try:
        fd = _open(lock_file, os.O_RDONLY)
    except (OSError, BadLockFile):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # never blocks; released at once by the close below
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _recorded(lock, wait=0.5):
    """The holder's record, waiting up to `wait` s for a holder that has just taken the lock to write it."""
    end = time.monotonic() + wait
    while True:
        info = holder(lock)
        if info is not None or time.monotonic() > end:
            return info
        time.sleep(0.02)


def _in_use(run_dir, info):
    if info is None:
        who = "a process that recorded no pid in .lock"
    else:
        who = f"pid {info['pid']} on {info['host']}, started {info['started']}"
    there = "" if info is None or info["host"] == socket.gethostname() else f" (on {info['host']}: stop it there)"
    return (f"{run_dir} is in use by another run ({who}); wait for it to finish, stop it{there}, or choose another "
            "run_dir.")


def _other_host(run_dir, lock, info):
    return (f"{run_dir} may be in use by a run on another host: {lock} records pid {info['pid']} on {info['host']}, "
            f"started {info['started']}. This machine cannot see that host's processes, and locks on a network "
            "filesystem (NFS) may not be shared between hosts, so apikit does not take the folder over. If that run "
            f"has ended (no such process on {info['host']}), delete {lock} and re-run; otherwise wait for it to finish "
            "or choose another run_dir.")


@contextmanager
def run_lock(run_dir):
    """Hold `run_dir/.lock` for one run: a second run on the folder is refused at once, naming the holder.

    A killed holder's lock is released by the kernel, so a resume is never blocked by the run it resumes. Taking
    the lock is also the test that `run_dir` is writable (PermissionError naming the folder otherwise).
    """
    lock = Path(run_dir) / ".lock"
    try:
        for _ in range(_TRIES):
            fd, held = _take(lock, blocking=False)
            if held:
                break
            os.close(fd)
            time.sleep(_PAUSE)
    except OSError as e:
        raise PermissionError(f"run_dir={str(run_dir)!r} is not writable ({e.strerror}): choose a folder you can "
                              "write to.") from None
    if not held:
        raise RunInUse(_in_use(run_dir, _recorded(lock)))
    before = holder(lock)
    if before is not None and before["host"] != socket.gethostname():
        os.close(fd)  # released, and the other host's record stays for its owner
        raise RunInUse(_other_host(run_dir, lock, before))
    me = _me()
    _record(fd, me)
    try:
        yield me
    finally:
        _let_go(lock, fd)


@contextmanager
def file_lock(path):
    """An exclusive, blocking lock on `path` (created if needed) for building a shared cache once.

    A process that has to wait more than a moment says for whom, on stderr, once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, held = _take(path, blocking=False)
    for _ in range(QUIET_WAIT):  # most holders only read a fresh cache: no need to announce so short a wait
        if held:
            break
        os.close(fd)
        time.sleep(0.1)
        fd, held = _take(path, blocking=False)
    if not held:
        os.close(fd)
        info = _recorded(path, wait=0.2)
        who = f"pid {info['pid']} on {info['host']} since {info['started']}" if info else "another process"
        print(f"apikit: waiting for {who}, which is building what {path} guards", file=sys.stderr, flush=True)
        fd, _ = _take(path, blocking=True)
    _record(fd, _me())
    try:
        yield
    finally:
        _let_go(path, fd)
