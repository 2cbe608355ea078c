"""API-Net and its Baseline on fastai's Learner: the paper's optimiser, freeze schedule and fast-path options."""
import inspect
from functools import partial

import fastai.callback.channelslast  # noqa: F401  (patches Learner.to_channelslast)
import fastai.callback.fp16  # noqa: F401  (patches Learner.to_fp16 / to_bf16)
from fastai.callback.core import Callback, CancelValidException
from fastai.callback.schedule import ParamScheduler, SchedCos
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy, top_k_accuracy
from fastai.optimizer import SGD, Adam
from fastai.torch_core import params
from fastcore.basics import patch
from fastcore.foundation import L
from fastcore.meta import delegates

from .callback import APICallback
from .gradcache import enable_gradient_cache
from .model import FineGrainedNet, create_backbone
from .choices import OPTIMIZERS, PRECISIONS, check_choice
from .paper import METHOD, METHOD_FIXED, MOMENTUM, PAPER_ARCH, RECIPE

__all__ = ["api_learner", "FreezeBackbone", "TestEvery", "PAPER_OPT", "PRECISIONS", "OPTIMIZERS", "OPT_FUNCS", "top5",
           "backbone_splitter"]

# Section 4, Implementation Details: SGD with momentum and weight decay (coupled L2, as torch.optim.SGD).
PAPER_OPT = dict(mom=MOMENTUM, wd=RECIPE["wd"])
# fastai's optimiser for each name in OPTIMIZERS (apikit.choices says why each is there).
OPT_FUNCS = {"sgd": partial(SGD, mom=PAPER_OPT["mom"], decouple_wd=False), "adam": Adam}


def backbone_splitter(model):
    """Two parameter groups: the backbone, and everything added on top (classifier, API module)."""
    body = set(map(id, params(model.body)))
    return [params(model.body), [p for p in params(model) if id(p) not in body]]


def top5(inp, targ):
    """Top-5 accuracy; a named function, so fastai's recorder and metrics.json call it `top5`."""
    return top_k_accuracy(inp, targ, k=5)


# api_learner's keyword arguments that go to the callback (its own and the API module's); the rest go to the Learner.
_CALLBACK_OPTIONS = frozenset(inspect.signature(APICallback).parameters)


@delegates(APICallback, keep=True)
def api_learner(dls, arch=PAPER_ARCH, pretrained=RECIPE["pretrained"], weights=None, api=METHOD["api"],
                dropout=METHOD_FIXED["dropout"], opt=RECIPE["opt"], precision=RECIPE["precision"], channels_last=False,
                compile=False, chunk_size=None, metrics=None, cbs=None, size=None, **kwargs):
    """A Learner for API-Net (`api=True`) or Table 1's Baseline (`api=False`), identical in everything else.

    The backbone (`arch`: a torchvision name in `TORCHVISION_ARCHS` or a timm model name; `weights`: see
    `apikit.model.create_backbone`, None is the paper's IMAGENET1K_V1) is followed by global average
    pooling, dropout and a linear classifier. `learn.weights_loaded` names the weights actually loaded.
    `opt="sgd"` is the paper's SGD (momentum 0.9, L2 weight decay 5e-4 on every parameter, as
    `torch.optim.SGD` does), and `freeze()` freezes the whole backbone, BatchNorm affine parameters included
    (`train_bn=False`), so a frozen step computes no backbone gradient. Metrics default to top-1 and top-5
    accuracy (top-1 alone for 5 classes or fewer); the validation loss is plain CE.

    The fast path on a GPU: `precision` "bf16" or "fp16" (with loss scaling) through fastai's
    `MixedPrecision`; `channels_last` through fastai's `ChannelsLast`; `compile=True` compiles the
    backbone in place with `torch.compile` (the pair step stays eager: its shapes are fixed anyway).
    `chunk_size` (e.g. 30): gradient caching (`apikit.gradcache`), the backbone runs on that many images
    at a time with the whole batch's pairs and exact gradients, so the N_cl x N_im batch needs the
    activation memory of `chunk_size` images; train-mode BatchNorm then normalises per chunk.
    `mining="global"` mines each GPU's anchors across all GPUs' features (`apikit.distributed`).

    The API options (`rank_weight`, `margin`, `intra`, `inter`, `mining`, `miner`, `hidden`, `mutual`, `gate`)
    go to `APICallback` as fastai's functions pass theirs on (`delegates`); `dropout` is the classifier's and
    the API module's; any other keyword goes to fastai's `Learner`. The Baseline ignores the API options.
    """
    check_choice("precision", precision, PRECISIONS)  # every option before any weights load
    check_choice("opt", opt, OPTIMIZERS)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALLBACK_OPTIONS}
    cbs = list(cbs or [])
    if api:  # made first: the callback checks its options before the backbone loads its weights
        cbs.append(APICallback(dropout=dropout, **options))
    to_precision = {"fp32": None, "bf16": Learner.to_bf16, "fp16": Learner.to_fp16}
    body, n_features, loaded = create_backbone(arch, pretrained, weights, size or 64)
    model = FineGrainedNet(body, n_features, dls.c, dropout)
    kwargs = {"opt_func": OPT_FUNCS[opt], "wd": PAPER_OPT["wd"], "wd_bn_bias": True, "train_bn": False,
              "loss_func": CrossEntropyLossFlat(), "splitter": backbone_splitter, **kwargs}
    if metrics is None:
        metrics = [accuracy, top5] if dls.c > 5 else [accuracy]
    learn = Learner(dls, model, metrics=metrics, cbs=cbs, **kwargs)
    learn.weights_loaded = loaded
    if pretrained:
        learn.freeze()
    if channels_last:
        learn.to_channelslast(use_amp=False)
    if to_precision[precision] is not None:
        to_precision[precision](learn)
    if compile:
        model.body.compile()  # in place: parameter names, checkpoints and export stay as they are
    if chunk_size is not None:
        enable_gradient_cache(model, chunk_size)  # after compile: the chunks run the compiled backbone
    return learn


