"""Fig. 3 (Section 4.3): the top-k channels of the gates g1, g2 (Eq. 2) and the feature maps behind them.

A trained gate often saturates: sigmoid(x_m * x_i) is exactly 1.0 in float32 for many channels, so
ranking by g_i would pick among ties arbitrarily. Channels are ranked by the gate's pre-sigmoid value
(its logit) instead, which orders the same way wherever the gate does not saturate.
"""
from __future__ import annotations

import copy
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..api import individual_gate, pair_gate, single_gate
from .batches import (as_batch, class_names, display_image, feature_maps, plain_tensor, predict_probs,
                      short_class_name)

__all__ = ["PreSigmoid", "PRE_SIGMOID", "gate_logits", "partner_gates", "gate_ties", "GateChannels", "gate_channels", "tie_note",
           "upsample_maps", "prediction_title", "map_peaks", "draw_map_row", "draw_map_strip",
           "plot_gate_maps"]


class PreSigmoid(NamedTuple):
    logits: Callable  # (x_m, x1, x2) -> (l1, l2) with g_i = sigmoid(l_i)
    ranking: str      # how viz.json names the ranking


# The argument of each gate's sigmoid, keyed by the gate function APIModule holds.
PRE_SIGMOID = {
    pair_gate: PreSigmoid(lambda xm, x1, x2: (xm * x1, xm * x2), "pre-sigmoid x_m * x_i (Eq. 2)"),
    single_gate: PreSigmoid(lambda xm, x1, x2: (xm, xm), "pre-sigmoid x_m (single gate, Table 3)"),
    individual_gate: PreSigmoid(lambda xm, x1, x2: (xm[0], xm[1]), "pre-sigmoid f_m(x_i) (individual, Table 2)"),
}


def gate_logits(api, x1, x2) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The pre-sigmoid values (l1, l2) of Eq. 2's gates, g_i = sigmoid(l_i), in float64, and the ranking's name."""
    if api.gate not in PRE_SIGMOID:
        raise ValueError(f"unknown gate function {getattr(api.gate, '__name__', api.gate)!r}: gate_logits knows "
                         f"{', '.join(f.__name__ for f in PRE_SIGMOID)}")
    pre = PRE_SIGMOID[api.gate]
    # float64 as before the ranking moved off the gates: sigmoid(l) of these logits matches the model's gates
    # to float32 precision, and near-equal logits still order.
    api = copy.deepcopy(api).double().eval()
    x1, x2 = plain_tensor(x1).double(), plain_tensor(x2).double()
    with torch.no_grad():
        l1, l2 = pre.logits(api.mutual(x1, x2), x1, x2)
    return l1, l2, pre.ranking


def partner_gates(api, feats, labels) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Each image as image 1 of a pair with its most similar image of another class in pooled features `feats` (n, D),
    as the pair miner chooses inter pairs in training (`mine_pairs(..., intra=None)`, Sec. 3): (partner (n,), the
    pre-sigmoid values of g1 (n, D), the ranking's name), on the CPU. An image without a partner gets -1 and zeros."""
    from ..pairs import mine_pairs
    feats = plain_tensor(feats).float().cpu()
    idx1, idx2 = mine_pairs(feats, torch.as_tensor(labels).cpu(), intra=None, inter="similar")
    dev = next(api.parameters()).device
    l1, _, ranking = gate_logits(api, feats[idx1].to(dev), feats[idx2].to(dev))
    partner = torch.full((len(feats),), -1, dtype=torch.long)
    partner[idx1] = idx2
    logits = torch.zeros(len(feats), feats.shape[1], dtype=l1.dtype)
    logits[idx1] = l1.cpu()
    return partner, logits, ranking


def gate_ties(g, k: int) -> int:
    """How many channels at or above the k-th largest float32 gate share their value with another (0: none)."""
    g = plain_tensor(g).float().flatten()
    top = g[g >= g.topk(k).values[-1]]
    _, counts = top.unique(return_counts=True)
    return int(counts[counts > 1].sum())


class GateChannels(NamedTuple):
    channels1: torch.Tensor  # (k,) top-k channel ids of g1 by its logit, largest first
    channels2: torch.Tensor  # (k,) the same for g2
    g1: torch.Tensor         # (D,) gate vector of image 1 (float64)
    g2: torch.Tensor
    fmaps1: torch.Tensor     # (C, h, w) last-stage feature maps of image 1 (body output, C = D)
    fmaps2: torch.Tensor
    logits1: torch.Tensor    # (D,) pre-sigmoid values of g1 (float64): the ranking
    logits2: torch.Tensor
    ranking: str             # which pre-sigmoid value ranks the channels
    ties1: int               # channels tied at the top of g1 in float32 (see gate_ties); 0: none
    ties2: int


