"""Tests for apikit/demo.py: the paired comparison it prints, and its setting (no training here)."""
import math

import pytest

from apikit import demo
from apikit.config import check_params
from apikit.model import create_backbone


def test_the_demo_pairs_by_seed_with_the_reports_t_interval():
    """demo prints the report's paired gain: mean of per-seed differences, 95% t half-width (t(0.975, 4) = 2.7764)."""
    from apikit.report import paired_gain
    baseline = {0: 50.0, 1: 60.0, 2: 55.0, 3: 40.0, 4: 45.0}
    api = {0: 52.0, 1: 61.0, 2: 59.0, 3: 40.0, 4: 48.0}
    gain, half, n, pairs = paired_gain(api, baseline)
    assert n == 5 and gain == pytest.approx(2.0) and pairs == [(0, 2.0), (1, 1.0), (2, 4.0), (3, 0.0), (4, 3.0)]
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)


@pytest.mark.parametrize("gain, half, says", [(1.75, 1.25, "API-Net is better"), (-1.75, 1.25, "API-Net is worse"),
                                              (0.5, 1.5, "includes zero")])
def test_verdict_says_plainly_what_the_interval_shows(gain, half, says):
    text = demo.verdict(gain, half, 5)
    assert says in text and "n=5" in text and "95% CI" in text
    assert "n=1, no interval" in demo.verdict(2.0, float("nan"), 1)


def test_the_setting_is_the_papers_regime():
    b = demo.BASE
    assert b["pretrained"] and b["freeze_epochs"] >= 1 and b["opt"] == "sgd" and len(demo.SEEDS) >= 5
    body, _, _ = create_backbone(b["arch"], pretrained=False, size=b["size"])
    import torch
    with torch.no_grad():
        assert min(body.eval()(torch.zeros(1, 3, b["size"], b["size"])).shape[-2:]) >= 4  # last-stage maps >= 4x4
    check_params(**b, weights="x.pth")
