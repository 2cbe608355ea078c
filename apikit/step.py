"""The API-Net training step on pooled features: pairs -> API module (Eq. 1-6) -> classifier (Eq. 7) -> loss (Eq. 8).

One function, `pair_step`, used by the fastai callback, the gradient-cache tests and the GPU benchmark
alike. Plain torch: it plugs into any loop whose model has `api` (an `APIModule`) and `classify`.
"""
import torch

from .loss import api_loss
from .choices import MINING, PAIRINGS
from .pairs import candidate_pairs, random_pairs
from .paper import METHOD, METHOD_FIXED

__all__ = ["MINING", "PAIRINGS", "unwrap", "choose_pairs", "pair_step"]


def unwrap(model):
    """The model itself, also when DistributedDataParallel (multi-GPU training) wraps it as `.module`."""
    return getattr(model, "module", model)


def choose_pairs(feats, labels, intra=METHOD["intra"], inter=METHOD["inter"]):
    """(idx1, idx2, valid): Class-Image mining (Section 3), or Table 4's Random when intra == inter == "random"."""
    if intra == "random":
        idx1, idx2 = random_pairs(labels, 2 * len(labels))
        return idx1, idx2, torch.ones_like(idx1, dtype=torch.bool)
    # Fixed-size pairs with a validity mask: nothing in the step waits for the device (no host sync).
    return candidate_pairs(feats, labels, intra, inter)


def pair_step(model, feats, labels, intra=METHOD["intra"], inter=METHOD["inter"], rank_weight=METHOD["rank_weight"],
              margin=METHOD_FIXED["margin"], miner=None):
    """Eq. 8 on one batch's pooled features `feats` (B, D): returns (loss, batch) where `batch` keeps the pairs.

    `miner(feats, labels, intra, inter) -> (feats, labels, idx1, idx2, valid)` replaces `choose_pairs`,
    e.g. to mine across GPUs; the default mines in this batch.
    """
    feats, labels = feats.as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor)
    if miner is None:
        idx1, idx2, valid = choose_pairs(feats.detach(), labels, intra, inter)
    else:
        feats, labels, idx1, idx2, valid = miner(feats, labels, intra, inter)
    # index_select, not feats[idx]: the backward of advanced indexing accumulates in parallel on a CPU in a
    # run-dependent order, so two seeded runs would differ; index_select's backward (index_add) does not.
    x1_self, x1_other, x2_self, x2_other = model.api(feats.index_select(0, idx1), feats.index_select(0, idx2))
    n = len(idx1)
    # One classifier call for all four attentive features: rows are [self (img 1, img 2); other (img 1, img 2)].
    logits = model.classify(torch.cat([x1_self, x2_self, x1_other, x2_other]))
    targets, weight = torch.cat([labels[idx1], labels[idx2]]), torch.cat([valid, valid]).float()
    loss = api_loss(logits[:2 * n], logits[2 * n:], targets, rank_weight, margin, weight)
    batch = dict(feats=feats.detach(), labels=labels, idx1=idx1, idx2=idx2, valid=valid, targets=targets,
                 self_logits=logits[:2 * n].detach(), other_logits=logits[2 * n:].detach())
    return loss, batch
