"""Small statistics the report and the figures share: mean and sample sd, and the Student t interval of a mean."""
import math

import numpy as np

__all__ = ["mean_sd", "t_interval"]


def mean_sd(values):
    """(mean, sample sd (ddof 1) or NaN when n < 2, n) of a list of numbers."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    if not n:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if n >= 2 else math.nan, n


def t_interval(values, level=0.95):
    """(mean, half-width of the two-sided `level` t interval of the mean, n); half-width NaN when n < 2."""
    mean, sd, n = mean_sd(values)
    if n < 2:
        return mean, math.nan, n
    from scipy.stats import t
    return mean, float(t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n)), n
