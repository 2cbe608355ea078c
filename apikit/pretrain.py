"""`python -m apikit.pretrain`: the ImageNet of the generated world, and a backbone pretrained on it, cached.

The paper fine-tunes an ImageNet-pretrained backbone. The embedded demo has no download, so it makes its own:
a larger generated set of *other* species (`SET`: seed 1, where the demo's set is seed 0; more groups, more
images, smaller pictures, as ImageNet's 224 px are to the paper's 448 px), on which a plain torch loop trains
`RECIPE["arch"]` once. The full torchvision model's state dict is saved in the data root under
`pretrained/`, keyed by the generator's VERSION, this recipe's VERSION and a digest of SET and RECIPE, so that
a change of any of them trains a new one. The file loads as any user's checkpoint does:

    ckpt = pretrain()   # the cached file, trained first if it is missing, stale or damaged
    learn = api_learner(dls, arch="resnet18", pretrained=True, weights=ckpt)
    train(pretrained=True, weights=str(ckpt), ...)

A damaged or stale file is rebuilt (with a warning); `load_weights` itself refuses a damaged one with a clear error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from .data import data_root, read_split
from .data import synthetic
from .model import TORCHVISION_ARCHS
from .runs import atomic_write

__all__ = ["VERSION", "SET", "RECIPE", "FOLDER", "checkpoint_path", "is_current", "read_meta", "pretrain", "main"]

log = logging.getLogger(__name__)

VERSION = 1  # bump whenever the recipe below or its code changes, so that cached backbones are retrained
FOLDER = "pretrained"  # under data_root()
SET_FOLDER = "synthetic-pretrain"  # the pretraining set, under data_root()

# The pretraining set: 48 species in 12 groups, 60 images each, drawn with seed 1 (the demo's set is seed 0: its
# species are others), at 72 px where the demo's are larger (ImageNet at 224 px, fine-tuned at 448, in the paper).
SET = dict(n_classes=48, n_train=50, n_test=10, size=72, seed=1)
# Squish-resize to `resize`, random crop `size` with a flip (centre crop for the test split), ImageNet normalisation,
# as the fine-tuning pipeline does; AdamW with a one-cycle schedule, from scratch.
RECIPE = dict(arch="resnet18", resize=72, size=64, epochs=10, bs=64, lr=3e-3, wd=5e-2, label_smoothing=0.1, seed=0)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet statistics, as get_dls normalises
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _key(set_params: dict, recipe: dict) -> dict:
    """What a cached backbone must have been trained with to be reused."""
    return dict(generator=synthetic.GENERATOR, generator_version=synthetic.VERSION, recipe_version=VERSION,
                set=dict(set_params), recipe=dict(recipe))


def checkpoint_path(root=None, set_params=None, recipe=None) -> Path:
    """Where the backbone of this SET and RECIPE (and these versions) is cached: data_root()/pretrained/<name>.pth."""
    set_params, recipe = {**SET, **(set_params or {})}, {**RECIPE, **(recipe or {})}
    key = _key(set_params, recipe)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{recipe['arch']}-synthetic-g{synthetic.VERSION}-r{VERSION}-{digest}.pth"
    return (data_root() if root is None else Path(root).expanduser()) / FOLDER / name


def read_meta(file) -> dict:
    """The metadata saved with a cached backbone; a ValueError if the file cannot be read as one."""
    try:
        ckpt = torch.load(Path(file), map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        if not isinstance(meta, dict) or not isinstance(ckpt["state_dict"], dict):
            raise TypeError("no metadata and state dict")
    except Exception as e:
        raise ValueError(f"{file} is not a readable apikit pretraining checkpoint ({type(e).__name__}: {e})") from None
    return meta


def is_current(file, set_params=None, recipe=None) -> bool:
    """Whether `file` holds a readable backbone trained with this SET, RECIPE and these versions."""
    try:
        meta = read_meta(file)
    except (ValueError, OSError):
        return False
    return meta.get("key") == _key({**SET, **(set_params or {})}, {**RECIPE, **(recipe or {})})


def _load(df, resize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of `df`, squish-resized to `resize`, as one uint8 tensor (N, 3, H, W), and the labels."""
    xs = np.stack([np.asarray(Image.open(p).convert("RGB").resize((resize, resize), Image.BILINEAR)) for p in df.path])
    labels = torch.tensor(df.label.to_numpy(), dtype=torch.long)
    return torch.from_numpy(np.ascontiguousarray(xs)).permute(0, 3, 1, 2).contiguous(), labels


