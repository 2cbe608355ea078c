"""Section 4.3 (Fig. 3) and beyond: what the gates pick, Grad-CAM with a faithfulness score, and part hits.

    pairs = confused_pairs(baseline, k=2, dl=dls.valid)        # the Baseline's most confused class pairs
    x = load_batch(dls, pairs[0].items)                       # the pair, as the models see it
    gates = gate_channels(api, x[:1], x[1:], k=5)             # top-5 channels of g1 and g2 (Eq. 2)
    fig = plot_gate_maps(api, baseline, x[:1], x[1:], gates=gates)
    cams = compare_gradcam(api, baseline, x, labels)          # Grad-CAM + ROAD for both models
    rates = hit_rates(api, baseline, items, read_parts(root), discriminative_parts(root), dls=dls)

Every model runs in eval mode on normalised batches from the test transforms (squish-resize to `resize`,
centre crop `size`); inputs go to the models as plain tensors, not fastai's typed subclasses.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["ConfusedPair", "most_confused", "confused_pairs", "load_batch", "feature_maps", "GateChannels",
           "gate_channels", "plot_gate_maps", "gradcam", "road_scores", "compare_gradcam", "plot_gradcam",
           "read_parts", "discriminative_parts", "crop_geometry", "cell_to_image", "image_to_crop", "score_peaks",
           "Scan", "scan_items", "crop_parts", "part_hit_rate", "hit_rates", "plot_hit_rates", "write_json",
           "ROAD_PERCENTILES"]

# ROADCombined's percentiles: removing 20/40/60/80 % of the pixels (most- and least-relevant first).
ROAD_PERCENTILES = (20, 40, 60, 80)


def _plain(t) -> torch.Tensor:
    """A plain torch.Tensor (fastai's TensorImage & co. dispatch every op through __torch_function__)."""
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else torch.as_tensor(t)


def _device(learn) -> torch.device:
    return next(learn.model.parameters()).device


def _batch(x) -> torch.Tensor:
    x = _plain(x)
    return x[None] if x.ndim == 3 else x


def _paths(dl) -> list[Path]:
    """The image paths of a DataLoader's items (a DataFrame with a `path` column, or a list of paths)."""
    items = dl.items
    if hasattr(items, "iloc"):
        return [Path(p) for p in items["path"]]
    return [Path(p) for p in items]


def _vocab(learn, dl=None) -> list[str]:
    vocab = getattr(dl, "vocab", None) if dl is not None else None
    if vocab is None:
        vocab = learn.dls.vocab
    return [str(v) for v in vocab]


def _short(name: str) -> str:
    """A class name without CUB's numeric prefix ("017.Cardinal" -> "Cardinal"), for titles."""
    head, dot, rest = str(name).partition(".")
    return rest if dot and head.isdigit() else str(name)


def _stats(dls):
    """The mean and std of the Normalize in `dls`' batch transforms (ImageNet's if there is none)."""
    from fastai.vision.core import imagenet_stats
    for t in getattr(getattr(dls, "after_batch", None), "fs", []):
        if type(t).__name__ == "Normalize":
            return _plain(t.mean).flatten().cpu(), _plain(t.std).flatten().cpu()
    return torch.tensor(imagenet_stats[0]), torch.tensor(imagenet_stats[1])


def _display(x, dls=None) -> np.ndarray:
    """A normalised (3, H, W) or (1, 3, H, W) image as an (H, W, 3) array in [0, 1] for imshow."""
    mean, std = _stats(dls)
    x = _batch(x)[0].detach().float().cpu()
    return (x * std[:, None, None] + mean[:, None, None]).clamp(0, 1).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- pairs from the Baseline's confusions

@dataclass
class ConfusedPair:
    """Two confusable classes and one test image of each (preferably one the Baseline gets wrong)."""
    class_a: str
    class_b: str
    n_confused: int        # test images of a predicted as b plus those of b predicted as a
    item_a: Path
    item_b: Path
    label_a: int
    label_b: int
    baseline_wrong_a: bool  # the Baseline predicts b for item_a
    baseline_wrong_b: bool  # the Baseline predicts a for item_b

    @property
    def items(self) -> tuple[Path, Path]:
        return self.item_a, self.item_b

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def most_confused(cm: np.ndarray, vocab, min_val: int = 1) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) off the diagonal of `cm`, largest first: fastai's
    `ClassificationInterpretation.most_confused`, from a confusion matrix already computed."""
    cm = np.array(cm)
    np.fill_diagonal(cm, 0)
    rows, cols = np.where(cm >= min_val)
    res = [(vocab[i], vocab[j], int(cm[i, j])) for i, j in zip(rows, cols)]
    return sorted(res, key=lambda r: r[2], reverse=True)


def confused_pairs(baseline_learn, k: int = 2, dl=None) -> list[ConfusedPair]:
    """The `k` class pairs the Baseline confuses most on the test split `dl` (default its validation loader).

    Pairs come in the order of fastai's `most_confused` (actual -> predicted counts, largest first),
    each unordered pair once; if fewer than `k` pairs are ever confused, the rest are the pairs with
    the most probability mass exchanged (mean p(b) over images of a plus mean p(a) over images of b).
    For each class the image is one the Baseline misclassifies as the other class (the most confident
    such error), else the image of that class with the highest probability of the other class.
    One inference pass; `most_confused` gives the same list as fastai's (tests/test_viz.py checks this).
    """
    dl = baseline_learn.dls.valid if dl is None else dl
    if not len(dl.items):
        raise ValueError("the DataLoader is empty; an exported Learner has no data, pass dl=get_dls(...).valid")
    with baseline_learn.no_bar():
        probs, targs = baseline_learn.get_preds(dl=dl)
    probs, targs = _plain(probs).float().cpu(), _plain(targs).long().cpu()
    vocab, paths = _vocab(baseline_learn, dl), _paths(dl)
    n = len(vocab)
    preds = probs.argmax(1)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (targs.numpy(), preds.numpy()), 1)
    index = {v: i for i, v in enumerate(vocab)}

    order, seen = [], set()
    for a, b, _ in most_confused(cm, vocab):
        key = frozenset((index[a], index[b]))
        if key not in seen:
            seen.add(key)
            order.append((index[a], index[b]))
    if len(order) < k:
        # mean probability of class j over the test images of class i
        mass = torch.stack([probs[targs == i].mean(0) if (targs == i).any() else torch.zeros(n) for i in range(n)])
        soft = (mass + mass.T).numpy()
        np.fill_diagonal(soft, -np.inf)
        for flat in np.argsort(-soft, axis=None, kind="stable"):
            i, j = divmod(int(flat), n)
            if len(order) >= k or not np.isfinite(soft[i, j]):
                break
            if frozenset((i, j)) not in seen:
                seen.add(frozenset((i, j)))
                order.append((i, j))

    def pick(a, b):
        """(index, wrong) of the image of class a to show against class b."""
        idx = torch.where(targs == a)[0]
        if not len(idx):
            raise ValueError(f"class {vocab[a]!r} has no test image")
        wrong = idx[preds[idx] == b]
        pool = wrong if len(wrong) else idx
        return int(pool[probs[pool, b].argmax()]), bool(len(wrong))

    out = []
    for a, b in order[:k]:
        (ia, wa), (ib, wb) = pick(a, b), pick(b, a)
        out.append(ConfusedPair(vocab[a], vocab[b], int(cm[a, b] + cm[b, a]), paths[ia], paths[ib], a, b, wa, wb))
    return out


# ---------------------------------------------------------------- gates and feature maps (Fig. 3)

def load_batch(dls, items, device=None) -> torch.Tensor:
    """Images (paths) through `dls`' test transforms as one normalised plain batch (B, 3, size, size)."""
    items = list(items)
    x = _plain(dls.test_dl(items, bs=len(items)).one_batch()[0])
    return x if device is None else x.to(device)


