"""`APICallback`: trains a fastai Learner with Attentive Pairwise Interaction, unloaded at test time."""
from fastai.callback.core import Callback
from fastai.callback.hook import hook_output
from fastcore.meta import delegates

from .api import APIModule
from .choices import check_api_options, check_mining
from .paper import METHOD, METHOD_FIXED
from .step import pair_step, unwrap

__all__ = ["APICallback"]


class APICallback(Callback):
    """API-Net training in the style of fastai's MixUp: swap in the pair loss for training, restore it after.

    The model must expose `pool` (global pooling giving the D-dim features x_i), `drop` and `fc` (the
    classifier of Eq. 7), as `apikit.model.FineGrainedNet` does. The API module is attached to the model
    as `model.api`, so its parameters train, save and move with the rest; the model's `forward` never
    calls it, so validation, `get_preds`, `predict` and an exported Learner run the plain CNN.

    fastai makes a callback an attribute of its Learner; this one is `learn.api_callback`, so that
    `learn.api` is never mistaken for the API module (`learn.model.api`).

    `mining="global"` mines each GPU's anchors with partners from all GPUs (`apikit.distributed.global_pairs`);
    `miner`, a function of `apikit.step.pair_step`'s hook, replaces the mining of `mining="rank"`.
    """
    run_valid = False
    name = "api_callback"

    @delegates(APIModule)  # the signature lists the module's options (hidden, mutual, gate, dropout) after its own
    def __init__(self, rank_weight=METHOD["rank_weight"], margin=METHOD_FIXED["margin"], intra=METHOD["intra"],
                 inter=METHOD["inter"], mining="rank", miner=None, **kwargs):
        check_mining(mining, intra, inter)  # now, not mid-fit
        check_api_options(**kwargs)  # now, not when the Learner attaches the module
        if mining == "global" and miner is None:
            from .distributed import global_pairs  # fastai's distributed stack, only when asked for
            miner = global_pairs
        self.rank_weight, self.margin, self.intra, self.inter, self.miner = rank_weight, margin, intra, inter, miner
        self.api_kwargs, self.batch = kwargs, None

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

    def lf(self, pred, y):
        """Eq. 8 over the batch's pairs (`apikit.step.pair_step`); `pred` (the plain forward) is not used in training."""
        loss, self.batch = pair_step(unwrap(self.learn.model), self.hook.stored, y, self.intra, self.inter,
                                     self.rank_weight, self.margin, self.miner)
        return loss
