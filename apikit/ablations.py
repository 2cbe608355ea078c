"""The paper's ablation grid (Tables 1-5) and its reported figures, as data.

Each table is a list of rows `(row name, overrides)`: a row's run is the base configuration with those
overrides. Tables 1-5 are on CUB-200-2011 with ResNet-101; Tables 6-10 compare data sets and backbones.
"""
import os
import time
from pathlib import Path

__all__ = ["TABLES", "TABLE_TITLES", "PAPER", "PAPER_SOTA", "scale_class_sizes", "grid", "run_name", "run_grid",
           "export_html"]

TABLE_TITLES = {
    "table1": "Table 1: Baseline vs API-Net",
    "table2": "Table 2: operations of the mutual vector",
    "table3_gate": "Table 3: gate vector",
    "table3_loss": "Table 3: interaction (loss)",
    "table4": "Table 4: pair construction",
    "table5_classes": "Table 5: class size N_cl (N_im = 4)",
    "table5_images": "Table 5: image size N_im (N_cl = 30)",
    "table5_both": "Table 5: (N_cl, N_im) at a fixed batch",
}

TABLES = {
    "table1": [("Baseline", {"api": False}), ("API-Net", {})],
    "table2": [("Individual", {"mutual": "individual"}), ("Compact Bilinear Pooling", {"mutual": "compact_bilinear"}),
               ("Subtract Square", {"mutual": "subtract_square"}), ("Sum", {"mutual": "sum"}),
               ("Product", {"mutual": "product"}), ("Weight Attention", {"mutual": "weight_attention"}),
               ("MLP", {})],
    "table3_gate": [("Single", {"gate": "single"}), ("Pair", {})],
    "table3_loss": [("L_ce", {"rank_weight": 0.0}), ("L_ce + L_rk", {})],
    "table4": [("Random", {"intra": "random", "inter": "random"}),
               ("- / D", {"intra": None, "inter": "dissimilar"}), ("- / S", {"intra": None, "inter": "similar"}),
               ("D / -", {"intra": "dissimilar", "inter": None}), ("S / -", {"intra": "similar", "inter": None}),
               ("D / D", {"intra": "dissimilar", "inter": "dissimilar"}),
               ("S / D", {"intra": "similar", "inter": "dissimilar"}),
               ("D / S", {"intra": "dissimilar", "inter": "similar"}), ("S / S", {})],
    "table5_classes": [("N_cl=10", {"n_classes": 10}), ("N_cl=20", {"n_classes": 20}), ("N_cl=30", {})],
    "table5_images": [("N_im=2", {"n_images": 2}), ("N_im=3", {"n_images": 3}), ("N_im=4", {})],
    "table5_both": [("(24, 5)", {"n_classes": 24, "n_images": 5}), ("(30, 4)", {}),
                    ("(40, 3)", {"n_classes": 40, "n_images": 3})],
}

# Top-1 accuracy (%) reported for each row above (CUB-200-2011, ResNet-101, 448 px).
PAPER = {
    "table1": {"Baseline": 85.4, "API-Net": 88.6},
    "table2": {"Individual": 87.9, "Compact Bilinear Pooling": 88.2, "Subtract Square": 88.3, "Sum": 88.5,
               "Product": 88.4, "Weight Attention": 88.4, "MLP": 88.6},
    "table3_gate": {"Single": 87.7, "Pair": 88.6},
    "table3_loss": {"L_ce": 88.1, "L_ce + L_rk": 88.6},
    "table4": {"Random": 86.4, "- / D": 85.4, "- / S": 87.2, "D / -": 87.1, "S / -": 87.6, "D / D": 87.0,
               "S / D": 87.4, "D / S": 88.3, "S / S": 88.6},
    "table5_classes": {"N_cl=10": 83.5, "N_cl=20": 87.0, "N_cl=30": 88.6},
    "table5_images": {"N_im=2": 88.1, "N_im=3": 88.2, "N_im=4": 88.6},
    "table5_both": {"(24, 5)": 87.7, "(30, 4)": 88.6, "(40, 3)": 88.2},
}

