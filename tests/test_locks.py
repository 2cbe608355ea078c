"""`apikit/locks.py`: locks the kernel releases, for run folders and shared caches."""
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from apikit.record import read_metrics
from apikit.record import run_status
from apikit.runs import RunInUse, run_lock, write_json


def test_three_processes_starting_together_never_both_hold_a_folder(tmp_path):
    """30 trials of 3 processes taking one run folder's lock at the same instant (benchmarks/bench_races.py, forked
    at a barrier): one holds it, the others are refused naming it (the O_EXCL lock gave two holders in 4-9 of 30)."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "races.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_races.py"), "--lock-trials", "30",
                           "--train-trials", "0", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    locks = json.loads(out.read_text())["run_lock"]
    assert locks["trials"] == 30 and locks["most_holders_at_once"] == {"1": 30}
    assert locks["trials_with_two_holders"] == 0
    assert set(locks["outcomes"]) <= {"held", "refused, naming the holder"}
    assert locks["outcomes"].get("refused, naming the holder", 0) >= 15  # a late starter may take it after a holder


HOLDER = """
import sys, time
from apikit.runs import run_lock
with run_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_killed_holder_frees_the_folder_at_once(tmp_path):
    """The kernel releases the lock of a killed process: no guessing from pids, and a live holder is seen as one."""
    write_json(tmp_path / "metrics.json", {"status": "running"})
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        assert run_status(tmp_path, read_metrics(tmp_path)) == "running"
        with pytest.raises(RunInUse, match=f"in use by another run \\(pid {proc.pid} on "):
            with run_lock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid  # its record stays, as killed
    assert run_status(tmp_path, read_metrics(tmp_path)) == "interrupted"
    with run_lock(tmp_path) as me:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == me["pid"]


@pytest.mark.parametrize("content", ['"x"', "[1]", "{}", '{"pid": "1"}', ""])
def test_a_lock_file_apikit_did_not_write_is_reported_not_crashed_on(tmp_path, content):
    from apikit.runs import holder, lock_problem
    (tmp_path / ".lock").write_text(content)
    write_json(tmp_path / "metrics.json", {"status": "running"})
    assert holder(tmp_path / ".lock") is None
    assert run_status(tmp_path, read_metrics(tmp_path)) == "interrupted"  # nobody holds it
    assert (lock_problem(tmp_path / ".lock") is None) == (content == "")  # an empty file: a holder just starting
    if content:
        assert lock_problem(tmp_path / ".lock").startswith(f".lock holds {content!r}, not a holder record")
    with run_lock(tmp_path) as me:
        assert holder(tmp_path / ".lock") == me


def test_a_lock_recorded_by_another_host_is_refused_with_the_way_out(tmp_path):
    record = dict(pid=1234, host="other-host", started="2025-01-01 00:00:00")
    (tmp_path / ".lock").write_text(json.dumps(record))
    with pytest.raises(RunInUse, match=r"may be in use by a run on another host: .*records pid 1234 on other-host.*"
                                       r"network filesystem \(NFS\) may not be shared between hosts.*delete "
                                       rf"{tmp_path / '.lock'} and re-run"):
        with run_lock(tmp_path):
            pass
    assert json.loads((tmp_path / ".lock").read_text()) == record  # left for its owner
    write_json(tmp_path / "metrics.json", {"status": "running"})
    assert run_status(tmp_path, read_metrics(tmp_path)) == "running"  # this machine cannot tell


def test_a_lock_file_hard_linked_to_another_file_is_refused_never_written_through(tmp_path):
    """A .lock that is another name of a file outside the run folder: taking the lock would write the holder's
    record into that file. Refused, for a run folder and a cache lock alike; the other file keeps its text."""
    from apikit.locks import BadLockFile, file_lock, lock_problem
    outside = tmp_path / "thesis.tex"
    outside.write_text("my thesis")
    run = tmp_path / "run"
    run.mkdir()
    os.link(outside, run / ".lock")
    said = (f"{run / '.lock'} is a hard link (one of 2 names of one file, which may be outside this folder; deleting "
            "this name leaves that file as it is), not a lock file apikit wrote; delete it and try again.")
    with pytest.raises(BadLockFile) as e:
        with run_lock(run):
            pass
    assert str(e.value) == said
    with pytest.raises(BadLockFile, match="is a hard link"):
        with file_lock(run / ".lock"):
            pass
    assert outside.read_text() == "my thesis" and os.stat(outside).st_nlink == 2
    assert lock_problem(run / ".lock").startswith(".lock is a hard link (one of 2 names of one file")
    write_json(run / "metrics.json", {"status": "running"})
    assert run_status(run, read_metrics(run)) == "interrupted"  # nobody holds it, and its text is not read as one
    (run / ".lock").unlink()  # the way out the message gives
    with run_lock(run) as me:
        assert json.loads((run / ".lock").read_text()) == me
    assert outside.read_text() == "my thesis"
