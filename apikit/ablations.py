"""The paper's ablation grid (Tables 1-5) as runs: one `train.ipynb` per configuration x seed, with papermill.

The tables themselves (rows, overrides, reported figures) live in `apikit.paper`.
"""
from .schema import check_params, keys_with, parse_list
from .execute import run_in_shell
from .launch import GRID_DEFAULTS, GRIDS, Run, launch
from .paper import ABLATION_SETTING, RECIPE, TABLES, scale_class_sizes
from .runs import resolve, run_name

__all__ = ["grid", "grid_runs", "run_grid", "run", "GRIDS", "BASE_KEYS", "main"]

# The training parameters an ablation batch shares (the rows change the method's own keys on top).
BASE_KEYS = keys_with("shared")
OUT_ROOT = GRID_DEFAULTS["out_root"]


def grid(tables=None, n_classes=RECIPE["n_classes"], n_images=RECIPE["n_images"]):
    """The distinct configurations of the chosen tables as {run name: overrides}; shared rows run once."""
    runs = {}
    for table in parse_list("tables", list(TABLES) if tables is None else tables, str):
        if table not in TABLES:
            raise ValueError(f"table={table!r} is not valid; choose from {', '.join(TABLES)}.")
        for _, overrides in TABLES[table]:
            o = scale_class_sizes(overrides, n_classes, n_images)
            runs[run_name(o)] = o
    return runs


def grid_runs(base, tables=None, seeds=(0,), out_root=OUT_ROOT):
    """The runs of the chosen tables x seeds as `launch.Run`s, every parameter and row checked first: `base` holds
    training parameters (`BASE_KEYS`), `tables` and `seeds` are lists (also in papermill's string form). Each run
    goes to `out_root/<run_name>/seed-<k>/` (relative: to the project root)."""
    unknown = set(base) - set(BASE_KEYS)
    if unknown:
        raise ValueError(f"base has parameter(s) {', '.join(sorted(unknown))} that an ablation batch does not "
                         f"share; valid ones: {', '.join(BASE_KEYS)}.")
    seeds = parse_list("seeds", list(seeds) if isinstance(seeds, tuple) else seeds, int)
    p = check_params(**base)
    base = {k: p[k] for k in base}
    configs = grid(tables, p["n_classes"], p["n_images"])
    out_root, runs = resolve(out_root), []
    for name, overrides in configs.items():  # every row's configuration is valid before the first run starts
        for seed in seeds:
            params = check_params(**{**base, **overrides, "seed": seed})
            params.pop("run_dir")  # the launcher's: out_root/<configuration>/seed-<k>
            runs.append(Run(out_root / name / f"seed-{seed}", params, f"{name}/seed-{seed}"))
    return runs


def run_grid(base, tables=None, seeds=(0,), out_root=OUT_ROOT, kernel_name="python3", html=True,
             overwrite=False, log=print, stdout=True, **launch_options):
    """Execute train.ipynb with papermill for every configuration x seed (`grid_runs`); returns {run_dir: status}.

    The runs go through the launcher (`apikit.launch`: `executor`, `workers`, SLURM's options), checked before any
    run starts. Finished runs are kept, so a re-run redoes only missing, failed or interrupted ones (resuming from
    their checkpoint), and leaves runs that another process or the scheduler holds; `overwrite=True` trains every
    run again and replaces unreadable files. A failing run is recorded in its metrics.json and the batch goes on.
    Ctrl-C or Kernel > Interrupt stops the running runs at their last checkpoint, in one line each, and returns the
    status so far, so that a notebook's next cell renders what finished. `stdout=True` shows each run's own lines
    (one per epoch) as they come when the runs go one after another.
    """
    runs = grid_runs(base, tables, seeds, out_root)
    n_configs, n_seeds = len({r.run_dir.parent for r in runs}), len({r.params["seed"] for r in runs})
    log(f"{n_configs} configuration{'s' * (n_configs != 1)} x {n_seeds} seed{'s' * (n_seeds != 1)}:")
    return launch(runs, out_root, kernel_name=kernel_name, html=html, overwrite=overwrite, log=log, stdout=stdout,
                  **launch_options)


def run(grid, base, tables=None, datasets=None, archs=None, seeds=(0,), out_root=OUT_ROOT, overwrite=False,
        **launch_options):
    """ablations.ipynb's job: Tables 1-5 (`run_grid` over `base`) or Tables 6-10 (`apikit.tables.run_tables`: the
    paper's recipe per data set x backbone; of `base`, only precision and download apply)."""
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r} is not valid: choose ablations (Tables 1-5) or tables (Tables 6-10).")
    if grid == "tables":
        from .tables import run_tables
        overrides = {k: base[k] for k in ("precision", "download") if k in base}
        return run_tables(datasets, archs, seeds, out_root, overrides, overwrite=overwrite, **launch_options)
    return run_grid(base, tables, seeds, out_root, overwrite=overwrite, **launch_options)


def main(argv=None):
    """`python -m apikit.ablations --paper`: notebooks/ablations.ipynb (Tables 1-5) at the paper's configuration,
    through the launcher (`--executor slurm ...`); `--status OUT_ROOT` prints each run's state."""
    import argparse
    from .schema import add_arguments
    from .launch import GRID, LAUNCH_KEYS, add_launch_arguments, check_launch, print_status
    ap = argparse.ArgumentParser(prog="python -m apikit.ablations", description=main.__doc__)
    ap.add_argument("--paper", action="store_true", help="Section 4's configuration in the paper's setting "
                    f"({ABLATION_SETTING['dataset']}, {ABLATION_SETTING['arch']})")
    ap.add_argument("--status", metavar="OUT_ROOT", help="print the state of each run under OUT_ROOT and return")
    grid_keys = ("tables", "seeds", "out_root", "overwrite")
    add_arguments(ap, names=grid_keys, params=GRID, defaults={"tables": list(TABLES)})  # here: every table
    add_arguments(ap, names=BASE_KEYS, suppress=True)
    add_launch_arguments(ap)
    args = vars(ap.parse_args(argv))
    if args["status"]:
        print_status(args["status"])
        return
    paper, grid_args = args.pop("paper"), {k: args.pop(k) for k in grid_keys}
    launch = {k: args.pop(k) for k in LAUNCH_KEYS}
    args.pop("status")
    base = {**({k: v for k, v in ABLATION_SETTING.items() if k in BASE_KEYS} if paper else {}), **args}
    try:  # a bad parameter or option: argparse's one line and exit status 2, before anything starts
        base = {k: check_params(**base)[k] for k in BASE_KEYS}
        check_launch(**launch)
    except ValueError as e:
        ap.error(str(e))
    out = resolve(grid_args["out_root"]) / "ablations.ipynb"
    run_in_shell("notebooks/ablations.ipynb", out, {**base, **grid_args, **launch})


if __name__ == "__main__":
    main()