def gate_channels(api_learn, x1, x2, k: int = 5) -> GateChannels:
    """Run the pair through API-Net (eval mode): body -> pooled x1, x2 -> gates -> top-k channels of g1, g2,
    ranked by the gates' pre-sigmoid values (see `gate_logits`). Returns them with both images' feature maps."""
    model = api_learn.model
    if not hasattr(model, "api"):
        raise ValueError("this Learner has no `model.api`: gate_channels needs an API-Net (api_learner(api=True))")
    fm = feature_maps(api_learn, torch.cat([as_batch(x1), as_batch(x2)]))
    with torch.no_grad():
        feats = plain_tensor(model.pool(fm))
    l1, l2, ranking = gate_logits(model.api, feats[:1], feats[1:])
    l1, l2 = l1[0].cpu(), l2[0].cpu()
    if not 0 < k <= len(l1):
        raise ValueError(f"k={k} must be between 1 and the feature dimension {len(l1)}")
    g1, g2 = torch.sigmoid(l1), torch.sigmoid(l2)
    return GateChannels(l1.topk(k).indices, l2.topk(k).indices, g1, g2, fm[0].cpu(), fm[1].cpu(), l1, l2, ranking,
                        gate_ties(torch.sigmoid(l1.float()), k), gate_ties(torch.sigmoid(l2.float()), k))


def tie_note(gates: GateChannels) -> str:
    """A sentence on tied top gates ("" when there are none), for figure captions and logs."""
    k = len(gates.channels1)
    tied = [f"g{i} has {n} channels tied at the top-{k} in float32 (saturated sigmoid)"
            for i, n in ((1, gates.ties1), (2, gates.ties2)) if n]
    return f"{'; '.join(tied)}: ranked by the {gates.ranking} instead" if tied else ""


