"""The paper's ablation grid (Tables 1-5) as runs: one `train.ipynb` per configuration x seed, with papermill.

The tables themselves (rows, overrides, reported figures) live in `apikit.paper`.
"""
import sys
import time

from .config import check_params, keys_with, parse_list
from .paper import TABLES, recipe, scale_class_sizes
from .execute import TRAIN_NOTEBOOK, run_in_shell, run_notebook
from .runs import CorruptRunFile, check_run_dir, read_metrics, resolve, run_name, write_json

__all__ = ["grid", "run_grid", "BASE_KEYS", "main"]

# The training parameters an ablation batch shares (the rows change the method's own keys on top).
BASE_KEYS = keys_with("shared")


def grid(tables=None, n_classes=30, n_images=4):
    """The distinct configurations of the chosen tables as {run name: overrides}; shared rows run once."""
    runs = {}
    for table in parse_list("tables", list(TABLES) if tables is None else tables, str):
        if table not in TABLES:
            raise ValueError(f"table={table!r} is not valid; choose from {', '.join(TABLES)}.")
        for _, overrides in TABLES[table]:
            o = scale_class_sizes(overrides, n_classes, n_images)
            runs[run_name(o)] = o
    return runs


def _short(e):
    """The last line of a papermill error: the exception the notebook raised."""
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    return lines[-1] if lines else type(e).__name__


def _state(run_dir):
    """(recorded status, readable): a corrupt metrics.json is reported and counts as not finished."""
    try:
        m = read_metrics(run_dir)
    except CorruptRunFile as e:
        return f"corrupt ({e})", False
    return (m or {}).get("status"), True


def _stopped(run_dir):
    """(status, how far) of a run the grid's interrupt stopped, from what the run recorded (`epochs_done`)."""
    try:
        m = read_metrics(run_dir) or {}
    except CorruptRunFile:
        m = {}
    if m.get("status") == "finished":
        return "finished", "finished, and the grid stopped there"
    done = m.get("epochs_done")
    if not done:
        return "interrupted", "interrupted before its first epoch finished"
    return "interrupted", f"interrupted after epoch {done}"


