"""Shared by the benchmark scripts: timing, JSON output, machine description, small image folders.

Plain torch, NumPy and PIL (no fastai), so that `bench_gpu.py` runs on a machine without fastai.
"""
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "reports" / "perf"
sys.path.insert(0, str(ROOT))  # apikit from this checkout, installed or not


def add_threads_arg(parser):
    """`--threads N` (default 1): torch's CPU threads. One thread keeps CPU ratios steady on a shared machine,
    where several threads per process oversubscribe the cores and their spin-waits swamp the timings."""
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's default)")


def set_threads(n):
    if n > 0:
        torch.set_num_threads(n)


def sync(device):
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def clock(device="cpu"):
    """The timer for `device`: wall-clock with a GPU; on a CPU this process's CPU time, which other
    processes' load on a shared machine barely changes (with one torch thread it is the compute time)."""
    return time.perf_counter if torch.device(device).type == "cuda" else time.process_time


def timed(fn, device="cpu"):
    """Seconds one call of `fn` takes by `clock(device)` (synchronising a GPU before and after)."""
    now = clock(device)
    sync(device)
    t0 = now()
    fn()
    sync(device)
    return now() - t0


def interleaved(fns, reps, warmup=1, device="cpu"):
    """{name: [seconds per rep]} for each of `fns`, timed in turns (A B A B ...) so that load drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return times


def summary(times):
    """Median, min and max of a list of seconds, and the count."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def machine():
    """Where the numbers were measured."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(name, data):
    """Write `data` (with the machine description) to reports/perf/<name>.json; returns the path."""
    PERF.mkdir(parents=True, exist_ok=True)
    path = PERF / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1, default=str) + "\n")
    return path


def make_image_folders(root, n_classes, n_images, size, seed=0, ext="png"):
    """ImageNet-style train/<class>/ and valid/<class>/ folders of random images (for step and inference timing)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_images), ("valid", 1)):
        for c in range(n_classes):
            d = Path(root) / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.{ext}")
    return Path(root)
