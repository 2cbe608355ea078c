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
# Minutes-scale configuration on the generated set (24 classes in groups of confusable species). From
# scratch on a CPU, Adam learns in 4 epochs where the paper's SGD (made for ImageNet-pretrained weights) does not.
BASE = dict(dataset="synthetic", arch="resnet18", pretrained=False, size=64, resize=72, epochs=4,
            freeze_epochs=0, opt="adam", lr=2e-3, n_classes=8, n_images=4, precision="fp32")
# Table 1 (Baseline vs API-Net) over two seeds; Table 3's L_ce-only row on one seed.
GRIDS = [(["table1"], [0, 1]), (["table3_loss"], [0])]


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
    args = ap.parse_args(argv)
    out, runs, executed = Path(args.out), Path(args.out) / "runs", Path(args.out) / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"apikit demo -> {out}/", flush=True)
    for k, (tables, seeds) in enumerate(GRIDS):
        # The first grid retrains everything (a re-run reproduces the tables); later ones keep shared runs.
        _notebook("notebooks/ablations.ipynb", executed / f"ablations-{'-'.join(tables)}.ipynb",
                  **{**BASE, "epochs": args.epochs}, tables=tables, seeds=seeds, out_root=str(runs), overwrite=k == 0)
    _notebook("notebooks/visualize.ipynb", executed / "visualize.ipynb",
              baseline_run=str(runs / run_name({"api": False}) / "seed-0"),
              api_run=str(runs / run_name({}) / "seed-0"), dataset=BASE["dataset"],
              size=BASE["size"], resize=BASE["resize"], out_dir=str(out / "visualize"))
    _notebook("notebooks/report.ipynb", executed / "report.ipynb", runs_root=str(runs), out_dir=str(out),
              title="apikit demo: the generated fine-grained set on CPU")
    print(f"\nBaseline vs API-Net on the generated set (top-1 %, test split), {time.time() - t0:.0f} s in all:")
    for name, label in ((run_name({"api": False}), "Baseline"), (run_name({}), "API-Net")):
        seeds = GRIDS[0][1]
        accs = [json.loads((runs / name / f"seed-{s}" / "metrics.json").read_text())["metrics"]["top1"]
                for s in seeds]
        print(f"  {label:9s} " + "  ".join(f"seed {s}: {a:5.1f}" for s, a in zip(seeds, accs)))
    viz = out / "visualize" / "viz.json"
    if viz.exists():
        print(f"gate-channel part hit rates: {json.loads(viz.read_text()).get('part_hit_rate')}")
    print(f"report: {out / 'README.md'}")


if __name__ == "__main__":
    main()