def feature_maps(learn, x) -> torch.Tensor:
    """The backbone's last-stage feature maps (B, C, h, w) of a normalised batch, in eval mode."""
    model = learn.model.eval()
    with torch.no_grad():
        return _plain(model.body(_batch(x).to(_device(learn))))


def _gates(api, f1, f2):
    """Eq. 2's (g1, g2) in float64: a sigmoid saturates at exactly 1.0 in float32 and its top-k would tie."""
    api = copy.deepcopy(api).double().eval()
    with torch.no_grad():
        g1, g2 = api.gates(_plain(f1).double(), _plain(f2).double())
    return g1, g2


class GateChannels(NamedTuple):
    channels1: torch.Tensor  # (k,) top-k channel ids of g1, largest gate first
    channels2: torch.Tensor  # (k,) the same for g2
    g1: torch.Tensor         # (D,) gate vector of image 1 (float64)
    g2: torch.Tensor
    fmaps1: torch.Tensor     # (C, h, w) last-stage feature maps of image 1 (body output, C = D)
    fmaps2: torch.Tensor


def gate_channels(api_learn, x1, x2, k: int = 5) -> GateChannels:
    """Run the pair through API-Net (eval mode): body -> pooled x1, x2 -> `model.api.gates` -> top-k of g1, g2.

    The gates are computed in float64 (see `_gates`), so channels are ranked even where float32 would
    saturate at 1.0. Returns the channel ids and both images' feature maps.
    """
    model = api_learn.model
    if not hasattr(model, "api"):
        raise ValueError("this Learner has no `model.api`: gate_channels needs an API-Net (api_learner(api=True))")
    fm = feature_maps(api_learn, torch.cat([_batch(x1), _batch(x2)]))
    with torch.no_grad():
        feats = model.pool(fm)
    g1, g2 = _gates(model.api, feats[:1], feats[1:])
    g1, g2 = g1[0].cpu(), g2[0].cpu()
    if not 0 < k <= len(g1):
        raise ValueError(f"k={k} must be between 1 and the feature dimension {len(g1)}")
    return GateChannels(g1.topk(k).indices, g2.topk(k).indices, g1, g2, fm[0].cpu(), fm[1].cpu())


