"""`apikit/viz/gates.py`: the gates' top-k channels (Eq. 2), ranked by their pre-sigmoid values, and Fig. 3."""
import copy
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from apikit import viz
from apikit.api import APIModule
from apikit.model import FineGrainedNet

# Hand-made pooled features. With mutual "product", x_m = x1 * x2 = [6, 8, 10, 1, 0.5, -2], so the pair gate's
# pre-sigmoid values are x_m * x1 = [18, 32, 50, 1, 0.25, -4] and x_m * x2 = [12, 16, 20, 1, 0.5, 2].
# In float32, sigmoid(18), sigmoid(32) and sigmoid(50) are all exactly 1.0: g1's top three tie.
X1 = [3.0, 4.0, 5.0, 1.0, 0.5, 2.0]
X2 = [2.0, 2.0, 2.0, 1.0, 1.0, -1.0]


class FeatBody(nn.Module):
    """A 'backbone' whose 2 x 2 maps are constant: image i (its first pixel holds i) gets the features FEATS[i]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("feats", torch.tensor([X1, X2]))

    def forward(self, x):
        return self.feats[x[:, 0, 0, 0].long()][:, :, None, None].expand(-1, -1, 2, 2)


def hand_learner(mutual="product", gate="pair"):
    net = FineGrainedNet(FeatBody(), 6, 2)
    net.api = APIModule(6, mutual=mutual, gate=gate)
    return SimpleNamespace(model=net)  # gate_channels needs only `.model`


def pair_images():
    return torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)


def test_gate_ties_by_hand():
    saturated = torch.sigmoid(torch.tensor([20.0, 30.0, 40.0, 1.0, 0.0]))
    assert saturated[:3].tolist() == [1.0, 1.0, 1.0]
    assert viz.gate_ties(saturated, 2) == 3  # three channels share the top value 1.0
    assert viz.gate_ties(saturated, 4) == 3  # 0.731 is the 4th, alone
    assert viz.gate_ties(torch.tensor([0.9, 0.8, 0.7]), 2) == 0
    assert viz.gate_ties(torch.tensor([0.5, 0.5, 0.4]), 1) == 2


def test_saturated_gates_are_ranked_by_their_pre_sigmoid_values():
    x1, x2 = pair_images()
    got = viz.gate_channels(hand_learner(), x1, x2, k=2)
    torch.testing.assert_close(got.logits1, torch.tensor([18, 32, 50, 1, 0.25, -4], dtype=torch.float64))
    torch.testing.assert_close(got.logits2, torch.tensor([12, 16, 20, 1, 0.5, 2], dtype=torch.float64))
    assert got.ranking == "pre-sigmoid x_m * x_i (Eq. 2)"
    assert got.channels1.tolist() == [2, 1] and got.channels2.tolist() == [2, 1]
    assert (got.ties1, got.ties2) == (3, 0)
    torch.testing.assert_close(got.g1, torch.sigmoid(got.logits1))
    assert got.fmaps1.shape == (6, 2, 2) and got.fmaps1[:, 0, 0].tolist() == X1
    note = viz.tie_note(got)
    assert note == ("g1 has 3 channels tied at the top-2 in float32 (saturated sigmoid): "
                    "ranked by the pre-sigmoid x_m * x_i (Eq. 2) instead")
    assert viz.gate_channels(hand_learner(), x1, x2, k=3).channels1.tolist() == [2, 1, 0]


def test_the_single_gate_is_ranked_by_x_m():
    x1, x2 = pair_images()
    got = viz.gate_channels(hand_learner(mutual="sum", gate="single"), x1, x2, k=3)
    x_m = torch.tensor(X1, dtype=torch.float64) + torch.tensor(X2, dtype=torch.float64)  # [5, 6, 7, 2, 1.5, 1]
    torch.testing.assert_close(got.logits1, x_m)
    torch.testing.assert_close(got.logits2, x_m)
    assert got.ranking == "pre-sigmoid x_m (single gate, Table 3)"
    assert got.channels1.tolist() == got.channels2.tolist() == [2, 1, 0]
    assert (got.ties1, got.ties2) == (0, 0) and viz.tie_note(got) == ""


def test_gate_channels_needs_an_api_net_and_a_valid_k():
    x1, x2 = pair_images()
    plain = SimpleNamespace(model=FineGrainedNet(FeatBody(), 6, 2))
    with pytest.raises(ValueError, match="has no `model.api`"):
        viz.gate_channels(plain, x1, x2)
    with pytest.raises(ValueError, match="k=7 must be between 1 and the feature dimension 6"):
        viz.gate_channels(hand_learner(), x1, x2, k=7)


def test_gate_channels_are_the_topk_of_the_eq2_gates(runs):
    api, dls = runs["api"], runs["dls"]
    items = list(dls.split.loc[dls.split.is_valid, "path"])[:2]
    x = viz.load_batch(dls, items)
    got = viz.gate_channels(api, x[:1], x[1:], k=5)

    model = copy.deepcopy(api.model).eval()
    with torch.no_grad():
        fmaps = model.body(x)
        feats = fmaps.mean(dim=(2, 3))  # global average pooling, by hand
        api64 = model.api.double()
        f1, f2 = feats[:1].double(), feats[1:].double()
        x_m = api64.mutual(f1, f2)
        g1, g2 = api64.gates(f1, f2)
        g1_32, _ = copy.deepcopy(api.model).eval().api.gates(feats[:1], feats[1:])
    torch.testing.assert_close(got.logits1, (x_m * f1)[0])  # Eq. 2's x_m * x_i, by hand
    torch.testing.assert_close(got.logits2, (x_m * f2)[0])
    assert got.channels1.tolist() == (x_m * f1)[0].topk(5).indices.tolist() == g1[0].topk(5).indices.tolist()
    assert got.channels2.tolist() == (x_m * f2)[0].topk(5).indices.tolist() == g2[0].topk(5).indices.tolist()
    for ch in (got.channels1, got.channels2):
        assert len(set(ch.tolist())) == 5
    torch.testing.assert_close(got.g1.float(), g1_32[0], atol=1e-5, rtol=1e-5)  # float64 only for the ranking
    assert got.fmaps1.shape == got.fmaps2.shape == fmaps.shape[1:] == (512, 2, 2)
    torch.testing.assert_close(got.fmaps2, fmaps[1])


def test_plot_gate_maps_draws_both_models(runs):
    api, base, dls = runs["api"], runs["baseline"], runs["dls"]
    x = viz.load_batch(dls, list(dls.split.loc[dls.split.is_valid, "path"])[:2])
    before = plt.get_fignums()
    gates = viz.gate_channels(api, x[:1], x[1:], k=3)
    fig = viz.plot_gate_maps(api, base, x[:1], x[1:], gates=gates, labels=[0, 1], dls=dls)
    assert isinstance(fig, Figure) and plt.get_fignums() == before  # no pyplot state
    images = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(images) == 4 * (3 + 1) and len(bars) == 4
    assert all(bar.get_ylabel() == "map, min to max" for bar in bars)
    titles = [ax.get_title() for ax in images]
    assert sum(t.startswith("API-Net ch") for t in titles) == sum(t.startswith("Baseline ch") for t in titles) == 6
    c = int(gates.channels1[0])
    peak = float(gates.fmaps1[c].max())
    assert f"API-Net ch {c}\ng1={float(gates.g1[c]):.3f} logit {float(gates.logits1[c]):.2f}\nmax {peak:.2f}" in titles
    caption = fig.get_suptitle()
    assert "feature maps (2x2, upsampled) at the top-3 channels" in caption and gates.ranking in caption
    assert all(t.get_fontsize() >= 9 for t in [ax.title for ax in images] + [fig._suptitle])


def test_a_tie_is_said_in_the_caption():
    learn = hand_learner()
    x1, x2 = pair_images()
    fig = viz.plot_gate_maps(learn, learn, x1, x2, k=2, vocab=["a", "b"])
    assert "g1 has 3 channels tied at the top-2 in float32 (saturated sigmoid)" in fig.get_suptitle()
    titles = [ax.get_title() for ax in fig.axes]
    # FeatBody's maps are constant: each title gives its value and says it has no peak
    assert "API-Net ch 2\ng1=1.000 logit 50.00\nflat: all 5.00, no peak" in titles
    assert "API-Net ch 1\ng1=1.000 logit 32.00\nflat: all 4.00, no peak" in titles