class FreezeBackbone(Callback):
    """Freeze the backbone for the first `freeze_epochs` epochs, then train everything (Section 4).

    As in the authors' code (one SGD for the head, one for the backbone), unfreezing keeps the head's
    optimiser state (its momentum): fastai's `freeze_to` clears every parameter's state, so the head's is
    put back. The backbone starts with none, as the authors' backbone optimiser does.
    """
    order = 5

    def __init__(self, freeze_epochs=RECIPE["freeze_epochs"]):
        self.freeze_epochs = freeze_epochs

    def before_epoch(self):
        """Switch only at the boundary, keeping the head's optimiser state across the unfreeze."""
        frozen = self.epoch < self.freeze_epochs
        if frozen == getattr(self.learn, "backbone_frozen", None):
            return
        opt = self.learn.opt
        kept = {} if opt is None else {p: opt.state[p] for p in params(self.learn.model)
                                       if p.requires_grad and p in opt.state}
        self.learn.freeze() if frozen else self.learn.unfreeze()
        for p, state in kept.items():
            self.learn.opt.state[p] = state
        self.learn.backbone_frozen = frozen


class TestEvery(Callback):
    """Evaluate the test split after every `every`-th epoch (0: none before the last) and after the last epoch,
    unless `last=False` leaves that one to the caller."""
    order = 51  # after Recorder (50) reset its metrics: a skipped epoch records none, never the last ones
    run_train = False

    def __init__(self, every=1, last=True):
        self.every, self.last = every, last

    def before_validate(self):
        """Skip this epoch's evaluation unless it is an `every`-th epoch, or the last one (with `last`)."""
        epoch, final = self.epoch + 1, self.epoch + 1 == self.n_epoch
        if final and not self.last or not final and (self.every == 0 or epoch % self.every):
            raise CancelValidException()


@patch
def fit_paper(self: Learner, epochs=RECIPE["epochs"], lr=RECIPE["lr"], freeze_epochs=RECIPE["freeze_epochs"], cbs=None,
              test_every=1, test_last=True, **kwargs):
    """Section 4's schedule: lr cosine-annealed from `lr` to 0 per iteration over all epochs, backbone frozen first.

    During the frozen epochs the backbone's BatchNorm layers stay in train mode, so their running
    statistics adapt to the new data as in the authors' code, but no backbone parameter (BatchNorm
    affine parameters included) is updated and no backbone gradient is computed. The test split is
    evaluated after every `test_every`-th epoch (0: none; the authors': every epoch) and after the last;
    `test_last=False` skips the last one for a caller that evaluates the final model itself.
    """
    scheds = [ParamScheduler({"lr": SchedCos(lr, 0.0)}), FreezeBackbone(freeze_epochs)]
    if test_every != 1 or not test_last:
        scheds.append(TestEvery(test_every, test_last))
    self.fit(epochs, lr, cbs=scheds + list(L(cbs)), **kwargs)
