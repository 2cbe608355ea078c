"""Tables 6-10 as one grid: every data set x backbone cell of the paper's recipe (`apikit.paper`), x seeds.

Each run is what `make paper DATASET=... ARCH=... SEED=...` runs (Section 4's recipe for its data set, the
paper's weights), in `out_root/<dataset>-<arch>/seed-<k>/`, so a cell filled either way is the same run. The runs
go through the launcher (`apikit.launch`): local workers, one per GPU, or SLURM jobs.

    python -m apikit.tables                                   # 5 data sets x 3 backbones x seed 0, local GPUs
    python -m apikit.tables --executor slurm --partition gpu --gpus-per-run 1 --time 2-00:00:00 --seeds 0 1 2
    python -m apikit.tables --status                          # each run's state, without waiting
"""
from .schema import paper_params, parse_list
from .launch import Run, launch
from .paper import PAPER_ARCHS, PAPER_SOTA
from .runs import resolve

__all__ = ["DATASETS", "ARCHS", "OUT_ROOT", "table_runs", "run_tables", "gpu_hours", "main"]

DATASETS = tuple(PAPER_SOTA)  # the rows of Tables 6-10
ARCHS = PAPER_ARCHS
OUT_ROOT = "reports/runs/paper"  # where make paper puts its runs too


# A backbone's training cost relative to ResNet-101's, by forward GFLOPs at 224 px (4.1, 7.8, 7.8): an estimate.
RELATIVE_COST = {"resnet50": 4.1 / 7.8, "resnet101": 1.0, "densenet161": 1.0}


def gpu_hours(dataset, arch, images_per_s):
    """An estimate of one run's GPU-hours at the paper's recipe: its official training split x epochs at
    `images_per_s` (ResNet-101's training throughput at 448 px on your GPU, e.g. bench_fastai_gpu.py's, scaled
    by the backbone's FLOPs), and its test split evaluated after every epoch at three times that (a forward
    alone costs about a third of a training step)."""
    from .data.sources import source
    from .paper import recipe
    n_train, n_test, _ = source(dataset).official
    epochs, rate = recipe(dataset)["epochs"], images_per_s / RELATIVE_COST.get(arch, 1.0)
    return epochs * (n_train / rate + n_test / (3 * rate)) / 3600


def table_runs(datasets=None, archs=None, seeds=(0,), out_root=OUT_ROOT, **overrides):
    """The runs of the chosen cells x seeds as `launch.Run`s, each checked: the paper's recipe for its data set,
    with `overrides` (e.g. precision='bf16', download=True) on top."""
    datasets = parse_list("datasets", list(DATASETS if datasets is None else datasets), str)
    archs = parse_list("archs", list(ARCHS if archs is None else archs), str)
    seeds = parse_list("seeds", list(seeds), int)
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"datasets: {', '.join(map(repr, unknown))} not in Tables 6-10; choose from "
                         f"{', '.join(DATASETS)}.")
    out_root, runs = resolve(out_root), []
    for dataset in datasets:
        for arch in archs:
            for seed in seeds:
                p = paper_params(dataset, arch, seed, **overrides)
                p.pop("run_dir")
                runs.append(Run(out_root / f"{dataset}-{arch}" / f"seed-{seed}", p, f"{dataset}-{arch}/seed-{seed}"))
    return runs


def run_tables(datasets=None, archs=None, seeds=(0,), out_root=OUT_ROOT, overrides=None, kernel_name="python3",
               html=True, overwrite=False, log=print, stdout=True, **launch_options):
    """Run Tables 6-10's cells (`table_runs`) through the launcher; returns {run_dir: status}."""
    runs = table_runs(datasets, archs, seeds, out_root, **(overrides or {}))
    cells = len({r.run_dir.parent for r in runs})
    log(f"Tables 6-10: {cells} cell{'s' * (cells != 1)} x {len(runs) // cells} seed{'s' * (len(runs) != cells)}:")
    return launch(runs, out_root, kernel_name=kernel_name, html=html, overwrite=overwrite, log=log, stdout=stdout,
                  **launch_options)


def main(argv=None):
    """`python -m apikit.tables`: Tables 6-10 at the paper's recipe: notebooks/ablations.ipynb with grid='tables',
    through the launcher; `--status` prints each run's state."""
    import argparse
    from .schema import add_arguments
    from .execute import run_in_shell
    from .launch import GRID, LAUNCH_KEYS, add_launch_arguments, check_launch, print_status
    ap = argparse.ArgumentParser(prog="python -m apikit.tables", description=main.__doc__)
    add_arguments(ap, names=("datasets", "archs", "seeds", "out_root", "overwrite"), params=GRID,
                  defaults={"out_root": OUT_ROOT})
    add_arguments(ap, names=("precision", "download"))
    ap.add_argument("--status", action="store_true", help="print each run's state under --out-root and return")
    add_launch_arguments(ap)
    args = vars(ap.parse_args(argv))
    if args.pop("status"):
        print_status(args["out_root"])
        return
    launch = {k: args.pop(k) for k in LAUNCH_KEYS}
    try:  # every cell's parameters and the launcher's options, before anything starts
        table_runs(args["datasets"], args["archs"], args["seeds"], args["out_root"], precision=args["precision"],
                   download=args["download"])
        check_launch(**launch)
    except ValueError as e:
        ap.error(str(e))
    run_in_shell("notebooks/ablations.ipynb", resolve(args["out_root"]) / "tables.ipynb",
                 {"grid": "tables", **args, **launch})


if __name__ == "__main__":
    main()
