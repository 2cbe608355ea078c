"""`APICallback`: trains a fastai Learner with Attentive Pairwise Interaction, unloaded at test time."""
import torch
from fastai.callback.core import Callback
from fastai.callback.hook import hook_output

from .api import APIModule, check_options
from .loss import api_loss
from .pairs import candidate_pairs, check_pair_options, random_pairs

__all__ = ["APICallback", "STRATEGIES", "MINING", "unwrap"]

STRATEGIES = ("class_image", "random")
MINING = ("rank", "global")


def unwrap(model):
    """The model itself, also when DistributedDataParallel (multi-GPU training) wraps it as `.module`."""
    return getattr(model, "module", model)


class APICallback(Callback):
    """API-Net training in the style of fastai's MixUp: swap in the pair loss for training, restore it after.

    The model must expose `pool` (global pooling giving the D-dim features x_i), `drop` and `fc` (the
    classifier of Eq. 7), as `apikit.learner.FineGrainedNet` does. The API module is attached to the
    model as `model.api`, so its parameters train, save and move with the rest; the model's `forward`
    never calls it, so validation, `get_preds`, `predict` and an exported Learner run the plain CNN.

    In multi-GPU training (`apikit.distributed`), `mining="rank"` (the default) mines each anchor's
    partners in its own GPU's batch; `mining="global"` all-gathers the pooled features and labels of every
    rank and mines each local anchor's partners in that global pool (the paper's single batch), with
    gradients flowing back to the rank that computed each feature. In one process both are the same.
    """
    run_valid = False

    def __init__(self, rank_weight=1.0, margin=0.05, intra="similar", inter="similar", strategy="class_image",
                 mining="rank", **api_kwargs):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy={strategy!r} is not valid; choose one of {STRATEGIES}.")
        if mining not in MINING:
            raise ValueError(f"mining={mining!r} is not valid; choose one of {MINING}.")
        if mining == "global" and strategy != "class_image":
            raise ValueError("mining='global' mines Class-Image pairs across ranks; use it with strategy='class_image'.")
        self.mining, self.global_pairs = mining, None
        if mining == "global":
            from .distributed import global_pairs
            self.global_pairs = global_pairs
        # Validate every option now, not mid-fit.
        if strategy == "class_image":
            check_pair_options(intra, inter)
        check_options(**api_kwargs)
        self.rank_weight, self.margin, self.intra, self.inter, self.strategy = rank_weight, margin, intra, inter, strategy
        self.api_kwargs = api_kwargs

    def after_create(self):
        """Attach the API module as soon as the Learner exists, so the first optimiser includes it."""
        self._attach()

    def before_fit(self):
        """Attach the API module if the callback was added after the Learner was created."""
        if self._attach() and self.learn.opt is not None:
            self.learn.create_opt()  # the optimiser fit() just made does not hold the new parameters

    def _attach(self):
        model = unwrap(self.learn.model)
        if isinstance(getattr(model, "api", None), APIModule):
            return False
        dim = model.fc.in_features
        model.api = APIModule(dim, **self.api_kwargs).to(next(model.parameters()).device)
        return True

    def before_train(self):
        """Hook the pooled features and swap in the pair loss."""
        self.hook = hook_output(unwrap(self.learn.model).pool, detach=False)
        self.old_lf, self.learn.loss_func = self.learn.loss_func, self.lf

    def after_train(self):
        """Remove the hook and put the original loss back."""
        self.hook.remove()
        self.learn.loss_func = self.old_lf

    def after_cancel_train(self):
        """A cancelled epoch still restores the Learner."""
        self.after_train()

    def after_cancel_fit(self):
        """A cancelled fit still restores the Learner."""
        if getattr(self, "hook", None) is not None and not self.hook.removed:
            self.after_train()

    def pairs(self, feats, labels):
        """(idx1, idx2, valid) for this batch: Class-Image mining (Section 3) or Table 4's Random."""
        if self.strategy == "random":
            idx1, idx2 = random_pairs(labels, 2 * len(labels))
            return idx1, idx2, torch.ones_like(idx1, dtype=torch.bool)
        return candidate_pairs(feats, labels, self.intra, self.inter)

    def lf(self, pred, y):
        """Eq. 8 over the batch's pairs; `pred` (the plain forward) is not used in training."""
        # Plain tensors: fastai's typed subclasses would dispatch every op below through __torch_function__.
        model, feats, y = unwrap(self.learn.model), self.hook.stored.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)
        if self.global_pairs is None:
            # Fixed-size pairs with a validity mask: nothing in the step waits for the device (no host sync).
            idx1, idx2, valid = self.pairs(feats.detach(), y)
        else:  # mining="global": feats and y become every rank's; this rank's anchors, partners from all
            feats, y, idx1, idx2, valid = self.global_pairs(feats, y, self.intra, self.inter)
        # index_select, not feats[idx]: the backward of advanced indexing accumulates in parallel on a CPU in a
        # run-dependent order, so two seeded runs would differ; index_select's backward (index_add) does not.
        x1_self, x1_other, x2_self, x2_other = model.api(feats.index_select(0, idx1), feats.index_select(0, idx2))
        n = len(idx1)
        # One classifier call for all four attentive features: rows are [self (img 1, img 2); other (img 1, img 2)].
        logits = model.classify(torch.cat([x1_self, x2_self, x1_other, x2_other]))
        targets, weight = torch.cat([y[idx1], y[idx2]]), torch.cat([valid, valid]).float()
        # Kept (detached, on the device) for diagnostics callbacks such as apikit.diagnostics.PairDiagnostics.
        self.batch = dict(feats=feats.detach(), labels=y, idx1=idx1, idx2=idx2, valid=valid, targets=targets,
                          self_logits=logits[:2 * n].detach(), other_logits=logits[2 * n:].detach())
        return api_loss(logits[:2 * n], logits[2 * n:], targets, self.rank_weight, self.margin, weight)