def run_grid(base, tables=None, seeds=(0,), out_root="reports/runs/ablations", kernel_name="python3", html=True,
             overwrite=False, log=print, stdout=True):
    """Execute train.ipynb with papermill for every configuration x seed; returns {run_dir: status}.

    `base` holds training parameters (`BASE_KEYS`), checked before any run starts, as are `tables` and
    `seeds` (lists, also in papermill's string form). Each run goes to `out_root/<run_name>/seed-<k>/`
    (relative: to the project root) with its executed notebook and an HTML copy. Finished runs are
    skipped, so a re-run redoes only missing, failed or interrupted ones (resuming from their checkpoint);
    `overwrite=True` trains every run again and replaces unreadable files. A failing run is recorded in
    its metrics.json and the batch goes on. Ctrl-C or Kernel > Interrupt stops the running run at its last
    checkpoint and the batch with it, in one line ("[k/N] <run> interrupted after epoch e; re-run to resume"), and
    returns the status so far, so that a notebook's next cell renders what finished. `stdout=True` shows each
    run's own lines (one per epoch) on sys.stdout as they come; False keeps them in the executed notebooks only.
    """
    unknown = set(base) - set(BASE_KEYS)
    if unknown:
        raise ValueError(f"base has parameter(s) {', '.join(sorted(unknown))} that an ablation batch does not "
                         f"share; valid ones: {', '.join(BASE_KEYS)}.")
    seeds = parse_list("seeds", list(seeds) if isinstance(seeds, tuple) else seeds, int)
    p = check_params(**base)
    base = {k: p[k] for k in base}
    configs = grid(tables, p["n_classes"], p["n_images"])
    for overrides in configs.values():  # every row's configuration is valid before the first run starts
        check_params(**{**base, **overrides})
    out_root = resolve(out_root)
    todo = [(name, o, s) for name, o in configs.items() for s in seeds]
    for name, _, seed in todo:  # and every run_dir is a run folder (NotARunFolder names what is in the way)
        check_run_dir(out_root / name / f"seed-{seed}")
    out_root.mkdir(parents=True, exist_ok=True)
    log(f"{len(configs)} configuration{'s' * (len(configs) != 1)} x {len(seeds)} seed{'s' * (len(seeds) != 1)} = "
        f"{len(todo)} run{'s' * (len(todo) != 1)} into {out_root}")
    status, t_start, n_trained = {}, time.time(), 0
    for k, (name, overrides, seed) in enumerate(todo, start=1):
        run_dir = out_root / name / f"seed-{seed}"
        recorded, readable = _state(run_dir)
        if recorded == "finished" and not overwrite:
            status[str(run_dir)] = "finished (kept)"
            log(f"[{k}/{len(todo)}] kept      {name}/seed-{seed}")
            continue
        if not readable:
            log(f"[{k}/{len(todo)}] {recorded}")
            if not overwrite:
                status[str(run_dir)] = "corrupt"
                continue
        params = {**base, **overrides, "seed": seed, "run_dir": str(run_dir), "overwrite": overwrite}
        t0 = time.time()
        log(f"[{k}/{len(todo)}] starting  {name}/seed-{seed}")
        try:  # the run's own lines (one per epoch) are shown as they come
            run_notebook(TRAIN_NOTEBOOK, run_dir / "train.ipynb", params, kernel_name=kernel_name, html=html,
                         stdout=sys.stdout if stdout is True else stdout or None)
            status[str(run_dir)] = "finished"
        except KeyboardInterrupt:  # Ctrl-C or Kernel > Interrupt: the run stopped at its last checkpoint, the grid here
            status[str(run_dir)], where = _stopped(run_dir)
            log(f"[{k}/{len(todo)}] {name}/seed-{seed} {where}; re-run to resume")
            break
        except Exception as e:  # the batch goes on; the failure is on disk
            status[str(run_dir)] = "failed"
            recorded, readable = _state(run_dir)
            if recorded not in ("failed", "interrupted"):
                write_json(run_dir / "metrics.json", dict(status="failed", error=_short(e), config=params,
                                                          metrics=None, history=[]))
        n_trained += 1
        left = sum(1 for n, _, s in todo[k:])
        eta = (time.time() - t_start) / n_trained * left
        log(f"[{k}/{len(todo)}] {status[str(run_dir)]:9s} {name}/seed-{seed} ({time.time() - t0:.0f} s; "
            f"{left} to go, about {eta / 60:.0f} min)")
    write_json(out_root / "batch.json", status)
    return status


def main(argv=None):
    """`python -m apikit.ablations --paper`: notebooks/ablations.ipynb (Tables 1-5) at the paper's configuration."""
    import argparse
    from .config import add_arguments
    ap = argparse.ArgumentParser(prog="python -m apikit.ablations", description=main.__doc__)
    ap.add_argument("--paper", action="store_true", help="Section 4's configuration on CUB with ResNet-101")
    ap.add_argument("--tables", nargs="+", default=list(TABLES), help="tables to run (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (one run per seed and row)")
    ap.add_argument("--out-root", default="reports/runs/ablations", help="where the run_dirs go")
    add_arguments(ap, names=BASE_KEYS, suppress=True)
    args = vars(ap.parse_args(argv))
    paper, tables, seeds, out_root = args.pop("paper"), args.pop("tables"), args.pop("seeds"), args.pop("out_root")
    base = {**({k: v for k, v in recipe("cub").items() if k in BASE_KEYS} if paper else {}),
            **({"arch": "resnet101"} if paper else {}), **args}
    base = {k: check_params(**base)[k] for k in BASE_KEYS}
    out = resolve(out_root) / "ablations.ipynb"
    run_in_shell("notebooks/ablations.ipynb", out, {**base, "tables": tables, "seeds": seeds, "out_root": out_root})


if __name__ == "__main__":
    main()
