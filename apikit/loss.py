"""The API-Net training objective (Eq. 8-10). Plain torch."""
import torch
import torch.nn.functional as F

from .paper import METHOD, METHOD_FIXED

__all__ = ["api_loss", "rank_loss"]


def _wide(x):
    """At least float32 (half and bfloat16 logits are widened; float64 stays float64, for gradcheck)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _mean(rows, weight):
    """Plain mean, or the mean over the rows whose weight is 1 (no host sync either way)."""
    return rows.mean() if weight is None else (rows * weight).sum() / weight.sum().clamp_min(1)


def rank_loss(self_logits, other_logits, targets, margin=METHOD_FIXED["margin"], weight=None):
    """Eq. 10, mean-reduced: mean over rows of max(0, p_other[t] - p_self[t] + margin)."""
    p_self = _wide(self_logits).softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    p_other = _wide(other_logits).softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    # margin_ranking_loss(a, b, y=1) = max(0, b - a + margin): self must beat other by the margin.
    hinge = F.margin_ranking_loss(p_self, p_other, torch.ones_like(p_self), margin=margin, reduction="none")
    return _mean(hinge, weight)


def api_loss(self_logits, other_logits, targets, rank_weight=METHOD["rank_weight"], margin=METHOD_FIXED["margin"],
             weight=None):
    """Eq. 8: L = L_ce (Eq. 9) + rank_weight * L_rk (Eq. 10), both mean-reduced.

    `self_logits` and `other_logits` are (2P, C): image 1 then image 2 of the P pairs; `targets` is (2P,).
    The paper sums Eq. 9 over four rows and Eq. 10 over two rows per pair, and then over all pairs.
    Like the authors' released code we take means instead: CE over the 4P rows, rank over the 2P rows, so
    ``api_loss = sum_ce / (4P) + rank_weight * sum_rk / (2P)``, i.e. the paper's summed loss with
    lambda = 2 * rank_weight, divided by 4P (which only rescales the learning rate).
    `weight` (2P,), optional, 1 for the rows that count and 0 for padding rows (see
    `apikit.pairs.candidate_pairs`): the means are then over the counted rows only.
    """
    ce_rows = F.cross_entropy(_wide(torch.cat([self_logits, other_logits])), torch.cat([targets, targets]),
                              reduction="none")
    ce = _mean(ce_rows, None if weight is None else torch.cat([weight, weight]))
    if rank_weight == 0:
        return ce
    return ce + rank_weight * rank_loss(self_logits, other_logits, targets, margin, weight)
