"""`apikit/diagnostics.py`: per-epoch pair-mining figures against values computed by hand."""
import pytest
import torch

from apikit.diagnostics import PairDiagnostics, distribution
from apikit.learner import api_learner
from apikit.pairs import mine_pairs

from conftest import tiny_dls


def test_distribution():
    s = distribution(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert s == dict(mean=3.0, std=pytest.approx(1.5811388), min=1.0, q25=2.0, median=3.0, q75=4.0, max=5.0, n=5)
    assert distribution(torch.empty(0)) is None


def test_one_batch_by_hand(image_root):
    dls = tiny_dls(image_root, n_classes=3, n_images=2)
    learn = api_learner(dls, arch="resnet18", pretrained=False, dropout=0.0)
    diag = PairDiagnostics()
    learn.add_cb(diag)
    learn.model.eval()
    x, y = dls.one_batch()
    cb = learn.api_callback
    cb.before_train()
    learn.loss_func(learn.model(x), y)
    cb.after_train()
    diag.learn, learn.training, learn.epoch = learn, True, 0
    diag.before_epoch()
    diag.after_loss()
    diag.after_epoch()
    d = learn.pair_diagnostics.epochs[0]
    f = cb.batch["feats"]
    y = y.as_subclass(torch.Tensor)
    i, j = mine_pairs(f, y)
    n = len(y)
    dist = (f[i] - f[j]).norm(dim=1)
    assert d["intra_distance"]["n"] == n and d["inter_distance"]["n"] == n
    assert d["intra_distance"]["mean"] == pytest.approx(dist[:n].mean().item(), rel=1e-5)
    assert d["inter_distance"]["max"] == pytest.approx(dist[n:].max().item(), rel=1e-5)
    assert d["no_intra_partner"] == 0.0  # class-balanced batches: every image has a same-class partner
    t = cb.batch["targets"][:, None]
    p_s = cb.batch["self_logits"].softmax(1).gather(1, t)[:, 0]
    p_o = cb.batch["other_logits"].softmax(1).gather(1, t)[:, 0]
    assert d["rank_active"] == pytest.approx((p_o - p_s + 0.05 > 0).float().mean().item())
    assert 0 < d["gate_self"] < 1 and 0 < d["gate_other"] < 1
    assert sum(p["count"] for p in d["top_inter_class_pairs"]) <= n
    assert all(a != b for a, b in (p["classes"] for p in d["top_inter_class_pairs"]))
