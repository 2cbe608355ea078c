"""Hand-written run_dirs (metrics.json files with known numbers) for tests/test_report.py."""
import json

# The paper's base configuration, as apikit/experiment.py writes it into metrics.json.
PAPER_CONFIG = dict(dataset="cub", data_path=None, download=False, arch="resnet101", pretrained=True, weights=None,
                    normalize=None, size=448, resize=512, epochs=100, freeze_epochs=8, test_every=1, opt="sgd", lr=0.01,
                    wd=0.0005, n_classes=30, n_images=4, api=True,
                    mutual="mlp", gate="pair", rank_weight=1.0, margin=0.05, intra="similar", inter="similar",
                    precision="fp32", seed=0, run_dir=None)
# A CPU demo setting: other data set, backbone, size, epochs and a smaller base batch (6 x 2).
DEMO_CONFIG = {**PAPER_CONFIG, "dataset": "synthetic", "arch": "resnet18", "pretrained": False, "size": 64,
               "resize": 72, "epochs": 2, "freeze_epochs": 0, "n_classes": 6, "n_images": 2}

# (folder under the runs root, base config, overrides, seed, top-1). Every finished run of the fixture.
FINISHED = [
    ("gpu/api-net/seed-0", PAPER_CONFIG, {}, 0, 88.0),
    ("gpu/api-net/seed-1", PAPER_CONFIG, {}, 1, 89.4),
    ("gpu/api-False/seed-0", PAPER_CONFIG, {"api": False}, 0, 84.1),
    # The Baseline's API-only keys do not matter: this one was written with them blank.
    ("gpu/api-False/seed-1", PAPER_CONFIG, {"api": False, "mutual": None, "gate": None, "intra": None,
                                           "inter": None, "rank_weight": None}, 1, 85.3),
    ("gpu/mutual-sum/seed-0", PAPER_CONFIG, {"mutual": "sum"}, 0, 87.3),
    ("gpu/mutual-product/seed-0", PAPER_CONFIG, {"mutual": "product"}, 0, 88.0),
    ("gpu/mutual-product/seed-1", PAPER_CONFIG, {"mutual": "product"}, 1, 88.5),
    ("gpu/mutual-product/seed-2", PAPER_CONFIG, {"mutual": "product"}, 2, 89.3),
    ("sota/cub-resnet50/seed-0", PAPER_CONFIG, {"arch": "resnet50"}, 0, 87.2),
    ("sota/cub-resnet50/seed-1", PAPER_CONFIG, {"arch": "resnet50", "rank_weight": 1}, 1, 88.0),  # 1 == 1.0
    # The demo's Table 1 over seeds: the paired gains are 5.0, 6.5 and 1.5; Baseline seed 3 has no partner.
    ("demo/api-net/seed-0", DEMO_CONFIG, {}, 0, 40.0),
    ("demo/api-net/seed-1", DEMO_CONFIG, {}, 1, 42.5),
    ("demo/api-net/seed-2", DEMO_CONFIG, {}, 2, 39.0),
    ("demo/api-False/seed-0", DEMO_CONFIG, {"api": False}, 0, 35.0),
    ("demo/api-False/seed-1", DEMO_CONFIG, {"api": False}, 1, 36.0),
    ("demo/api-False/seed-2", DEMO_CONFIG, {"api": False}, 2, 37.5),
    ("demo/api-False/seed-3", DEMO_CONFIG, {"api": False}, 3, 33.0),
    # Table 5's N_cl=10 scaled to the demo's 6 x 2 batch: round(10 * 6 / 30) = 2 classes.
    ("demo/n_classes-2/seed-0", DEMO_CONFIG, {"n_classes": 2}, 0, 30.0),
    # Table 5's N_im=2 and N_im=3 both scale to the base's 2 images: the same configuration as demo/api-net,
    # with the same seed. Each cell counts one run per seed, preferring the folder named for its row.
    ("demo/n_images-2/seed-0", DEMO_CONFIG, {"n_images": 2}, 0, 41.0),
    # Off the paper's recipe beyond the label: bf16, and other ImageNet weights; neither is the paper's setting.
    ("sota/cars-resnet50-bf16/seed-0", PAPER_CONFIG, {"dataset": "cars", "arch": "resnet50", "precision": "bf16"},
     0, 93.1),
    ("sota/aircraft-resnet101-v2/seed-0", PAPER_CONFIG, {"dataset": "aircraft", "weights": "IMAGENET1K_V2"}, 0, 92.0),
]
# best_top1 of the runs that record it; every run records weights_loaded (the paper's IMAGENET1K_V1, or None).
BEST = {"gpu/api-net/seed-0": 88.9, "gpu/api-net/seed-1": 89.6, "gpu/api-False/seed-0": 84.5,
        "sota/cub-resnet50/seed-1": 88.4}
# A finished run written with only the required keys (no history, times, versions, diagnostics).
MINIMAL = ("gpu/gate-single/seed-1", PAPER_CONFIG, {"gate": "single"}, 1, 87.5)
FAILED = ("gpu/api-net/seed-2", PAPER_CONFIG, {}, 2, "CUDA out of memory")
RUNNING = ("gpu/gate-single/seed-0", PAPER_CONFIG, {"gate": "single"}, 0)
CORRUPT = "gpu/mutual-sum/seed-1/metrics.json"


