"""Images as the models see them: plain normalised batches, feature maps, predictions, and back to pixels.

Every model runs in eval mode; inputs go to it as plain tensors, not fastai's typed subclasses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..choices import NORMALIZATIONS

__all__ = ["plain_tensor", "as_batch", "model_device", "class_names", "item_paths", "load_batch", "feature_maps",
           "predict_probs", "short_class_name", "normalize_stats", "display_image"]


def plain_tensor(t) -> torch.Tensor:
    """A plain torch.Tensor (fastai's TensorImage & co. dispatch every op through __torch_function__)."""
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else torch.as_tensor(t)


def as_batch(x) -> torch.Tensor:
    """A (3, H, W) image or a (B, 3, H, W) batch as a plain (B, 3, H, W) tensor."""
    x = plain_tensor(x)
    return x[None] if x.ndim == 3 else x


def model_device(learn) -> torch.device:
    """The device of the Learner's model (its first parameter's)."""
    return next(learn.model.parameters()).device


def class_names(learn, dl=None) -> list[str]:
    """The class names of `dl` (default the Learner's DataLoaders), as strings."""
    vocab = getattr(dl, "vocab", None) if dl is not None else None
    if vocab is None:
        vocab = learn.dls.vocab
    return [str(v) for v in vocab]


def item_paths(dl) -> list[Path]:
    """The image paths of a DataLoader's items (a DataFrame with a `path` column, or a list of paths)."""
    items = dl.items
    if hasattr(items, "iloc"):
        return [Path(p) for p in items["path"]]
    return [Path(p) for p in items]


def load_batch(dls, items, device=None) -> torch.Tensor:
    """Images (paths) through `dls`' test transforms as one normalised plain batch (B, 3, size, size)."""
    items = list(items)
    x = plain_tensor(dls.test_dl(items, bs=len(items)).one_batch()[0])
    return x if device is None else x.to(device)


def feature_maps(learn, x) -> torch.Tensor:
    """The backbone's last-stage feature maps (B, C, h, w) of a normalised batch, in eval mode."""
    model = learn.model.eval()
    with torch.no_grad():
        return plain_tensor(model.body(as_batch(x).to(model_device(learn))))


def predict_probs(learn, x) -> torch.Tensor:
    """Softmax class probabilities (B, n_classes) on the CPU, in eval mode."""
    model = learn.model.eval()
    with torch.no_grad():
        return plain_tensor(model(as_batch(x).to(model_device(learn)))).softmax(1).cpu()


def short_class_name(name: str) -> str:
    """A class name without CUB's numeric prefix ("017.Cardinal" -> "Cardinal"), for titles."""
    head, dot, rest = str(name).partition(".")
    return rest if dot and head.isdigit() else str(name)


def normalize_stats(dls) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std of the Normalize in `dls`' batch transforms (ImageNet's if there is none)."""
    for t in getattr(getattr(dls, "after_batch", None), "fs", []):
        if type(t).__name__ == "Normalize":
            return plain_tensor(t.mean).flatten().cpu(), plain_tensor(t.std).flatten().cpu()
    return tuple(torch.tensor(v) for v in NORMALIZATIONS["imagenet"])


def display_image(x, dls=None) -> np.ndarray:
    """A normalised (3, H, W) or (1, 3, H, W) image as an (H, W, 3) array in [0, 1] for imshow."""
    mean, std = normalize_stats(dls)
    x = as_batch(x)[0].detach().float().cpu()
    return (x * std[:, None, None] + mean[:, None, None]).clamp(0, 1).permute(1, 2, 0).numpy()
