"""`make demo`: the whole pipeline on the generated fine-grained set, on CPU, with papermill.

Trains the Baseline and API-Net over seeds plus a small ablation grid (notebooks/ablations.ipynb, which
runs notebooks/train.ipynb per configuration), draws the gate-channel figures (visualize.ipynb) and
renders the report (report.ipynb), all into `reports/demo/`. Seeded: a re-run reproduces the tables.
"""
import argparse
import json
import os
import time
from pathlib import Path

from .ablations import export_html, run_name

OUT = Path("reports/demo")
# Minutes-scale configuration on the generated set (24 classes in groups of confusable species).
BASE = dict(dataset="synthetic", arch="resnet18", pretrained=False, size=64, resize=72, epochs=12,
            freeze_epochs=0, lr=0.05, n_classes=8, n_images=4, precision="fp32")
TABLES = ["table1", "table3_loss"]
SEEDS = [0, 1]


def _notebook(src, dst, **parameters):
    import papermill as pm
    t0 = time.time()
    pm.execute_notebook(src, str(dst), parameters=parameters, kernel_name="python3", progress_bar=False,
                        cwd=os.getcwd())
    export_html(dst)
    print(f"  {src} -> {dst} ({time.time() - t0:.0f} s)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT), help="output folder (default: reports/demo)")
    ap.add_argument("--epochs", type=int, default=BASE["epochs"], help="epochs per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="seeds of each configuration")
    args = ap.parse_args(argv)
    out, runs = Path(args.out), Path(args.out) / "runs"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"apikit demo -> {out}/", flush=True)
    _notebook("notebooks/ablations.ipynb", out / "ablations.ipynb", **{**BASE, "epochs": args.epochs},
              tables=TABLES, seeds=args.seeds, out_root=str(runs), overwrite=True)
    _notebook("notebooks/visualize.ipynb", out / "visualize.ipynb",
              baseline_run=str(runs / run_name({"api": False}) / f"seed-{args.seeds[0]}"),
              api_run=str(runs / run_name({}) / f"seed-{args.seeds[0]}"), dataset=BASE["dataset"],
              size=BASE["size"], resize=BASE["resize"], out_dir=str(out / "visualize"))
    _notebook("notebooks/report.ipynb", out / "report.ipynb", runs_root=str(runs), out_dir=str(out),
              title="apikit demo: the generated fine-grained set on CPU")
    print(f"\nBaseline vs API-Net on the generated set (top-1 %, test split), {time.time() - t0:.0f} s in all:")
    for name, label in ((run_name({"api": False}), "Baseline"), (run_name({}), "API-Net")):
        accs = [json.loads((runs / name / f"seed-{s}" / "metrics.json").read_text())["metrics"]["top1"]
                for s in args.seeds]
        print(f"  {label:9s} " + "  ".join(f"seed {s}: {a:5.1f}" for s, a in zip(args.seeds, accs)))
    viz = out / "visualize" / "viz.json"
    if viz.exists():
        print(f"gate-channel part hit rates: {json.loads(viz.read_text()).get('part_hit_rate')}")
    print(f"report: {out / 'README.md'}")


if __name__ == "__main__":
    main()
