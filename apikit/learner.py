"""The fine-grained network (backbone -> global average pool -> dropout -> Eq. 7 classifier) on fastai's Learner."""
from functools import partial

import torch
import torchvision
import fastai.callback.channelslast  # noqa: F401  (patches Learner.to_channelslast)
import fastai.callback.fp16  # noqa: F401  (patches Learner.to_fp16 / to_bf16)
from fastai.callback.core import Callback
from fastai.callback.schedule import ParamScheduler, SchedCos
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy, top_k_accuracy
from fastai.optimizer import SGD
from fastai.torch_core import params
from fastcore.basics import patch
from torch import nn

from .callback import APICallback
from .gradcache import enable_gradient_cache

__all__ = ["FineGrainedNet", "create_backbone", "api_learner", "FreezeBackbone", "TORCHVISION_ARCHS",
           "PAPER_OPT", "top5"]

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "densenet121", "densenet161", "densenet169", "densenet201")

PRECISIONS = ("fp32", "bf16", "fp16")

# Section 4, Implementation Details: SGD, momentum 0.9, weight decay 5e-4 (coupled L2, as torch.optim.SGD).
PAPER_OPT = dict(mom=0.9, wd=5e-4)


def create_backbone(arch, pretrained=True):
    """The convolutional backbone of `arch` (torchvision or timm name) and its feature dimension D."""
    if not isinstance(arch, str):
        raise ValueError(f"arch must be a model name, got {arch!r}.")
    if arch in TORCHVISION_ARCHS:
        model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
        if arch.startswith("densenet"):
            # torchvision's DenseNet applies a ReLU between `features` and the pooling.
            body = nn.Sequential(*model.features, nn.ReLU(inplace=True))
        else:
            body = nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc
    else:
        import timm
        if not timm.list_models(arch) and arch not in timm.list_models(pretrained=False):
            raise ValueError(f"arch={arch!r} is neither a torchvision backbone ({', '.join(TORCHVISION_ARCHS)}) "
                             "nor a timm model name (see timm.list_models()).")
        body = timm.create_model(arch, pretrained=pretrained, num_classes=0, global_pool="")
    with torch.no_grad():
        training = body.training
        out = body.eval()(torch.zeros(1, 3, 64, 64))
        body.train(training)
    if out.ndim != 4:
        raise ValueError(f"arch={arch!r} returns features of shape {tuple(out.shape)}; apikit needs a CNN "
                         "backbone with (B, C, H, W) feature maps.")
    return body, out.shape[1]


class FineGrainedNet(nn.Module):
    """x -> body -> global average pool (x_i in R^D) -> dropout -> FC (Eq. 7): the plain CNN of the test path."""

    def __init__(self, body, n_features, n_classes, dropout=0.5):
        super().__init__()
        self.body = body
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.fc(self.drop(self.pool(self.body(x))))

    def classify(self, feats):
        """Eq. 7's logits W x + b of pooled features, with the training dropout before the classifier."""
        return self.fc(self.drop(feats))


def backbone_splitter(model):
    """Two parameter groups: the backbone, and everything added on top (classifier, API module)."""
    body = set(map(id, params(model.body)))
    return [params(model.body), [p for p in params(model) if id(p) not in body]]


top5 = partial(top_k_accuracy, k=5)
top5.__name__ = "top_5_accuracy"


def api_learner(dls, arch="resnet101", pretrained=True, api=True, dropout=0.5, rank_weight=1.0, margin=0.05,
                intra="similar", inter="similar", strategy="class_image", mining="rank", hidden=512, mutual="mlp",
                gate="pair",
                precision="fp32", channels_last=False, compile=False, chunk_size=None, metrics=None, cbs=None,
                **kwargs):
    """A Learner for API-Net (`api=True`) or Table 1's Baseline (`api=False`), identical in everything else.

    The backbone (`arch`: a torchvision name in `TORCHVISION_ARCHS` or a timm model name) is followed by
    global average pooling, dropout and a linear classifier. The optimiser is the paper's SGD (momentum
    0.9, L2 weight decay 5e-4 on every parameter, as `torch.optim.SGD` does), and `freeze()` freezes the
    whole backbone, BatchNorm affine parameters included (`train_bn=False`), so a frozen step computes no
    backbone gradient. Metrics default to top-1 and top-5 accuracy (top-1 alone for 5 classes or fewer);
    the validation loss is plain CE.

    The fast path on a GPU: `precision` "bf16" or "fp16" (with loss scaling) through fastai's
    `MixedPrecision`; `channels_last` through fastai's `ChannelsLast`; `compile=True` compiles the
    backbone in place with `torch.compile` (the pair step stays eager: its shapes are fixed anyway).
    `chunk_size` (e.g. 30): gradient caching (`apikit.gradcache`), the backbone runs on that many images
    at a time with the whole batch's pairs and exact gradients, so the N_cl x N_im batch needs the
    activation memory of `chunk_size` images; train-mode BatchNorm then normalises per chunk.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; choose one of {', '.join(map(repr, PRECISIONS))}.")
    body, n_features = create_backbone(arch, pretrained)
    model = FineGrainedNet(body, n_features, dls.c, dropout)
    cbs = list(cbs or [])
    if api:
        cbs.append(APICallback(rank_weight=rank_weight, margin=margin, intra=intra, inter=inter, strategy=strategy,
                               mining=mining, hidden=hidden, mutual=mutual, gate=gate, dropout=dropout))
    kwargs = {"opt_func": partial(SGD, mom=PAPER_OPT["mom"], decouple_wd=False), "wd": PAPER_OPT["wd"],
              "wd_bn_bias": True, "train_bn": False, "loss_func": CrossEntropyLossFlat(),
              "splitter": backbone_splitter, **kwargs}
    if metrics is None:
        metrics = [accuracy, top5] if dls.c > 5 else [accuracy]
    learn = Learner(dls, model, metrics=metrics, cbs=cbs, **kwargs)
    if pretrained:
        learn.freeze()
    if channels_last:
        learn.to_channelslast(use_amp=False)
    if precision == "bf16":
        learn.to_bf16()
    elif precision == "fp16":
        learn.to_fp16()
    if compile:
        model.body.compile()  # in place: parameter names, checkpoints and export stay as they are
    if chunk_size is not None:
        enable_gradient_cache(model, chunk_size)  # after compile: the chunks run the compiled backbone
    return learn


class FreezeBackbone(Callback):
    """Freeze the backbone for the first `freeze_epochs` epochs, then train everything (Section 4)."""
    order = 5

    def __init__(self, freeze_epochs=8):
        self.freeze_epochs = freeze_epochs

    def before_epoch(self):
        """Switch only at the boundary: fastai's freeze_to also clears the optimiser state."""
        frozen = self.epoch < self.freeze_epochs
        if frozen != getattr(self.learn, "backbone_frozen", None):
            self.learn.freeze() if frozen else self.learn.unfreeze()
            self.learn.backbone_frozen = frozen


@patch
def fit_paper(self: Learner, epochs=100, lr=0.01, freeze_epochs=8, cbs=None, **kwargs):
    """Section 4's schedule: SGD, lr cosine-annealed from `lr` to 0 over all epochs, backbone frozen first.

    During the frozen epochs the backbone's BatchNorm layers stay in train mode, so their running
    statistics adapt to the new data as in the authors' code, but no backbone parameter (BatchNorm
    affine parameters included) is updated and no backbone gradient is computed.
    """
    scheds = [ParamScheduler({"lr": SchedCos(lr, 0.0)}), FreezeBackbone(freeze_epochs)]
    self.fit(epochs, lr, cbs=scheds + list(cbs or []), **kwargs)