def _predict(learn, x) -> torch.Tensor:
    model = learn.model.eval()
    with torch.no_grad():
        return _plain(model(_batch(x).to(_device(learn)))).softmax(1).cpu()


def _upsample(maps: torch.Tensor, hw) -> np.ndarray:
    """(n, h, w) maps -> (n, H, W), bilinear, each scaled to [0, 1] on its own."""
    up = F.interpolate(maps[:, None].float(), size=tuple(hw), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.flatten(1).min(1).values[:, None, None], up.flatten(1).max(1).values[:, None, None]
    return ((up - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def plot_gate_maps(api_learn, baseline_learn, x1, x2, k: int = 5, gates: GateChannels | None = None,
                   labels=None, vocab=None, dls=None, parts=None, alpha: float = 0.5, cmap: str = "jet"):
    """Fig. 3 for one pair: per image, a row of API-Net's feature maps at the top-k channels of its gate
    (g1 for image 1, g2 for image 2) and below it the Baseline's maps at the SAME channel ids.

    Each row starts with the image (titled with the true class and the model's prediction); each map is
    upsampled over the image and scaled to [0, 1] on its own, and its peak cell is marked with a white +.
    `labels`: the true class indices of the two images; `vocab`: class names (default the Learner's);
    `dls`: for the de-normalisation stats; `parts`: per image, an (m, 2) array of part locations in
    crop pixels (see `image_to_crop`), drawn as white circles. Returns the matplotlib Figure.
    """
    gates = gate_channels(api_learn, x1, x2, k) if gates is None else gates
    k = len(gates.channels1)
    x = torch.cat([_batch(x1), _batch(x2)])
    vocab = _vocab(api_learn) if vocab is None else [str(v) for v in vocab]
    base_maps = feature_maps(baseline_learn, x).cpu()
    preds = {"API-Net": _predict(api_learn, x), "Baseline": _predict(baseline_learn, x)}
    hw = x.shape[-2:]
    fig, axes = plt.subplots(4, k + 1, figsize=(1.9 * (k + 1), 8.2), squeeze=False)
    for i in range(2):
        channels = (gates.channels1, gates.channels2)[i]
        g = (gates.g1, gates.g2)[i]
        img = _display(x[i], dls)
        rows = (("API-Net", (gates.fmaps1, gates.fmaps2)[i]), ("Baseline", base_maps[i]))
        for r, (model_name, fm) in enumerate(rows):
            row = axes[2 * i + r]
            p = preds[model_name][i]
            pred = int(p.argmax())
            true = None if labels is None else int(labels[i])
            mark = "" if true is None else (" \u2713" if pred == true else " \u2717")
            head = f"image {i + 1}" + ("" if true is None else f": {_short(vocab[true])}")
            row[0].imshow(img)
            row[0].set_title(f"{head}\n{model_name}: {_short(vocab[pred])}{mark} {float(p[pred]):.2f}", fontsize=7)
            if parts is not None and parts[i] is not None and len(parts[i]):
                row[0].scatter(*np.asarray(parts[i], float).T, s=22, facecolors="none", edgecolors="white",
                               linewidths=1)
            maps = fm[channels]
            up = _upsample(maps, hw)
            h, w = maps.shape[-2:]
            for j, c in enumerate(channels.tolist()):
                ax = row[j + 1]
                ax.imshow(img)
                ax.imshow(up[j], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
                pr, pc = divmod(int(maps[j].flatten().argmax()), w)
                ax.plot((pc + 0.5) * hw[1] / w, (pr + 0.5) * hw[0] / h, "w+", ms=8, mew=1.5)
                gate = f"g{i + 1}={float(g[c]):.3f}" if r == 0 else "same channel"
                ax.set_title(f"{model_name} ch {c}\n{gate}", fontsize=7)
        for ax in axes[2 * i:2 * i + 2].ravel():
            ax.set_xticks([]), ax.set_yticks([])
    names = [_short(vocab[int(t)]) for t in labels] if labels is not None else ["image 1", "image 2"]
    fig.suptitle(f"{names[0]}  vs  {names[1]}: top-{k} channels of g1 (rows 1-2) and g2 (rows 3-4)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Grad-CAM and ROAD

def _last_stage(model) -> torch.nn.Module:
    """`model.body[-1]` (a torchvision backbone's last stage, or DenseNet's final ReLU), whose output is the
    body's; a timm body is not a Sequential, so the body itself."""
    return model.body[-1] if isinstance(model.body, torch.nn.Sequential) else model.body


def gradcam(learn, x, targets=None) -> np.ndarray:
    """Grad-CAM (pytorch-grad-cam) at the backbone's last stage (`model.body[-1]`) for class `targets`
    (indices; default the predicted class). Returns (B, H, W) maps in [0, 1] at the input's size.

    The input is handed over as a plain tensor that requires grad, so the gradient reaches the last
    stage even when the backbone's parameters are frozen.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model = learn.model.eval()
    x = _batch(x).detach().to(_device(learn)).clone().requires_grad_(True)
    tg = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with GradCAM(model=model, target_layers=[_last_stage(model)]) as cam:
        maps = cam(input_tensor=x, targets=tg)
    model.zero_grad(set_to_none=True)
    return np.clip(np.asarray(maps, dtype=np.float32), 0, 1)


def road_scores(learn, x, cams, targets, percentiles=ROAD_PERCENTILES, seed: int = 0) -> np.ndarray:
    """pytorch-grad-cam's `ROADCombined` per image: (LeRF - MoRF) / 2, averaged over `percentiles`.

    MoRF/LeRF: the change in the softmax probability of class `targets` after the most/least relevant
    pixels are replaced by ROAD's noisy linear imputation (so: probability units, comparable between
    models; higher = the map is more faithful to what the model uses). Grad-CAM's ReLU leaves many
    exactly tied pixels; ties are broken at random (1e-6 noise) so that each percentile removes that
    share of the pixels. The imputation noise and the tie-break use `seed`; the global RNG is untouched.
    Cost: one sparse solve per image and percentile, twice (about 3-7 s each at 448 px on a CPU).
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    model = learn.model.eval()
    x = _batch(x).detach().to(_device(learn))
    cams = np.asarray(cams, dtype=np.float32)
    cams = cams + 1e-6 * np.random.default_rng(seed).random(cams.shape, dtype=np.float32)
    metric = ROADCombined(percentiles=list(percentiles))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scores = metric(x, cams, [ClassifierOutputSoftmaxTarget(int(t)) for t in targets], model)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def compare_gradcam(api_learn, baseline_learn, x, targets, percentiles=ROAD_PERCENTILES, seed: int = 0) -> dict:
    """Grad-CAM of both models for the true classes `targets`, with predictions and ROAD scores.

    Returns {"api": {...}, "baseline": {...}}, each with "cams" (B, H, W), "preds" (B,), "probs"
    (B,) of the predicted class, "road" (B,) and "empty" (B,): the map is all zero (no positive evidence
    for the class at the last stage), so ROAD removes pixels at random and scores about 0.
    """
    out = {}
    for name, learn in (("api", api_learn), ("baseline", baseline_learn)):
        cams = gradcam(learn, x, targets)
        p = _predict(learn, x)
        out[name] = {"cams": cams, "preds": p.argmax(1).numpy(), "probs": p.max(1).values.numpy(),
                     "road": road_scores(learn, x, cams, targets, percentiles, seed),
                     "empty": cams.reshape(len(cams), -1).max(1) <= 1e-6}
    return out


def plot_gradcam(x, targets, result: dict, vocab, dls=None):
    """Rows = images; columns = image, Baseline Grad-CAM, API-Net Grad-CAM, titled with the
    prediction and the ROAD score. `result` is `compare_gradcam`'s. Returns the Figure."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    x = _batch(x)
    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n), squeeze=False)
    for i in range(n):
        img = _display(x[i], dls)
        t = int(targets[i])
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(f"true: {_short(vocab[t])}", fontsize=7)
        for j, (name, key) in enumerate((("Baseline", "baseline"), ("API-Net", "api")), start=1):
            r = result[key]
            pred = int(r["preds"][i])
            axes[i, j].imshow(show_cam_on_image(img.astype(np.float32), r["cams"][i], use_rgb=True))
            empty = " (empty map)" if "empty" in r and r["empty"][i] else ""
            axes[i, j].set_title(f"{name}: {_short(vocab[pred])} {'✓' if pred == t else '✗'}\n"
                                 f"ROAD {float(r['road'][i]):+.3f}{empty}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Grad-CAM (true class) at the last stage; ROAD = (LeRF - MoRF)/2, higher is more faithful",
                 fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- part annotations

def _pairs_file(file: Path) -> list[list[str]]:
    return [line.split(" ", 1) for line in file.read_text().splitlines() if line.strip()]


def read_parts(root) -> pd.DataFrame:
    """CUB's part annotations (`parts/part_locs.txt`, also written by `apikit.data.synthetic.make`) as a
    DataFrame: image_id, part_id, x, y, visible (bool), path (root/images/...), class_id.
    `df.attrs["parts"]` maps part ids to names (`parts/parts.txt`)."""
    root = Path(root)
    locs = pd.read_csv(root / "parts" / "part_locs.txt", sep=r"\s+", header=None,
                       names=["image_id", "part_id", "x", "y", "visible"])
    locs["visible"] = locs["visible"].astype(int).astype(bool)
    paths = {int(i): root / "images" / rel.strip() for i, rel in _pairs_file(root / "images.txt")}
    classes = {int(i): int(c) for i, c in _pairs_file(root / "image_class_labels.txt")}
    locs["path"] = locs["image_id"].map(paths)
    locs["class_id"] = locs["image_id"].map(classes)
    if locs["path"].isna().any():
        raise ValueError(f"{root / 'parts' / 'part_locs.txt'} names images that are not in images.txt")
    names = root / "parts" / "parts.txt"
    locs.attrs["parts"] = {int(i): n.strip() for i, n in _pairs_file(names)} if names.is_file() else {}
    locs.attrs["root"] = root
    return locs


def discriminative_parts(root) -> dict[int, list[int]] | None:
    """{class_id: part ids that set the class apart within its group} from a generated set's
    `synthetic.json`; None for a set without one (CUB: the discriminative parts are not annotated)."""
    meta = Path(root) / "synthetic.json"
    if not meta.is_file():
        return None
    return {int(c["class_id"]): [int(p) for p in c["discriminative_parts"]]
            for c in json.loads(meta.read_text())["classes"]}


# ---------------------------------------------------------------- geometry: feature-map cell <-> image pixel

def crop_geometry(dls) -> tuple[int, int]:
    """(size, resize) of `dls`' test transforms: squish-resize to `resize`, centre crop to `size`
    (apikit.data.transforms.item_tfms). Raises if the pipeline is something else."""
    from fastai.vision.augment import CropPad, RandomCrop, Resize, ResizeMethod
    dl = dls.valid if hasattr(dls, "valid") else dls
    fs = list(getattr(dl.after_item, "fs", []))
    resize = next((t for t in fs if isinstance(t, Resize)), None)
    crop = next((t for t in fs if isinstance(t, (RandomCrop, CropPad))), None)
    if any(type(t).__name__ == "CropBanner" for t in fs):
        raise ValueError("the pipeline crops a banner first; cell_to_image does not model it")
    if resize is None or crop is None or resize.method != ResizeMethod.Squish:
        raise ValueError("expected a squish Resize then a (centre) crop in the item transforms, as "
                         "apikit.data.get_dls builds; pass size= and resize= explicitly otherwise")
    if len(set(resize.size)) != 1 or len(set(crop.size)) != 1:
        raise ValueError(f"expected square sizes, got resize {tuple(resize.size)} and crop {tuple(crop.size)}")
    return int(crop.size[0]), int(resize.size[0])


def cell_to_image(row, col, fmap_hw, image_wh, size: int, resize: int):
    """Centre of feature-map cell (row, col) in ORIGINAL image pixels, and the cell's size there.

    The test transform squish-resizes a W x H image to resize x resize, then takes the centred
    size x size crop at offset (resize - size) // 2; an h x w feature map tiles that crop evenly (cells
    of size/w x size/h crop pixels). Returns (x, y, cell_w, cell_h); arguments broadcast (numpy).
    """
    h, w = fmap_hw
    W, H = np.asarray(image_wh, dtype=np.float64).T if np.ndim(image_wh) > 1 else map(float, image_wh)
    tl = (resize - size) // 2
    sx, sy = W / resize, H / resize
    cx = (np.asarray(col, dtype=np.float64) + 0.5) * size / w + tl
    cy = (np.asarray(row, dtype=np.float64) + 0.5) * size / h + tl
    return cx * sx, cy * sy, size / w * sx, size / h * sy


def image_to_crop(xy, image_wh, size: int, resize: int) -> np.ndarray:
    """Original-image (x, y) pixels -> pixels of the centred crop the model sees (may fall outside [0, size))."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    W, H = map(float, image_wh)
    tl = (resize - size) // 2
    return np.stack([xy[:, 0] * resize / W - tl, xy[:, 1] * resize / H - tl], 1)


def _in_crop(xy, image_wh, size, resize) -> np.ndarray:
    c = image_to_crop(xy, image_wh, size, resize)
    return ((c >= 0) & (c < size)).all(1)


def score_peaks(peaks, fmap_hw, image_wh, parts_xy, size: int, resize: int, radius: float = 1.0) -> np.ndarray:
    """Whether each peak cell hits a part: (n, k) bool.

    peaks: (n, k, 2) (row, col) of each map's peak cell; image_wh: (n, 2) original sizes; parts_xy: n
    arrays of (x, y) part locations in original pixels (the parts that count for that image).
    A peak hits if some part lies within `radius` cells of the peak cell's centre, measured in cell
    units along each axis (so radius 1.0 = one cell, whatever the squish did to the aspect ratio).
    """
    peaks = np.asarray(peaks).reshape(len(parts_xy), -1, 2)
    hits = np.zeros(peaks.shape[:2], dtype=bool)
    for i, xy in enumerate(parts_xy):
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if not len(xy):
            continue
        x, y, cw, ch = cell_to_image(peaks[i, :, 0], peaks[i, :, 1], fmap_hw, image_wh[i], size, resize)
        d = np.hypot((xy[None, :, 0] - x[:, None]) / cw, (xy[None, :, 1] - y[:, None]) / ch)
        hits[i] = (d <= radius).any(1)
    return hits


def _chance(fmap_hw, image_wh, xy, size, resize, radius) -> float:
    """The hit rate of a peak drawn uniformly from the h x w cells."""
    h, w = fmap_hw
    rc = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(1, -1, 2)
    return float(score_peaks(rc, fmap_hw, [image_wh], [xy], size, resize, radius).mean())


# ---------------------------------------------------------------- part hit rates

class Scan(NamedTuple):
    feats: torch.Tensor   # (n, C) pooled features = mean activation per channel
    peaks: torch.Tensor   # (n, C) flat index (row * w + col) of each channel's peak cell
    fmap_hw: tuple        # (h, w) of the feature maps


def scan_items(learn, items, dls=None, bs: int = 16) -> Scan:
    """One pass over `items` (image paths) with `dls`' test transforms: every channel's mean activation and
    peak cell, so that any choice of channels can be scored without running the model again."""
    dls = learn.dls if dls is None else dls
    model = learn.model.eval()
    feats, peaks, hw = [], [], None
    with torch.no_grad():
        for b in dls.test_dl(list(items), bs=bs):
            fm = _plain(model.body(_plain(b[0]).to(_device(learn))))
            hw = tuple(fm.shape[-2:])
            feats.append(_plain(model.pool(fm)).float().cpu())
            peaks.append(fm.flatten(2).argmax(2).int().cpu())
    return Scan(torch.cat(feats), torch.cat(peaks), hw)


def _targets(items, part_locs: pd.DataFrame, parts, size, resize):
    """Per item: its original (W, H) and the (x, y) of the parts that count (visible, inside the crop)."""
    locs = part_locs[part_locs["visible"]]
    by_path = {str(Path(p).resolve()): g for p, g in locs.groupby(locs["path"].map(str), sort=False)}
    sizes, xys = [], []
    for item in items:
        with Image.open(item) as im:
            wh = im.size
        g = by_path.get(str(Path(item).resolve()))
        if g is None:
            xy = np.zeros((0, 2))
        else:
            if parts is None:
                keep = g
            elif isinstance(parts, dict):
                keep = g[g["part_id"].isin(parts.get(int(g["class_id"].iloc[0]), []))]
            else:
                keep = g[g["part_id"].isin(list(parts))]
            xy = keep[["x", "y"]].to_numpy(dtype=np.float64)
            xy = xy[_in_crop(xy, wh, size, resize)] if len(xy) else xy
        sizes.append(wh)
        xys.append(xy)
    return np.asarray(sizes, dtype=np.float64), xys


def crop_parts(items, part_locs: pd.DataFrame, parts=None, size: int = 448, resize: int = 512) -> list[np.ndarray]:
    """Per item, the (x, y) of its counted parts (as in `part_hit_rate`) in pixels of the crop the model
    sees, e.g. for `plot_gate_maps(parts=...)`."""
    items = [Path(p) for p in items]
    wh, xys = _targets(items, part_locs, parts, size, resize)
    return [image_to_crop(xy, s, size, resize) for xy, s in zip(xys, wh)]


def part_hit_rate(learn, items, part_locs: pd.DataFrame, parts=None, k: int = 5, channels=None, *, dls=None,
                  radius: float = 1.0, size: int | None = None, resize: int | None = None, bs: int = 16,
                  scan: Scan | None = None) -> dict:
    """How often the peak of a chosen channel's feature map falls on a part.

    items: image paths; part_locs: `read_parts(root)`; parts: which parts count: None = every visible
    part, a list of part ids, or {class_id: part ids} (e.g. `discriminative_parts(root)`). Parts that
    are not visible or fall outside the centre crop do not count, and an image with none left is skipped.
    channels: (n_items, k) channel ids per image (e.g. the gate's top-k), or None = the model's own top-k
    channels by mean activation. A hit: see `score_peaks` (within `radius` feature-map cells).
    size, resize: the test crop geometry (default read from `dls`, see `crop_geometry`).
    Returns {"rate", "chance" (a uniformly random peak cell), "hits", "n_peaks", "n_images"}.
    """
    dls = learn.dls if dls is None else dls
    items = [Path(p) for p in items]
    if size is None or resize is None:
        size, resize = crop_geometry(dls)
    scan = scan_items(learn, items, dls, bs) if scan is None else scan
    if channels is None:
        channels = scan.feats.topk(k, dim=1).indices
    channels = torch.as_tensor(np.asarray(channels)).long().reshape(len(items), -1)
    flat = scan.peaks.gather(1, channels).long().numpy()
    h, w = scan.fmap_hw
    peaks = np.stack([flat // w, flat % w], -1)
    wh, xys = _targets(items, part_locs, parts, size, resize)
    used = np.array([len(xy) > 0 for xy in xys])
    hits = score_peaks(peaks, scan.fmap_hw, wh, xys, size, resize, radius)[used]
    chance = [_chance(scan.fmap_hw, wh[i], xys[i], size, resize, radius) for i in np.where(used)[0]]
    n = int(hits.size)
    nan = float("nan")
    return {"rate": float(hits.mean()) if n else nan, "chance": float(np.mean(chance)) if chance else nan,
            "hits": int(hits.sum()), "n_peaks": n, "n_images": int(used.sum())}


def hit_rates(api_learn, baseline_learn, items, part_locs: pd.DataFrame, parts=None, k: int = 5, *, dls=None,
              radius: float = 1.0, bs: int = 16) -> dict:
    """Part hit rates of API-Net vs the Baseline on `items` (test image paths with part annotations).

    Each image i is paired with the most similar test image of another class in API-Net's pooled
    features (Inter(S), as in training: `mine_pairs(..., intra=None)`), and its channels are the top-k of
    its gate g1 in that pair. Scored: "api_gate" (API-Net's maps at those channels), "baseline_gate"
    (the Baseline's maps at the same channel ids, as Fig. 3 compares them), "api_own" and
    "baseline_own" (each model's own top-k channels by mean activation), and "chance" (a random cell).
    Class labels come from `part_locs` (class_id). Returns {name: rate, ..., "n_images", "n_peaks", "detail"}.
    """
    from .pairs import mine_pairs
    dls = api_learn.dls if dls is None else dls
    items = [Path(p) for p in items]
    cls = part_locs.drop_duplicates("image_id").assign(key=lambda d: d["path"].map(lambda p: str(Path(p).resolve())))
    label_of = dict(zip(cls["key"], cls["class_id"]))
    missing = [p for p in items if str(p.resolve()) not in label_of]
    if missing:
        raise ValueError(f"{len(missing)} items have no part annotations, e.g. {missing[0]}")
    labels = torch.tensor([int(label_of[str(p.resolve())]) for p in items])
    if len(labels.unique()) < 2:
        raise ValueError("hit_rates pairs each image with one of another class: items must span 2+ classes")
    size, resize = crop_geometry(dls)
    api_scan = scan_items(api_learn, items, dls, bs)
    base_scan = scan_items(baseline_learn, items, dls, bs)
    idx1, idx2 = mine_pairs(api_scan.feats, labels, intra=None, inter="similar")
    dev = _device(api_learn)
    g1, _ = _gates(api_learn.model.api, api_scan.feats[idx1].to(dev), api_scan.feats[idx2].to(dev))
    gate_ch = torch.empty(len(items), k, dtype=torch.long)
    gate_ch[idx1] = g1.topk(k, dim=1).indices.cpu()
    common = dict(dls=dls, radius=radius, size=size, resize=resize)
    detail = {
        "api_gate": part_hit_rate(api_learn, items, part_locs, parts, k, gate_ch, scan=api_scan, **common),
        "baseline_gate": part_hit_rate(baseline_learn, items, part_locs, parts, k, gate_ch, scan=base_scan, **common),
        "api_own": part_hit_rate(api_learn, items, part_locs, parts, k, None, scan=api_scan, **common),
        "baseline_own": part_hit_rate(baseline_learn, items, part_locs, parts, k, None, scan=base_scan, **common),
    }
    out = {name: d["rate"] for name, d in detail.items()}
    first = detail["api_gate"]
    out.update(chance=first["chance"], n_images=first["n_images"], n_peaks=first["n_peaks"], k=k, radius=radius,
               fmap_hw=list(api_scan.fmap_hw), detail=detail)
    return out


def plot_hit_rates(rates: dict, title: str = "peak of a top channel's map on a part"):
    """Bar chart of `hit_rates`' four rates with the chance level as a dashed line. Returns the Figure."""
    names = [("api_gate", "API-Net\ngate top-k"), ("baseline_gate", "Baseline\nsame channels"),
             ("api_own", "API-Net\nown top-k"), ("baseline_own", "Baseline\nown top-k")]
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    vals = [rates[n] for n, _ in names]
    ax.bar([label for _, label in names], vals, color=["C0", "C1", "C0", "C1"], alpha=0.85)
    ax.axhline(rates["chance"], ls="--", c="k", lw=1, label=f"chance {rates['chance']:.2f}")
    for i, v in enumerate(vals):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("hit rate")
    ax.set_title(f"{title}\n{rates['n_images']} images, k={rates['k']}, radius={rates['radius']} cells", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def write_json(path, obj) -> Path:
    """Write `obj` as JSON: numpy and torch numbers become Python ones, NaN and infinities become null."""
    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (torch.Tensor, np.ndarray)):
            return clean(o.tolist())
        if isinstance(o, (np.integer, np.bool_)):
            return o.item()
        if isinstance(o, (float, np.floating)):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, Path):
            return str(o)
        return o
    path = Path(path)
    path.write_text(json.dumps(clean(obj), indent=1, allow_nan=False) + "\n")
    return path
