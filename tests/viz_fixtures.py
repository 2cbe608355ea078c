"""Tiny finished runs for the tests of `apikit/viz/`: a generated set and an untrained Baseline and API-Net.

Untrained keeps the suite fast; nothing here depends on accuracy. The runs are built once per session,
however many test modules use the `runs` fixture (conftest.py).
"""
import json
from pathlib import Path

from fastai.learner import load_learner
from fastai.torch_core import set_seed

from apikit.data import get_dls, synthetic
from apikit.export import export_weights
from apikit.learner import api_learner
from apikit.model import input_stats
from apikit.record import model_fingerprint

ROOT = Path(__file__).resolve().parents[1]
SYN = dict(n_classes=4, n_train=6, n_test=3, size=64)  # 4 classes: one group of 4 confusable species
SIZE, RESIZE = 64, 72  # resnet18 -> 2 x 2 feature maps; the centre crop starts at pixel 4


def finish_run(run_dir, **config):
    """The metrics.json a finished training run leaves: its config and the fingerprints of the model files it holds
    (model.pkl's always; model.pth's, which visualize checks, when it is there)."""
    run_dir = Path(run_dir)
    metrics = {"status": "finished", "config": {"size": SIZE, "resize": RESIZE, **config},
               "model_sha256": model_fingerprint(run_dir / "model.pkl"),
               "normalization": input_stats("resnet18", pretrained=False)}  # as training records it
    if (run_dir / "model.pth").is_file():
        metrics["weights_sha256"] = model_fingerprint(run_dir / "model.pth")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def build_runs(tmp):
    """{"root", "dls", "tmp", "api", "baseline"}: the set, its DataLoaders, the two loaded Learners; their
    run_dirs are tmp/runs/api and tmp/runs/baseline (model.pkl, model.pth and metrics.json). Do not modify them."""
    root = synthetic.make(tmp / "synthetic", **SYN)
    dls = get_dls("synthetic", root, size=SIZE, resize=RESIZE, n_classes=2, n_images=4, bs=12, device="cpu",
                  synthetic=SYN)
    learners = {}
    for seed, (name, api) in enumerate((("api", True), ("baseline", False))):
        set_seed(seed)
        learn = api_learner(dls, arch="resnet18", pretrained=False, api=api)
        learn.path = tmp / "runs" / name
        learn.path.mkdir(parents=True)
        learn.export("model.pkl")
        export_weights(learn, learn.path / "model.pth")
        finish_run(learn.path, arch="resnet18", pretrained=False, api=api, dataset="synthetic", data_path=str(root),
                   synthetic=SYN)
        learners[name] = load_learner(learn.path / "model.pkl")
    return dict(root=root, dls=dls, tmp=tmp, **learners)
