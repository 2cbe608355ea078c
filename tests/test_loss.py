"""Eq. 8-10 of `apikit/loss.py` against a hand-written formula."""
import math

import pytest
import torch

from apikit.loss import api_loss, rank_loss


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def by_hand(self_logits, other_logits, targets, rank_weight, margin):
    rows = [(s, t) for s, t in zip(self_logits, targets)] + [(o, t) for o, t in zip(other_logits, targets)]
    ce = sum(-math.log(softmax(r)[t]) for r, t in rows) / len(rows)
    rank = sum(max(0.0, softmax(o)[t] - softmax(s)[t] + margin)
               for s, o, t in zip(self_logits, other_logits, targets)) / len(targets)
    return ce + rank_weight * rank, rank


SELF = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [-2.0, 3.0, 0.0]]
OTHER = [[1.0, 1.5, -1.0], [0.0, 0.2, 0.9], [1.0, 1.2, 1.0], [-2.0, 3.1, 0.0]]
T = [0, 2, 1, 1]


@pytest.mark.parametrize("rank_weight,margin", [(1.0, 0.05), (0.5, 0.2), (0.0, 0.05), (2.0, 0.0)])
def test_api_loss_matches_hand_formula(rank_weight, margin):
    want, _ = by_hand(SELF, OTHER, T, rank_weight, margin)
    got = api_loss(torch.tensor(SELF), torch.tensor(OTHER), torch.tensor(T), rank_weight, margin)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_rank_term_is_the_mean_hinge():
    _, want = by_hand(SELF, OTHER, T, 1.0, 0.05)
    assert rank_loss(torch.tensor(SELF), torch.tensor(OTHER), torch.tensor(T), 0.05).item() == pytest.approx(want, rel=1e-5)
    # Row 0: self is far more confident than other, so its hinge is inactive (zero); row 1 is active.
    p = lambda r, t: softmax(r)[t]
    assert p(OTHER[0], 0) - p(SELF[0], 0) + 0.05 < 0 < p(OTHER[1], 2) - p(SELF[1], 2) + 0.05


def test_gradient_flows_to_both_branches():
    s, o = torch.tensor(SELF, requires_grad=True), torch.tensor(OTHER, requires_grad=True)
    api_loss(s, o, torch.tensor(T)).backward()
    assert s.grad.abs().sum() > 0 and o.grad.abs().sum() > 0


def test_weight_counts_only_the_valid_rows():
    s, o, t = torch.tensor(SELF), torch.tensor(OTHER), torch.tensor(T)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    keep = [0, 2]
    want, _ = by_hand([SELF[k] for k in keep], [OTHER[k] for k in keep], [T[k] for k in keep], 1.0, 0.05)
    assert api_loss(s, o, t, weight=w).item() == pytest.approx(want, rel=1e-5)
    # The padding rows get no gradient.
    s.requires_grad_()
    api_loss(s, o, t, weight=w).backward()
    assert s.grad[1].abs().sum() == 0 and s.grad[0].abs().sum() > 0


def test_gradcheck_in_float64():
    """The loss stays in float64 for float64 logits (it used to force float32), so gradcheck holds."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    o = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    assert api_loss(s, o, t, margin=0.5).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda a, b: api_loss(a, b, t, rank_weight=1.0, margin=0.5), (s, o))


def test_half_precision_logits_are_widened_to_float32():
    s, o = torch.randn(4, 5).bfloat16(), torch.randn(4, 5).bfloat16()
    assert api_loss(s, o, torch.tensor([0, 1, 2, 3])).dtype == torch.float32
