"""Part hits: how often the peak of a chosen channel's feature map falls on an annotated (discriminative) part,
for the gate's top-k channels of API-Net and the Baseline, against a uniformly random peak cell (chance)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from ..progress import progress
from ..paper import RECIPE
from ..stats import t_interval
from .batches import model_device, plain_tensor
from .gates import partner_gates
from .geometry import chance_rate, crop_geometry, image_to_crop, in_crop, score_peaks

__all__ = ["Scan", "scan_items", "part_targets", "crop_parts", "part_hit_rate", "hit_rates",
           "plot_hit_rates", "INTERVAL"]

INTERVAL = "95% Student t interval over images of the per-image hit rate (hits / k)"


class Scan(NamedTuple):
    feats: torch.Tensor   # (n, C) pooled features = mean activation per channel
    peaks: torch.Tensor   # (n, C) flat index (row * w + col) of each channel's peak cell
    fmap_hw: tuple        # (h, w) of the feature maps
    live: torch.Tensor    # (n, C) whether the map has a peak at all: a flat map (ReLU: all 0) has none


def scan_items(learn, items, dls=None, bs: int = 16, what: str = "feature maps", on_maps=None) -> Scan:
    """One pass over `items` (image paths) with `dls`' test transforms: every channel's mean activation and
    peak cell, so that any choice of channels can be scored without running the model again. `what` names the
    pass on its progress bar; `on_maps(fmaps, feats)`, if given, sees each batch's maps and pooled features."""
    dls = learn.dls if dls is None else dls
    model = learn.model.eval()
    feats, peaks, live, hw = [], [], [], None
    with torch.no_grad():
        items = list(items)
        for b in progress(dls.test_dl(items, bs=bs), what, "images", total=len(items), count=lambda b: len(b[0])):
            fm = plain_tensor(model.body(plain_tensor(b[0]).to(model_device(learn))))
            hw = tuple(fm.shape[-2:])
            feats.append(plain_tensor(model.pool(fm)).float().cpu())
            if on_maps is not None:
                on_maps(fm, feats[-1])
            flat = fm.flatten(2)
            peaks.append(flat.argmax(2).int().cpu())
            # argmax of a flat map is cell 0 whatever the image: scoring it would score a corner, not the model
            live.append((flat.amax(2) > flat.amin(2)).cpu())
    return Scan(torch.cat(feats), torch.cat(peaks), hw, torch.cat(live))


def part_targets(items, part_locs: pd.DataFrame, parts, size: int, resize: int):
    """Per item: its original (W, H) and the (x, y) of the parts that count (visible, inside the crop)."""
    locs = part_locs[part_locs["visible"]]
    names = locs["path"].map(str)
    resolved = {p: str(Path(p).resolve()) for p in names.unique()}
    wanted = {str(Path(item).resolve()) for item in items}
    # Only the items' rows are grouped: the explorer asks for one image, and grouping a set's every image costs it
    # a second.
    key = names.map(resolved)
    mine = key.isin(wanted)
    by_path = dict(iter(locs[mine].groupby(key[mine], sort=False)))
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
            xy = xy[in_crop(xy, wh, size, resize)] if len(xy) else xy
        sizes.append(wh)
        xys.append(xy)
    return np.asarray(sizes, dtype=np.float64), xys


def crop_parts(items, part_locs: pd.DataFrame, parts=None, size: int = RECIPE["size"],
               resize: int = RECIPE["resize"]) -> list[np.ndarray]:
    """Per item, the (x, y) of its counted parts (as in `part_hit_rate`) in pixels of the crop the model
    sees, e.g. for `plot_gate_maps(parts=...)`."""
    items = [Path(p) for p in items]
    wh, xys = part_targets(items, part_locs, parts, size, resize)
    return [image_to_crop(xy, s, size, resize) for xy, s in zip(xys, wh)]


