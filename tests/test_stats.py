"""`apikit/stats.py`: the mean, sample sd and Student t interval, against values worked by hand."""
import math

import pytest

from apikit.stats import mean_sd, t_interval


def test_mean_sd_by_hand():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    mean, sd, n = mean_sd([4.0])
    assert (mean, n) == (4.0, 1) and math.isnan(sd)
    assert mean_sd([])[2] == 0


def test_t_interval_by_hand():
    # mean 0.5, sample sd 0.5, standard error 0.5 / sqrt(3), t(0.975, 2 df) = 4.302653
    mean, half, n = t_interval([1.0, 0.5, 0.0])
    assert (mean, n) == (0.5, 3) and half == pytest.approx(4.302653 * 0.5 / math.sqrt(3))
    assert t_interval([0.25, 0.25, 0.25]) == (0.25, 0.0, 3)
    mean, half, n = t_interval([0.4])
    assert (mean, n) == (0.4, 1) and math.isnan(half)
    # a 90% interval is narrower: t(0.95, 2 df) = 2.919986
    assert t_interval([1.0, 0.5, 0.0], level=0.9)[1] == pytest.approx(2.919986 * 0.5 / math.sqrt(3))
