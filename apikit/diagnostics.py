"""Pair-mining diagnostics per epoch: is pair construction (Section 3) still giving the model work to do?

`PairDiagnostics` reads what `APICallback` kept of each training batch, accumulates on the device, and
syncs with the host once per epoch. A collapsed run shows as a rank term that is never active and
intra/inter distances that no longer separate.
"""
import torch
from fastai.callback.core import Callback

from .step import unwrap

__all__ = ["PairDiagnostics", "distribution"]


def distribution(x):
    """Mean, std and quantiles of a 1-D tensor, as plain floats (None for an empty tensor)."""
    if x.numel() == 0:
        return None
    x = x.float()
    q = torch.quantile(x, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], device=x.device)).tolist()
    return dict(mean=x.mean().item(), std=x.std().item() if x.numel() > 1 else 0.0, min=q[0], q25=q[1],
                median=q[2], q75=q[3], max=q[4], n=x.numel())


class PairDiagnostics(Callback):
    """Per epoch: intra/inter pair distances, anchors without an intra partner, how often the rank hinge is
    active, feature-weighted mean gates for self vs other, and the most frequent class pairs among inter pairs."""
    order = 52  # after the Recorder (50), before apikit.runlog.RunLog (55) saves the epoch
    run_valid = False

    def __init__(self, top_pairs=5):
        self.top_pairs = top_pairs
        self.epochs = []

    def before_epoch(self):
        """Start empty accumulators for this epoch."""
        self.acc = {k: [] for k in ("dist", "intra", "valid", "lonely", "active", "gate_self", "gate_other", "codes")}

    def after_loss(self):
        """Accumulate this batch's figures on the device; filtering waits for the epoch's end (no host sync)."""
        api_cb = getattr(self.learn, "api_callback", None)
        b = getattr(api_cb, "batch", None)
        if not self.training or b is None:
            return
        f, y, i, j, valid = b["feats"], b["labels"], b["idx1"], b["idx2"], b["valid"]
        same = y[i] == y[j]
        self.acc["dist"].append((f[i] - f[j]).float().norm(dim=1))
        self.acc["intra"].append(same)
        self.acc["valid"].append(valid)
        # An anchor is alone when its label occurs once in the batch: it has no intra partner.
        self.acc["lonely"].append(((y[:, None] == y[None, :]).sum(1) == 1).float())
        t = b["targets"][:, None]
        p_self = b["self_logits"].float().softmax(1).gather(1, t)[:, 0]
        p_other = b["other_logits"].float().softmax(1).gather(1, t)[:, 0]
        self.acc["active"].append((p_other - p_self + api_cb.margin > 0).view(2, -1).T)  # (P, 2)
        api = unwrap(self.learn.model).api
        with torch.no_grad():
            training = api.training
            g1, g2 = api.eval().gates(f[i], f[j])
            api.train(training)
        # Feature-weighted mean gate: how much of x_i's own activation its self (g_i) / other (g_j) gate keeps.
        x1, x2 = f[i].float().abs(), f[j].float().abs()
        w = x1.sum(1) + x2.sum(1) + 1e-12
        self.acc["gate_self"].append(((x1 * g1).sum(1) + (x2 * g2).sum(1)) / w)
        self.acc["gate_other"].append(((x1 * g2).sum(1) + (x2 * g1).sum(1)) / w)
        self.acc["codes"].append(torch.stack([y[i], y[j]], 1))

    def after_epoch(self):
        """Summarise the epoch (one host sync) into `self.epochs` (the Learner's `pair_diagnostics.epochs`)."""
        if not self.acc["dist"]:
            return
        a = {k: torch.cat(v) for k, v in self.acc.items()}
        valid, intra = a["valid"], a["intra"]
        vocab = list(map(str, getattr(self.dls, "vocab", [])))
        pairs = []
        inter_codes = a["codes"][valid & ~intra]
        if inter_codes.numel():
            codes, counts = torch.unique(inter_codes.sort(1).values, dim=0, return_counts=True)
            for k in counts.argsort(descending=True)[:self.top_pairs].tolist():
                c1, c2 = codes[k].tolist()
                pairs.append(dict(classes=[vocab[c1] if vocab else c1, vocab[c2] if vocab else c2],
                                  count=int(counts[k])))
        mean = lambda t: t.mean().item() if t.numel() else None
        self.epochs.append(dict(
            epoch=self.epoch + 1, intra_distance=distribution(a["dist"][valid & intra]),
            inter_distance=distribution(a["dist"][valid & ~intra]), no_intra_partner=mean(a["lonely"]),
            rank_active=mean(a["active"][valid].float()), gate_self=mean(a["gate_self"][valid]),
            gate_other=mean(a["gate_other"][valid]), top_inter_class_pairs=pairs))