def history(top1, epochs=3):
    """A short, plausible per-epoch history ending at `top1`."""
    return [{"epoch": e, "train_loss": 3.0 - 0.5 * e, "valid_loss": 2.5 - 0.4 * e,
             "top1": top1 - 6.0 * (epochs - 1 - e), "top5": min(100.0, top1 + 5.0), "lr": 0.01, "time_s": 1.5}
            for e in range(epochs)]


def metrics_json(config, status="finished", top1=None, error=None, hist=None, best=None, weights_loaded=...):
    metrics = {} if top1 is None else {"top1": top1, "top5": min(100.0, top1 + 5.0), "valid_loss": 0.5}
    if best is not None:
        metrics.update(best_top1=best, best_epoch=1)
    data = {"status": status, "error": error, "config": config, "metrics": metrics,
            "history": hist if hist is not None else ([] if top1 is None else history(top1)),
            "times": {"fit_s": 100.0, "eval_s": 2.0, "total_s": 102.0},
            "versions": {"python": "3.12", "torch": "2.x", "fastai": "2.8", "apikit": "0.1.0"},
            "git_commit": "abc1234", "device": "cpu"}
    if weights_loaded is not ...:  # ... = not recorded
        data["weights_loaded"] = weights_loaded
    return data


def write(root, rel, data):
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(data, indent=1))
    return d


def weights_loaded(cfg):
    """What apikit.model records: torchvision's weights enum name, or None from scratch."""
    if not cfg["pretrained"]:
        return None
    enum = {"resnet50": "ResNet50", "resnet101": "ResNet101", "densenet161": "DenseNet161"}[cfg["arch"]]
    return f"{enum}_Weights.{cfg['weights'] or 'IMAGENET1K_V1'}"


def make_runs(root, only=""):
    """Write the fixture's run_dirs under `root` (with `only`, the finished runs whose folder starts with it,
    and nothing else); returns {folder: run_dir path} of the finished runs."""
    dirs = {}
    for rel, base, overrides, seed, top1 in FINISHED:
        if not rel.startswith(only):
            continue
        cfg = {**base, **overrides, "seed": seed, "run_dir": f"reports/runs/{rel}"}
        dirs[rel] = write(root, rel, metrics_json(cfg, top1=top1, best=BEST.get(rel),
                                                  weights_loaded=weights_loaded(cfg)))
    if only:
        return dirs
    rel, base, overrides, seed, err = FAILED
    write(root, rel, metrics_json({**base, **overrides, "seed": seed}, status="failed", error=err))
    rel, base, overrides, seed = RUNNING
    write(root, rel, metrics_json({**base, **overrides, "seed": seed}, status="running", hist=history(70.0, 1)))
    rel, base, overrides, seed, top1 = MINIMAL
    dirs[rel] = write(root, rel, {"status": "finished", "config": {**base, **overrides, "seed": seed},
                                  "metrics": {"top1": top1}})
    (root / CORRUPT).parent.mkdir(parents=True, exist_ok=True)
    (root / CORRUPT).write_text('{"status": "finished", "config": {"dataset": "cub", "ar')
    return dirs


# visualize.ipynb's viz.json for the demo's seed-0 runs (the numbers of reports/demo/visualize, rounded): rates as
# fractions with their 95% t intervals over 176 test images.
PART_HIT_RATE = {
    "api_gate": 0.375, "api_gate_ci95": [0.3348, 0.4152], "api_gate_above_chance": 0.1371,
    "api_gate_above_chance_ci95": [0.1032, 0.1709], "baseline_gate": 0.3693, "baseline_gate_ci95": [0.3299, 0.4087],
    "baseline_gate_above_chance": 0.1314, "baseline_gate_above_chance_ci95": [0.0979, 0.1649],
    "api_gate_n_images": 176, "api_gate_n_peaks": 880, "api_gate_flat_maps": 0,
    "baseline_gate_n_images": 170, "baseline_gate_n_peaks": 700, "baseline_gate_flat_maps": 180,
    "chance": 0.2379, "n_images": 176, "n_peaks": 880, "k": 5, "radius": 1.0, "fmap_hw": [4, 4],
    "parts": "discriminative (synthetic.json)"}


def write_viz(folder, part_hit_rate=PART_HIT_RATE):
    """A visualize out_dir: viz.json (two pairs, the part hits) and small PNGs in place of its figures."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [{"class_a": f"00{i}.A", "class_b": f"00{i}.B", "figure": f"gates_pair{i}.png"} for i in (1, 2)]
    names = [p["figure"] for p in pairs] + (["part_hits.png"] if part_hit_rate else [])
    for name in names:
        Image.new("RGB", (8, 8), "white").save(folder / name)
    data = {"api_run": "reports/demo/runs/api-net/seed-0", "baseline_run": "reports/demo/runs/api-False/seed-0",
            "k": 5, "radius": 1.0, "pairs": pairs, "part_hit_rate": part_hit_rate, "figures": names}
    (folder / "viz.json").write_text(json.dumps(data, indent=1))
    return folder