# Tables 6-10: API-Net top-1 (%) per data set and backbone.
PAPER_SOTA = {
    "cub": {"resnet50": 87.7, "resnet101": 88.6, "densenet161": 90.0},
    "aircraft": {"resnet50": 93.0, "resnet101": 93.4, "densenet161": 93.9},
    "cars": {"resnet50": 94.8, "resnet101": 94.9, "densenet161": 95.3},
    "dogs": {"resnet50": 88.3, "resnet101": 90.3, "densenet161": 89.4},
    "nabirds": {"resnet50": 86.2, "resnet101": 86.6, "densenet161": 88.1},
}


def scale_class_sizes(overrides, n_classes, n_images):
    """Map Table 5's paper-scale (N_cl, N_im) onto a smaller base batch, keeping the ratios to (30, 4)."""
    out = dict(overrides)
    if "n_classes" in out:
        out["n_classes"] = max(2, round(out["n_classes"] * n_classes / 30))
    if "n_images" in out:
        out["n_images"] = max(2, round(out["n_images"] * n_images / 4))
    return out


def grid(tables=None, n_classes=30, n_images=4):
    """The distinct configurations of the chosen tables as {run name: overrides}; shared rows run once."""
    runs = {}
    for table in tables or TABLES:
        if table not in TABLES:
            raise ValueError(f"table={table!r} is not valid; choose from {', '.join(TABLES)}.")
        for _, overrides in TABLES[table]:
            o = scale_class_sizes(overrides, n_classes, n_images)
            runs[run_name(o)] = o
    return runs


def run_name(overrides):
    """A stable folder name for a configuration: 'api-net' for the base, else its sorted overrides."""
    if not overrides:
        return "api-net"
    return "__".join(f"{k}-{v}" for k, v in sorted(overrides.items()))


def run_grid(base, tables=None, seeds=(0,), out_root="reports/runs/ablations", notebook="notebooks/train.ipynb",
             kernel_name="python3", html=True, overwrite=False, log=print):
    """Execute train.ipynb with papermill for every configuration x seed; returns {run_dir: status}.

    Each run goes to `out_root/<run_name>/seed-<k>/` with its executed notebook (and an HTML export).
    Finished runs are skipped, so a re-run redoes only missing or failed ones (an interrupted run resumes
    from its checkpoint); `overwrite=True` trains every run again. A failing run is recorded in its
    metrics.json and the batch goes on.
    """
    import papermill as pm
    from .experiment import read_metrics, write_json

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    status = {}
    for name, overrides in grid(tables, base.get("n_classes", 30), base.get("n_images", 4)).items():
        for seed in seeds:
            run_dir = out_root / name / f"seed-{seed}"
            done = read_metrics(run_dir) if (run_dir / "metrics.json").exists() else None
            if done is not None and done.get("status") == "finished" and not overwrite:
                status[str(run_dir)] = "finished (kept)"
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            params = {**base, **overrides, "seed": seed, "run_dir": str(run_dir), "overwrite": overwrite}
            t0 = time.time()
            try:
                pm.execute_notebook(notebook, str(run_dir / "train.ipynb"), parameters=params,
                                    kernel_name=kernel_name, progress_bar=False, cwd=os.getcwd())
                status[str(run_dir)] = "finished"
            except Exception as e:  # the batch goes on; the failure is on disk
                status[str(run_dir)] = "failed"
                m = read_metrics(run_dir) if (run_dir / "metrics.json").exists() else None
                if m is None or m.get("status") != "failed":
                    write_json(run_dir / "metrics.json", dict(status="failed", error=_short(e), config=params,
                                                              metrics=None, history=[]))
            if html:
                export_html(run_dir / "train.ipynb")
            log(f"{status[str(run_dir)]:>8}  {run_dir}  ({time.time() - t0:.0f} s)")
    write_json(out_root / "batch.json", status)
    return status


def _short(e):
    """The last line of a papermill error: the exception the notebook raised."""
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    return lines[-1] if lines else type(e).__name__


def export_html(notebook):
    """An HTML copy beside an executed notebook, for reading without Jupyter."""
    from nbconvert import HTMLExporter
    notebook = Path(notebook)
    if notebook.exists():
        body, _ = HTMLExporter(template_name="basic").from_filename(str(notebook))  # no inlined CSS: small files
        notebook.with_suffix(".html").write_text(body)
