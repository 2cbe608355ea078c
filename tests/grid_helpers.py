"""What the tests of the launcher share: tiny grids on tiny image folders, and the processes a grid leaves."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny(folders, **kw):
    """A run's parameters that train in seconds on `conftest.make_image_folders` output."""
    return dict(dict(dataset="folder", data_path=str(folders), size=16, resize=18, epochs=1, n_classes=2,
                     n_images=2, lr=0.01), **kw)


def descendants(pid):
    """Every process below `pid` (a kernel in a session of its own too), from /proc's parent links."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def alive(pids):
    """The pids that still run (a zombie has ended)."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


def wait_for(condition, limit=180, what="the condition"):
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {limit} s")
        time.sleep(0.1)


def grid_process(code, **popen):
    """A Python process running `code` in the project root as a terminal would: a process group of its own, so
    that a test can send the group a Ctrl-C."""
    return python_process(["-c", code], **popen)


def python_process(args, **popen):
    """`python ARGS` (`-c CODE`, `-m MODULE ...`) in the project root as a terminal would (`grid_process`), its
    output and errors in one text stream."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def ctrl_c(p, below):
    """Ctrl-C in the terminal of a grid's process `p` (`grid_process`), whose processes below are `below`: the whole
    process group gets SIGINT. Returns p's output and the seconds until p and every process below it had ended (at
    most 10 s after p)."""
    os.killpg(p.pid, signal.SIGINT)
    t0 = time.monotonic()
    text, _ = p.communicate(timeout=60)
    wait_for(lambda: not alive(below), limit=10, what="every worker's exit")
    return text, time.monotonic() - t0


def record(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def same_training(a, b):
    """Two records trained alike: the same per-epoch losses and accuracies and the same final metrics."""
    keys = ("epoch", "train_loss", "valid_loss", "top1", "top5")
    return ([{k: h[k] for k in keys} for h in a["history"]] == [{k: h[k] for k in keys} for h in b["history"]]
            and {k: a["metrics"][k] for k in ("top1", "valid_loss")} == {k: b["metrics"][k] for k in ("top1", "valid_loss")})


__all__ = ["tiny", "descendants", "alive", "wait_for", "grid_process", "python_process", "ctrl_c", "record",
           "same_training", "os"]
