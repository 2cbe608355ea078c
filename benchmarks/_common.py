"""Shared by the benchmark scripts: timing, where their JSON goes, machine description, the generated data set.

Plain torch at import (no fastai), so that `bench_gpu.py` runs on a machine without fastai; `synthetic_dls`
and `step_timer` import fastai when called.
"""
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "reports" / "perf"
sys.path.insert(0, str(ROOT))  # apikit from this checkout, installed or not


def add_threads_arg(parser):
    """`--threads N` (default 1): torch's CPU threads. One thread keeps CPU ratios steady on a shared machine,
    where several threads per process oversubscribe the cores and their spin-waits swamp the timings."""
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's default)")


def add_step_args(parser, out_name, dry_steps):
    """The options both GPU step benchmarks share (the same configurations are compared across them)."""
    p = parser
    p.add_argument("--archs", nargs="+", default=["resnet50", "resnet101"])
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--n-classes", type=int, default=30, help="N_cl")
    p.add_argument("--n-images", type=int, default=4, help="N_im")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration (cudnn autotuning)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    p.add_argument("--dry-run", action="store_true",
                   help=f"CPU, resnet18, 32 px, 4 x 3 batch, {dry_steps} step(s): checks the script")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "reports" / "perf" / f"{out_name}.json"))
    return p


def dry_run_sizes(args, dry_steps):
    """--dry-run: the tiny sizes that check a script on a CPU."""
    if args.dry_run:
        args.archs, args.size, args.n_classes, args.n_images, args.warmup, args.steps = ["resnet18"], 32, 4, 3, 1, dry_steps
    return args


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


def write_perf(name, data):
    """Write `data` with the machine description to reports/perf/<name>.json (apikit's `write_json`); returns the
    path."""
    from apikit.runs import write_json
    PERF.mkdir(parents=True, exist_ok=True)
    return write_json(PERF / f"{name}.json", {"machine": machine(), **data})


def synthetic_dls(root, n_classes, n_images, size, resize=None, draw=None, n_train=None, n_test=1, device="cpu",
                  **kwargs):
    """The user's DataLoaders (`apikit.data.get_dls("synthetic")`) over the generated CUB stand-in drawn at
    `draw` px (default `resize`) under `root`: class-balanced `n_classes` x `n_images` training batches of
    `size` px crops from a squish-resize to `resize` (default `size`), `n_train` training images per class
    (default `n_images`). Needs fastai; the set is drawn once per `root` and parameters."""
    from apikit.data import get_dls
    resize = resize or size
    synthetic = dict(n_classes=n_classes, n_train=n_train or n_images, n_test=n_test, size=draw or resize)
    return get_dls("synthetic", path=Path(root) / "synthetic", size=size, resize=resize, n_classes=n_classes,
                   n_images=n_images, num_workers=kwargs.pop("num_workers", 0), device=device, synthetic=synthetic,
                   **kwargs)


def step_timer(device, skip_validation=True):
    """A fastai callback timing each training step from `before_batch` to `after_batch` (`.times`, seconds by
    `clock(device)`) and the wait for the loader between steps (`.waits`); validation is skipped."""
    from fastai.callback.core import Callback, CancelValidException
    now = clock(device)

    class StepTimer(Callback):
        order = -100  # first in before_batch and in after_batch, so it brackets the whole step

        def __init__(self):
            self.times, self.waits, self.t1 = [], [], None

        def before_epoch(self):
            """The first batch's wait includes the loader's start (worker processes): not counted."""
            self.t1 = None

        def before_batch(self):
            """Start the step's clock once the queued GPU work is done; the time since the last step is the loader's."""
            sync(device)
            self.t0 = now()
            if self.t1 is not None:
                self.waits.append(self.t0 - self.t1)

        def after_batch(self):
            """Stop the step's clock once the GPU is done."""
            sync(device)
            self.t1 = now()
            self.times.append(self.t1 - self.t0)

        def before_validate(self):
            """Skip validation: it is not a training step."""
            if skip_validation:
                raise CancelValidException()

    return StepTimer()
