"""The launcher's cost: how long a run waits from its submission to its first line, one after another in this
process, on a local worker and as a job of the test SLURM cluster (tests/slurm_cluster.py, where SLURM is
installed and this runs as root); and a tiny grid's wall time on 1 and 2 local workers (the ratio).

    .venv/bin/python benchmarks/bench_launch.py            # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_launch.py --no-slurm

"First line" is the run's metrics.json appearing, which train() writes right after it has checked its parameters:
the wait covers the worker or job starting, the notebook's kernel starting and apikit's imports.
"""
import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, write_perf

sys.path.insert(0, str(ROOT / "tests"))  # the generated image folders and the SLURM cluster the tests use


def tiny_runs(data, out, n, epochs):
    from apikit.schema import check_params
    from apikit.launch import Run
    runs = []
    for seed in range(n):
        p = check_params(dataset="folder", data_path=str(data), size=16, resize=18, epochs=epochs, n_classes=2,
                         n_images=2, lr=0.01, seed=seed)
        p.pop("run_dir")
        runs.append(Run(out / f"seed-{seed}", p, f"seed-{seed}"))
    return runs


def first_lines(runs, started, stop):
    """Poll until `stop` is set: when each run's metrics.json first appeared, seconds after `started`."""
    seen = {}
    while not stop.is_set():
        for run in runs:
            if run.label not in seen and (run.run_dir / "metrics.json").exists():
                seen[run.label] = time.time() - started
        time.sleep(0.02)
    return seen


def measure(runs, out, **options):
    """(wall seconds, [seconds to each run's first line]) for one launch of `runs`."""
    from apikit.launch import launch
    stop, seen = threading.Event(), {}
    t0 = time.time()
    watcher = threading.Thread(target=lambda: seen.update(first_lines(runs, t0, stop)))
    watcher.start()
    try:
        status = launch(runs, out, html=False, log=lambda line: None, stdout=False, **options)
    finally:
        stop.set()
        watcher.join()
    wall = time.time() - t0
    assert set(status.values()) == {"finished"}, status
    return wall, [seen[r.label] for r in runs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4, help="runs in the tiny grid")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-slurm", action="store_true", help="skip the SLURM cluster")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # one thread per run, whatever the worker count: the same work each time
    from conftest import make_image_folders
    result = dict(runs=args.runs, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_image_folders(tmp / "data", n_classes=4, n_train=4, n_valid=2, size=20)
        for name, options in (("one_after_another", dict(workers=1, threads=1)),
                              ("two_local_workers", dict(workers=2, threads=1))):
            out = tmp / name
            wall, first = measure(tiny_runs(data, out, args.runs, args.epochs), out, **options)
            # one after another, the k-th run starts when the one before ends: its own wait is the first run's
            waits = first[:1] if options["workers"] == 1 else first[:options["workers"]]
            result[name] = dict(wall_s=wall, first_line_s=statistics.median(waits))
            print(f"{name:18s} grid of {args.runs}: {wall:6.1f} s; submission to first line {result[name]['first_line_s']:.1f} s")
        result["speedup_2_workers"] = result["one_after_another"]["wall_s"] / result["two_local_workers"]["wall_s"]
        print(f"2 workers / 1: the grid takes {1 / result['speedup_2_workers']:.2f}x the time "
              f"({result['speedup_2_workers']:.2f}x faster)")
        if not args.no_slurm:
            from slurm_cluster import missing, slurm_cluster
            if missing() or os.geteuid() != 0:
                print("SLURM: skipped (not installed, or not root: make ci-deps, as root)")
            else:
                with slurm_cluster(tmp / "slurm") as cluster:
                    os.environ.update(cluster.env)
                    out = tmp / "slurm-runs"
                    wall, first = measure(tiny_runs(data, out, 2, args.epochs), out, executor="slurm",
                                          partition=cluster.partition, time=10)
                    result["slurm"] = dict(wall_s=wall, first_line_s=statistics.median(first))
                    print(f"{'slurm jobs':18s} grid of 2: {wall:6.1f} s; submission to first line "
                          f"{result['slurm']['first_line_s']:.1f} s")
    write_perf("bench_launch", result)


if __name__ == "__main__":
    main()
