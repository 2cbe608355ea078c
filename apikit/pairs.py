"""Pair construction in a batch (Section 3, Pair Construction; Table 4). Plain torch."""
import torch

from .choices import CHOICES, PAIRINGS, check_pair_options
from .paper import METHOD

__all__ = ["mine_pairs", "candidate_pairs", "random_pairs", "check_pair_options", "CHOICES", "PAIRINGS"]


def _partner(dist, mask, how):
    """For each anchor (row), the masked column nearest ('similar') or farthest ('dissimilar'), and whether it exists."""
    if how == "similar":
        j = dist.masked_fill(~mask, float("inf")).argmin(dim=1)
    elif how == "dissimilar":
        j = dist.masked_fill(~mask, float("-inf")).argmax(dim=1)
    else:  # unreachable after check_pair_options; never read another word as "dissimilar"
        raise ValueError(f"no partner rule for {how!r}; choose one of 'similar', 'dissimilar'.")
    return j, mask.any(dim=1)


def candidate_pairs(feats, labels, intra=METHOD["intra"], inter=METHOD["inter"]):
    """Every anchor's intra then inter partner, fixed-size and without a host sync: (idx1, idx2, valid).

    `valid[k]` is False where anchor idx1[k] has no candidate partner in the batch (idx2[k] is then
    meaningless). The shapes depend only on the batch size, so a training step can weight its loss by
    `valid` instead of filtering, which would make the host wait for the device. The options are checked
    here too: plain strings, so the check costs no host sync.
    """
    check_pair_options(intra, inter, allow_random=False)
    if feats.ndim != 2 or labels.shape != feats.shape[:1]:
        raise ValueError(f"expected feats (B, D) and labels (B,), got {tuple(feats.shape)} and {tuple(labels.shape)}.")
    # Plain tensors: typed subclasses (fastai's TensorImage/TensorCategory) do not mix in masked_fill.
    feats, labels = feats.detach().float().as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor)
    dist = torch.cdist(feats[None], feats[None])[0]
    same = labels[:, None] == labels[None, :]
    anchors = torch.arange(len(labels), device=feats.device)
    eye = torch.eye(len(labels), dtype=torch.bool, device=feats.device)
    idx1, idx2, valid = [], [], []
    for how, mask in ((intra, same & ~eye), (inter, ~same)):
        if how is not None:
            j, has = _partner(dist, mask, how)
            idx1.append(anchors)
            idx2.append(j)
            valid.append(has)
    return torch.cat(idx1), torch.cat(idx2), torch.cat(valid)


def mine_pairs(feats, labels, intra=METHOD["intra"], inter=METHOD["inter"]):
    """Intra/inter pairs by Euclidean distance (Section 3): returns (idx1, idx2), anchors in idx1.

    Each anchor i gets an intra partner (same label, j != i) and an inter partner (other label), the
    nearest ('similar') or farthest ('dissimilar') one, or none (None). The output holds all intra pairs
    in anchor order, then all inter pairs in anchor order. An anchor with no candidate partner in the
    batch gets no pair (the authors' code paired it with image 0). Filtering those out makes the output
    size data-dependent; `candidate_pairs` is the sync-free form used in training (it checks the options).
    """
    idx1, idx2, valid = candidate_pairs(feats, labels, intra, inter)
    return idx1[valid], idx2[valid]


def random_pairs(labels, n_pairs, generator=None):
    """Table 4's Random construction: n_pairs pairs (i, j), i != j, drawn uniformly from the batch."""
    n = len(labels)
    if n < 2:
        raise ValueError(f"random pairs need at least 2 images in the batch, got {n}.")
    i = torch.randint(n, (n_pairs,), generator=generator, device=labels.device)
    # An offset in [1, n) never maps i onto itself.
    j = (i + torch.randint(1, n, (n_pairs,), generator=generator, device=labels.device)) % n
    return i, j