def _batch(x: torch.Tensor, size: int, train: bool, gen: torch.Generator) -> torch.Tensor:
    """Crop `size` (random with a flip in training, centred otherwise) and normalise a uint8 batch."""
    h = x.shape[-1]
    if train:
        i, j = torch.randint(0, h - size + 1, (2,), generator=gen).tolist()
        x = x[..., i:i + size, j:j + size]
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    else:
        o = (h - size) // 2
        x = x[..., o:o + size, o:o + size]
    return (x.float() / 255 - MEAN) / STD


def _accuracy(model, x, y, size, bs) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(_batch(x[i:i + bs], size, False, None)).argmax(1) == y[i:i + bs]).sum())
                   for i in range(0, len(x), bs))
    return 100.0 * hits / max(1, len(x))


def _fit(model, x, y, recipe: dict, say) -> None:
    """AdamW with a one-cycle learning rate over `epochs`, label-smoothed cross-entropy, shuffled batches."""
    gen = torch.Generator().manual_seed(recipe["seed"])
    steps = recipe["epochs"] * math.ceil(len(x) / recipe["bs"])
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["wd"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.25)
    for epoch in range(recipe["epochs"]):
        model.train()
        t0, total = time.time(), 0.0
        for idx in torch.randperm(len(x), generator=gen).split(recipe["bs"]):
            loss = F.cross_entropy(model(_batch(x[idx], recipe["size"], True, gen)), y[idx],
                                   label_smoothing=recipe["label_smoothing"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        say(f"  epoch {epoch + 1}/{recipe['epochs']}: loss {total / len(x):.3f} ({time.time() - t0:.0f} s)")


def _train(file: Path, root: Path, set_params: dict, recipe: dict, say) -> None:
    t0 = time.time()
    df = read_split("synthetic", root / SET_FOLDER, synthetic=set_params)  # drawn on first use
    t_draw = time.time() - t0
    x, y = _load(df, recipe["resize"])
    valid = torch.tensor(df.is_valid.to_numpy())
    say(f"pretraining {recipe['arch']} on {len(df.attrs['classes'])} generated species, {int((~valid).sum())} images "
        f"at {recipe['size']} px ({root / SET_FOLDER}; drawn/read in {t_draw:.0f} s)")
    torch.manual_seed(recipe["seed"])
    model = torchvision.models.get_model(recipe["arch"], weights=None, num_classes=len(df.attrs["classes"]))
    _fit(model, x[~valid], y[~valid], recipe, say)
    top1 = _accuracy(model, x[valid], y[valid], recipe["size"], 2 * recipe["bs"]) if valid.any() else float("nan")
    meta = dict(key=_key(set_params, recipe), top1=top1, n_train=int((~valid).sum()), n_test=int(valid.sum()),
                seconds=round(time.time() - t0, 1), torch=str(torch.__version__))
    file.parent.mkdir(parents=True, exist_ok=True)
    # Written beside it and renamed: the cache never holds a half-written file.
    atomic_write(file, lambda tmp: torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp))
    say(f"pretrained: top-1 {top1:.1f}% on the set's {meta['n_test']} test images, {meta['seconds']:.0f} s -> {file}")


def pretrain(root=None, rebuild: bool = False, set_params: dict | None = None, recipe: dict | None = None,
             verbose: bool = True) -> Path:
    """The cached backbone checkpoint for `pretrained=True, weights=<it>`: trained first if missing, stale or damaged.

    root: the data root (default `data_root()`); the set goes to root/synthetic-pretrain, the file to root/pretrained.
    rebuild: train again even if a current file is there.
    set_params, recipe: overrides of SET and RECIPE (they change the cache key, so they get their own file).
    """
    set_params, recipe = {**SET, **(set_params or {})}, {**RECIPE, **(recipe or {})}
    if recipe["arch"] not in TORCHVISION_ARCHS:
        raise ValueError(f"arch={recipe['arch']!r}: pretraining builds a torchvision model, one of "
                         f"{', '.join(TORCHVISION_ARCHS)}.")
    root = data_root() if root is None else Path(root).expanduser()
    file = checkpoint_path(root, set_params, recipe)
    say = print if verbose else log.info
    if file.exists() and not rebuild:
        if is_current(file, set_params, recipe):
            return file
        log.warning("%s is damaged or was trained with other settings; pretraining it again", file)
        say(f"{file} is damaged or stale: pretraining again")
    _train(file, root, set_params, recipe, say)
    return file


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="data root (default: $APIKIT_DATA or ~/.cache/apikit/data)")
    ap.add_argument("--rebuild", action="store_true", help="train again even if the cached backbone is current")
    args = ap.parse_args(argv)
    file = pretrain(args.root, rebuild=args.rebuild)
    meta = read_meta(file)
    print(f"{file}\n  top-1 {meta['top1']:.1f}% on its test split; trained in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