def upsample_maps(maps: torch.Tensor, hw) -> np.ndarray:
    """(n, h, w) maps -> (n, H, W), bilinear, each scaled to [0, 1] on its own (min to max)."""
    up = F.interpolate(maps[:, None].float(), size=tuple(hw), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.flatten(1).min(1).values[:, None, None], up.flatten(1).max(1).values[:, None, None]
    return ((up - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def prediction_title(head: str, model_name: str, probs, true, vocab) -> str:
    """An image's title in Fig. 3: `head`, then the model's prediction, right or wrong, and its probability."""
    pred = int(probs.argmax())
    mark = "" if true is None else (" \u2713" if pred == true else " \u2717")
    return f"{head}\n{model_name}: {short_class_name(vocab[pred])}{mark} {float(probs[pred]):.2f}"


def map_peaks(maps: torch.Tensor) -> list:
    """(row, col) of each (h, w) map's peak cell, or None for a flat map (all one value, e.g. a ReLU channel all 0)."""
    w = maps.shape[-1]
    return [None if bool(m.max() <= m.min()) else divmod(int(m.flatten().argmax()), w) for m in maps]


def _peak_xy(peak, hw, fmap_hw) -> tuple[float, float]:
    """The centre of the peak cell (row, col) of an `fmap_hw` map, in pixels of the `hw` image it covers."""
    return (peak[1] + 0.5) * hw[1] / fmap_hw[1], (peak[0] + 0.5) * hw[0] / fmap_hw[0]


def _map_title(title: str, fmap, peak) -> str:
    """A map's title: `title`, then its maximum, or that it is flat (no peak)."""
    top = float(fmap.max())
    return f"{title}\n" + (f"flat: all {top:.2f}, no peak" if peak is None else f"max {top:.2f}")


def draw_map_strip(ax, img, head: str, maps: torch.Tensor, titles, parts=None, alpha: float = 0.5,
                   cmap: str = "jet", overlay: bool = True, after=()) -> list:
    """`draw_map_row` on one axes: the image, the maps (blended over it at `alpha` when `overlay`) and the images
    `after` as tiles of one picture, so that a redraw lays out two axes, not 2 (k + 1) (the explorer's figure).
    `after`: (title, (H, W, 3) image in [0, 1]) tiles at the end. Returns `map_peaks(maps)`."""
    from matplotlib import colormaps
    hw = img.shape[:2]
    gap = max(2, hw[1] // 12)
    up, peaks = upsample_maps(maps, hw), map_peaks(maps)
    coloured = colormaps[cmap](up)[..., :3]
    tiles = [img] + [(1 - alpha) * img + alpha * c if overlay else c for c in coloured] + [t for _, t in after]
    strip = np.ones((hw[0], len(tiles) * (hw[1] + gap) - gap, 3))
    for j, tile in enumerate(tiles):
        strip[:, j * (hw[1] + gap):j * (hw[1] + gap) + hw[1]] = tile
    ax.imshow(strip)
    ax.set_axis_off()
    names = [head] + [_map_title(t, m, pk) for t, m, pk in zip(titles, maps, peaks)] + [t for t, _ in after]
    for j, name in enumerate(names):
        ax.text(j * (hw[1] + gap) + hw[1] / 2, -3, name, ha="center", va="bottom", fontsize=8)
    xy = [(x + (j + 1) * (hw[1] + gap), y) for j, pk in enumerate(peaks) if pk is not None
          for x, y in [_peak_xy(pk, hw, maps.shape[-2:])]]
    if xy:
        ax.plot(*zip(*xy), "w+", ms=9, mew=1.8)
    if parts is not None and len(parts):
        ax.scatter(*np.asarray(parts, float).T, s=30, facecolors="none", edgecolors="white", linewidths=1.2)
    ax.set_xlim(-0.5, strip.shape[1] - 0.5), ax.set_ylim(hw[0] - 0.5, -0.5)
    return peaks


def draw_map_row(fig, row, img, head: str, maps: torch.Tensor, titles, parts=None, alpha: float = 0.5,
                 cmap: str = "jet", overlay: bool = True, extra: int = 0, colorbar: bool = True) -> list:
    """One row of Fig. 3 on the axes `row`: the image titled `head` (its `parts`, crop pixels, as white circles), then
    each of the (n, h, w) `maps` upsampled (over the image at opacity `alpha` when `overlay`), its peak marked with a
    white +, titled with its line of `titles` and its maximum, and a colour bar (unless the caller draws one); the last
    `extra` axes are left to the caller. Returns `map_peaks(maps)`."""
    hw = img.shape[:2]
    h, w = maps.shape[-2:]
    row[0].imshow(img)
    row[0].set_title(head, fontsize=9)
    if parts is not None and len(parts):
        row[0].scatter(*np.asarray(parts, float).T, s=30, facecolors="none", edgecolors="white", linewidths=1.2)
    up, peaks = upsample_maps(maps, hw), map_peaks(maps)
    for j, (title, peak) in enumerate(zip(titles, peaks)):
        ax = row[j + 1]
        if overlay:
            ax.imshow(img)
        ax.imshow(up[j], cmap=cmap, alpha=alpha if overlay else 1.0, vmin=0, vmax=1)
        if peak is not None:
            ax.plot(*_peak_xy(peak, hw, (h, w)), "w+", ms=9, mew=1.8)
        ax.set_title(_map_title(title, maps[j], peak), fontsize=9)
    for ax in row:
        ax.set_xticks([]), ax.set_yticks([])
    if colorbar:
        fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=list(row[:len(row) - extra]), shrink=0.9, pad=0.01,
                     label="map, min to max")
    return peaks


def plot_gate_maps(api_learn, baseline_learn, x1, x2, k: int = 5, gates: GateChannels | None = None,
                   labels=None, vocab=None, dls=None, parts=None, alpha: float = 0.5, cmap: str = "jet") -> Figure:
    """Fig. 3 for one pair: per image, a row of API-Net's feature maps at the top-k channels of its gate
    (g1 for image 1, g2 for image 2) and below it the Baseline's maps at the SAME channel ids.

    Each row starts with the image (titled with the true class and the model's prediction); each map is
    upsampled over the image and scaled to [0, 1] on its own (colour bar per row), its peak cell marked
    with a white +, its title giving the gate, its logit and the map's maximum activation.
    `labels`: the true class indices of the two images; `vocab`: class names (default the Learner's);
    `dls`: for the de-normalisation stats; `parts`: per image, an (m, 2) array of part locations in
    crop pixels (see `image_to_crop`), drawn as white circles. Returns a matplotlib Figure (not pyplot's).
    """
    gates = gate_channels(api_learn, x1, x2, k) if gates is None else gates
    k = len(gates.channels1)
    x = torch.cat([as_batch(x1), as_batch(x2)])
    vocab = class_names(api_learn) if vocab is None else [str(v) for v in vocab]
    base_maps = feature_maps(baseline_learn, x).cpu()
    preds = {"API-Net": predict_probs(api_learn, x), "Baseline": predict_probs(baseline_learn, x)}
    h, w = gates.fmaps1.shape[-2:]
    fig = Figure(figsize=(2.3 * (k + 1) + 1.0, 10.0), layout="constrained")
    axes = fig.subplots(4, k + 1, squeeze=False)
    for i in range(2):
        channels, g, logit = ((gates.channels1, gates.g1, gates.logits1), (gates.channels2, gates.g2, gates.logits2))[i]
        img = display_image(x[i], dls)
        rows = (("API-Net", (gates.fmaps1, gates.fmaps2)[i]), ("Baseline", base_maps[i]))
        for r, (model_name, fm) in enumerate(rows):
            true = None if labels is None else int(labels[i])
            head = f"image {i + 1}" + ("" if true is None else f": {short_class_name(vocab[true])}")
            titles = [f"{model_name} ch {c}\n" + (f"g{i + 1}={float(g[c]):.3f} logit {float(logit[c]):.2f}" if r == 0
                                                  else f"same channel as g{i + 1}") for c in channels.tolist()]
            draw_map_row(fig, axes[2 * i + r], img, prediction_title(head, model_name, preds[model_name][i], true, vocab),
                         fm[channels], titles, parts=None if parts is None else parts[i], alpha=alpha, cmap=cmap)
    names = [short_class_name(vocab[int(t)]) for t in labels] if labels is not None else ["image 1", "image 2"]
    caption = (f"{names[0]} vs {names[1]}: feature maps ({h}x{w}, upsampled) at the top-{k} channels of g1 "
               f"(rows 1-2) and g2 (rows 3-4), ranked by the {gates.ranking}")
    note = tie_note(gates)
    fig.suptitle(caption + (f"\n{note}" if note else ""), fontsize=10)
    return fig
