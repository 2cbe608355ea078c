"""Hand-written run_dirs (metrics.json files with known numbers) for tests/test_report.py."""
import json

# The paper's base configuration, as apikit/experiment.py writes it into metrics.json.
PAPER_CONFIG = dict(dataset="cub", data_path=None, download=False, arch="resnet101", pretrained=True, size=448,
                    resize=512, epochs=100, freeze_epochs=8, lr=0.01, wd=0.0005, n_classes=30, n_images=4, api=True,
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
    ("demo/api-net/seed-0", DEMO_CONFIG, {}, 0, 40.0),
    ("demo/api-False/seed-0", DEMO_CONFIG, {"api": False}, 0, 35.0),
    # Table 5's N_cl=10 scaled to the demo's 6 x 2 batch: round(10 * 6 / 30) = 2 classes.
    ("demo/n_classes-2/seed-0", DEMO_CONFIG, {"n_classes": 2}, 0, 30.0),
    # Table 5's N_im=2 and N_im=3 both scale to the base's 2 images: the same configuration as demo/api-net,
    # with the same seed. Each cell counts one run per seed, preferring the folder named for its row.
    ("demo/n_images-2/seed-0", DEMO_CONFIG, {"n_images": 2}, 0, 41.0),
]
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


def metrics_json(config, status="finished", top1=None, error=None, hist=None):
    data = {"status": status, "error": error, "config": config,
            "metrics": {} if top1 is None else {"top1": top1, "top5": min(100.0, top1 + 5.0), "valid_loss": 0.5},
            "history": hist if hist is not None else ([] if top1 is None else history(top1)),
            "times": {"fit_s": 100.0, "eval_s": 2.0, "total_s": 102.0},
            "versions": {"python": "3.12", "torch": "2.x", "fastai": "2.8", "apikit": "0.1.0"},
            "git_commit": "abc1234", "device": "cpu"}
    return data


def write(root, rel, data):
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(data, indent=1))
    return d


def make_runs(root):
    """Write the fixture's run_dirs under `root`; returns {folder: run_dir path} of the finished runs."""
    dirs = {}
    for rel, base, overrides, seed, top1 in FINISHED:
        cfg = {**base, **overrides, "seed": seed, "run_dir": f"reports/runs/{rel}"}
        dirs[rel] = write(root, rel, metrics_json(cfg, top1=top1))
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