def part_hit_rate(learn, items, part_locs: pd.DataFrame, parts=None, k: int = 5, channels=None, *, dls=None,
                  radius: float = 1.0, size: int | None = None, resize: int | None = None, bs: int = 16,
                  scan: Scan | None = None, targets=None) -> dict:
    """How often the peak of a chosen channel's feature map falls on a part.

    items: image paths; part_locs: `read_parts(root)`; parts: which parts count: None = every visible
    part, a list of part ids, or {class_id: part ids} (e.g. `discriminative_parts(root)`). Parts that
    are not visible or fall outside the centre crop do not count, and an image with none left is skipped.
    channels: (n_items, k) channel ids per image (e.g. the gate's top-k), or None = the model's own top-k
    channels by mean activation. A hit: see `score_peaks` (within `radius` feature-map cells). A flat map
    (one value everywhere: a ReLU channel that is all 0 on that image) has no peak: it is not scored but
    counted ("flat_maps"), and an image whose chosen maps are all flat is skipped.
    size, resize: the test crop geometry (default read from `dls`, see `crop_geometry`); `scan`, `targets`: the
    items' `scan_items` and `part_targets`, when already computed.
    Returns {"rate", "rate_ci95", "chance" (a uniformly random peak cell), "above_chance" (mean per-image
    rate minus chance), "above_chance_ci95", "per_image", "chance_per_image", "hits", "n_peaks", "flat_maps",
    "n_images"};
    the intervals are `INTERVAL`.
    """
    items = [Path(p) for p in items]
    if size is None or resize is None:
        size, resize = crop_geometry(learn.dls if dls is None else dls)
    scan = scan_items(learn, items, dls, bs) if scan is None else scan  # learn is needed only for these two
    if channels is None:
        channels = scan.feats.topk(k, dim=1).indices
    channels = torch.as_tensor(np.asarray(channels)).long().reshape(len(items), -1)
    cells = scan.peaks.gather(1, channels).long().numpy()
    alive = scan.live.gather(1, channels).numpy()
    h, w = scan.fmap_hw
    peaks = np.stack([cells // w, cells % w], -1)
    wh, xys = part_targets(items, part_locs, parts, size, resize) if targets is None else targets
    with_parts = np.array([len(xy) > 0 for xy in xys])
    used = with_parts & alive.any(1)
    hits = score_peaks(peaks, scan.fmap_hw, wh, xys, size, resize, radius)[used]
    alive_used = alive[used]
    chance = np.array([chance_rate(scan.fmap_hw, wh[i], xys[i], size, resize, radius) for i in np.where(used)[0]])
    per_image = (hits * alive_used).sum(1) / alive_used.sum(1) if hits.size else np.zeros(0)
    rate, rate_half, _ = t_interval(per_image)
    above, above_half, _ = t_interval(per_image - chance)
    rate_ci, above_ci = [rate - rate_half, rate + rate_half], [above - above_half, above + above_half]
    nan = float("nan")
    return {"rate": rate, "rate_ci95": rate_ci, "chance": float(chance.mean()) if len(chance) else nan,
            "above_chance": above, "above_chance_ci95": above_ci, "per_image": per_image.tolist(),
            "chance_per_image": chance.tolist(), "hits": int((hits * alive_used).sum()),
            "n_peaks": int(alive_used.sum()), "flat_maps": int((~alive[with_parts]).sum()), "n_images": int(used.sum())}


def hit_rates(api_learn, baseline_learn, items, part_locs: pd.DataFrame, parts=None, k: int = 5, *, dls=None,
              radius: float = 1.0, bs: int = 16) -> dict:
    """Part hit rates of API-Net vs the Baseline on `items` (test image paths with part annotations).

    Each image i is paired with the most similar test image of another class in API-Net's pooled
    features (Inter(S), as in training: `mine_pairs(..., intra=None)`), and its channels are the top-k of
    its gate g1 in that pair, ranked by the gate's pre-sigmoid value (`gate_logits`). Scored: "api_gate"
    (API-Net's maps at those channels), "baseline_gate" (the Baseline's maps at the same channel ids, as
    Fig. 3 compares them), "api_own" and "baseline_own" (each model's own top-k channels by mean
    activation), and "chance" (a random cell). Class labels come from `part_locs` (class_id).
    Returns {name: rate, name + "_ci95": [low, high], name + "_above_chance" and its "_ci95", ...,
    "chance", "interval", "ranking", "n_images", "n_peaks", "detail": {name: `part_hit_rate`'s dict}}.
    """
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
    api_scan = scan_items(api_learn, items, dls, bs, what="part hits, API-Net's feature maps")
    base_scan = scan_items(baseline_learn, items, dls, bs, what="part hits, the Baseline's feature maps")
    partner, l1, ranking = partner_gates(api_learn.model.api, api_scan.feats, labels)
    gate_ch = torch.empty(len(items), k, dtype=torch.long)
    gate_ch[partner >= 0] = l1[partner >= 0].topk(k, dim=1).indices.cpu()
    common = dict(dls=dls, radius=radius, size=size, resize=resize)
    detail = {
        "api_gate": part_hit_rate(api_learn, items, part_locs, parts, k, gate_ch, scan=api_scan, **common),
        "baseline_gate": part_hit_rate(baseline_learn, items, part_locs, parts, k, gate_ch, scan=base_scan, **common),
        "api_own": part_hit_rate(api_learn, items, part_locs, parts, k, None, scan=api_scan, **common),
        "baseline_own": part_hit_rate(baseline_learn, items, part_locs, parts, k, None, scan=base_scan, **common),
    }
    out = {}
    for name, d in detail.items():
        out.update({name: d["rate"], f"{name}_ci95": d["rate_ci95"], f"{name}_above_chance": d["above_chance"],
                    f"{name}_above_chance_ci95": d["above_chance_ci95"], f"{name}_n_peaks": d["n_peaks"],
                    f"{name}_flat_maps": d["flat_maps"], f"{name}_n_images": d["n_images"]})
    first = detail["api_gate"]
    out.update(chance=first["chance"], interval=INTERVAL, ranking=ranking, n_images=first["n_images"],
               n_peaks=first["n_peaks"], k=k, radius=radius, fmap_hw=list(api_scan.fmap_hw), detail=detail)
    return out


def plot_hit_rates(rates: dict, title: str = "peak of a top channel's map on a part") -> Figure:
    """Bar chart of `hit_rates`' four rates with their 95% intervals and the chance level as a dashed line."""
    names = [("api_gate", "API-Net\ngate top-k"), ("baseline_gate", "Baseline\nsame channels"),
             ("api_own", "API-Net\nown top-k"), ("baseline_own", "Baseline\nown top-k")]
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    vals = np.array([rates[n] for n, _ in names], dtype=np.float64)
    ci = np.array([rates.get(f"{n}_ci95", [np.nan, np.nan]) for n, _ in names], dtype=np.float64)
    err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
    flat = [rates.get(f"{n}_flat_maps", 0) for n, _ in names]
    labels = [label + (f"\n({f} flat maps\nnot scored)" if f else "") for (_, label), f in zip(names, flat)]
    ax.bar(labels, vals, color=["C0", "C1", "C0", "C1"], alpha=0.85,
           yerr=np.nan_to_num(err), capsize=4, error_kw=dict(lw=1))
    ax.axhline(rates["chance"], ls="--", c="k", lw=1, label=f"chance {rates['chance']:.2f}")
    for i, v in enumerate(vals):
        ax.text(i, 0.02, f"{v:.2f}", ha="center", va="bottom", fontsize=10, color="white")  # clear of the bars
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("hit rate", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.set_title(f"{title}\n{rates['n_images']} images, k={rates['k']}, radius={rates['radius']} cells; "
                 "bars: 95% t interval over images", fontsize=10)
    ax.legend(fontsize=9, loc="upper right")
    return fig
