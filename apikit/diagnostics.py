"""Pair-mining diagnostics per epoch: is pair construction (Section 3) still giving the model work to do?

`PairDiagnostics` reads what `APICallback` kept of each training batch, accumulates on the device, and
syncs with the host once per epoch. A collapsed run shows as a rank term that is never active and
intra/inter distances that no longer separate.
"""
import torch
from fastai.callback.core import Callback

__all__ = ["PairDiagnostics", "summary"]


def summary(x):
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
    order = 52  # after the Recorder (50), before apikit.experiment.RunLog (55) saves the epoch
    run_valid = False

    def __init__(self, top_pairs=5):
        self.top_pairs = top_pairs
        self.epochs = []

    def before_epoch(self):
        """Start empty accumulators for this epoch."""
        self.acc = dict(intra=[], inter=[], lonely=[], active=[], gate_self=[], gate_other=[], codes=[])

    def after_loss(self):
        """Accumulate this batch's figures on the device (no host sync)."""
        b = getattr(getattr(self.learn, "api", None), "batch", None)
        if not self.training or b is None:
            return
        f, y, i, j = b["feats"], b["labels"], b["idx1"], b["idx2"]
        same = y[i] == y[j]
        d = (f[i] - f[j]).float().norm(dim=1)
        self.acc["intra"].append(d[same])
        self.acc["inter"].append(d[~same])
        # An anchor is alone when its label occurs once in the batch: it has no intra partner.
        self.acc["lonely"].append(((y[:, None] == y[None, :]).sum(1) == 1).float())
        t = b["targets"][:, None]
        p_self = b["self_logits"].float().softmax(1).gather(1, t)[:, 0]
        p_other = b["other_logits"].float().softmax(1).gather(1, t)[:, 0]
        self.acc["active"].append((p_other - p_self + self.learn.api.margin > 0).float())
        api = self.learn.model.api
        with torch.no_grad():
            training = api.training
            g1, g2 = api.eval().gates(f[i], f[j])
            api.train(training)
        # Feature-weighted mean gate: how much of x_i's own activation its self (g_i) / other (g_j) gate keeps.
        x1, x2 = f[i].float(), f[j].float()
        w = x1.abs().sum(1) + x2.abs().sum(1) + 1e-12
        self.acc["gate_self"].append(((x1.abs() * g1).sum(1) + (x2.abs() * g2).sum(1)) / w)
        self.acc["gate_other"].append(((x1.abs() * g2).sum(1) + (x2.abs() * g1).sum(1)) / w)
        self.acc["codes"].append(torch.stack([y[i][~same], y[j][~same]], 1))

    def after_epoch(self):
        """Summarise the epoch (one host sync) into `self.epochs` and `learn.pair_diagnostics`."""
        a = {k: torch.cat(v) if v else torch.empty(0) for k, v in self.acc.items()}
        vocab = list(map(str, getattr(self.dls, "vocab", [])))
        pairs = []
        if a["codes"].numel():
            codes, counts = torch.unique(a["codes"].sort(1).values, dim=0, return_counts=True)
            for k in counts.argsort(descending=True)[:self.top_pairs].tolist():
                c1, c2 = codes[k].tolist()
                pairs.append(dict(classes=[vocab[c1] if vocab else c1, vocab[c2] if vocab else c2],
                                  count=int(counts[k])))
        mean = lambda t: t.mean().item() if t.numel() else None
        self.epochs.append(dict(
            epoch=self.epoch, intra_distance=summary(a["intra"]), inter_distance=summary(a["inter"]),
            no_intra_partner=mean(a["lonely"]), rank_active=mean(a["active"]),
            gate_self=mean(a["gate_self"]), gate_other=mean(a["gate_other"]), top_inter_class_pairs=pairs))
        self.learn.pair_diagnostics = self.epochs
