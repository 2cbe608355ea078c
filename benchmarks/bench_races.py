"""Races on one run folder: processes taking its lock, and real `train()` calls, at the same instant.

    .venv/bin/python benchmarks/bench_races.py                 # 30 lock trials x 3 processes, 12 train trials x 2
    .venv/bin/python benchmarks/bench_races.py --lock-trials 100 --train-trials 20 --out /tmp/races.json

A lock trial counts the most processes holding `apikit.runs.run_lock` at once (must be 1) and how the others were
refused; a train trial counts the processes that trained (must be exactly 1) and what the other got (RunInUse, or
RunFinished when it started after the first had finished). Processes are forked at a barrier, so they start
within a millisecond of each other. tests/test_locks.py and tests/test_experiment.py run 30 and 2 such trials.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
from _common import machine  # noqa: E402  (puts this checkout first on sys.path)
from apikit.runs import write_json  # noqa: E402


def _hold(run_dir, barrier, holding, most, outcomes):
    from apikit.runs import RunInUse, run_lock
    barrier.wait()
    try:
        with run_lock(run_dir):
            with holding.get_lock():
                holding.value += 1
                most.value = max(most.value, holding.value)
            time.sleep(0.05)
            with holding.get_lock():
                holding.value -= 1
        outcomes.put("held")
    except RunInUse as e:
        outcomes.put("refused, naming the holder" if "(pid " in str(e) else f"refused: {e}")
    except BaseException as e:
        outcomes.put(f"{type(e).__name__}: {e}")


def lock_trials(n, root):
    ctx = mp.get_context("fork")
    outcomes, most_seen, t0 = Counter(), Counter(), time.time()
    for trial in range(n):
        run = root / f"lock{trial}"
        run.mkdir()
        barrier, holding, most, queue = ctx.Barrier(3), ctx.Value("i", 0), ctx.Value("i", 0), ctx.Queue()
        procs = [ctx.Process(target=_hold, args=(run, barrier, holding, most, queue)) for _ in range(3)]
        for p in procs:
            p.start()
        outcomes.update(queue.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        most_seen[most.value] += 1
    return dict(trials=n, processes=3, most_holders_at_once=dict(most_seen), outcomes=dict(outcomes),
                trials_with_two_holders=sum(v for k, v in most_seen.items() if k > 1), seconds=time.time() - t0)


def _images(root):
    """train/ and valid/ class folders of small PNGs (4 classes, 6 + 3 images each)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 3)):
        for c in range(4):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 80, (20, 20, 3)).astype(np.uint8)
                a[:, :, c % 3] += np.uint8(110 + 60 * (c // 3))
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def _train(params, barrier, queue):
    from apikit.experiment import RunFinished, train
    from apikit.runs import RunInUse
    barrier.wait()
    try:
        queue.put(("trained", train(log=lambda line: None, **params)["status"]))
    except RunInUse as e:
        queue.put(("RunInUse", "naming the holder" if "is in use by another run (pid" in str(e) else str(e)))
    except RunFinished:
        queue.put(("RunFinished", ""))
    except BaseException as e:
        queue.put(("error", f"{type(e).__name__}: {e}"))


def train_trials(n, root):
    if n == 0:  # the lock trials alone (tests/test_locks.py)
        return dict(trials=0, processes=2, trained_per_trial={}, the_other_got={}, trials_not_exactly_one=0,
                    failures=[], seconds=0.0)
    import torch
    torch.set_num_threads(1)
    import apikit.experiment  # noqa: F401  (imported before forking: the children start at once)
    data = _images(root / "images")
    ctx = mp.get_context("fork")
    trained, others, bad, t0 = Counter(), Counter(), [], time.time()
    for trial in range(n):
        params = dict(dataset="folder", data_path=str(data), size=16, resize=18, epochs=1, n_classes=2, n_images=2,
                      lr=0.01, run_dir=str(root / f"train{trial}"))
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_train, args=(params, barrier, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        got = [queue.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        k = sum(g[0] == "trained" for g in got)
        trained[k] += 1
        others.update(f"{g[0]} {g[1]}".strip() for g in got if g[0] != "trained")
        status = json.loads((root / f"train{trial}" / "metrics.json").read_text())["status"]
        if k != 1 or status != "finished":
            bad.append(dict(trial=trial, got=got, status=status))
    return dict(trials=n, processes=2, trained_per_trial=dict(trained), the_other_got=dict(others),
                trials_not_exactly_one=len(bad), failures=bad, seconds=time.time() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock-trials", type=int, default=30)
    ap.add_argument("--train-trials", type=int, default=12)
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        locks = lock_trials(a.lock_trials, Path(tmp))
        print(f"run_lock, {locks['trials']} trials x 3 processes: most holders at once "
              f"{locks['most_holders_at_once']}; "
              f"{locks['trials_with_two_holders']} trials with two holders; outcomes {locks['outcomes']} "
              f"({locks['seconds']:.1f} s)", flush=True)
        trains = train_trials(a.train_trials, Path(tmp))
        print(f"train(), {trains['trials']} trials x 2 processes: processes that trained per trial "
              f"{trains['trained_per_trial']}; the other got {trains['the_other_got']}; "
              f"{trains['trials_not_exactly_one']} trials not exactly one ({trains['seconds']:.1f} s)", flush=True)
    if a.out:
        write_json(a.out, dict(machine=machine(), run_lock=locks, train=trains))
    return 0 if locks["trials_with_two_holders"] == 0 and trains["trials_not_exactly_one"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
