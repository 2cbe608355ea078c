"""The channel atlas: what one last-stage channel looks at over the whole test split. The test images on which it
fires most (its map over each), its mean gate value per class (API-Net's g1, Eq. 2, each image paired as in training)
and how often its peak lands on a part, against chance.

One pass per run over the test split gives every channel's statistics (`channel_stats`); they are cached beside the
run (`<run>/visualize/channels.npz`), keyed by its model fingerprint and the images, and built again when either
changes. Thumbnails are the crops the model sees (`crop_images`, the test transform), read when drawn.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from ..figure import new_figure
from ..runs import atomic_write
from .batches import short_class_name
from .gates import partner_gates, upsample_maps
from .hits import INTERVAL, Scan, part_hit_rate, part_targets, scan_items

__all__ = ["CACHE", "TOP", "Channels", "cache_path", "cache_key", "read_channels", "channel_stats", "class_means",
           "channel_hits", "crop_images", "plot_atlas", "cached_atlas"]

CACHE = Path("visualize") / "channels.npz"  # beside the run, with visualize.ipynb's figures
TOP = 12  # thumbnails per channel: the images on which it fires most


class Channels(NamedTuple):
    """A run's channel statistics over `items` (see the module's docstring)."""
    items: list            # test image paths, in the test split's order
    labels: np.ndarray     # (n,) class indices
    scan: Scan             # every channel's mean activation, peak cell and whether its map is flat, per image
    top: np.ndarray        # (C, TOP) indices into items, by the channel's mean activation, largest first
    top_maps: np.ndarray   # (C, TOP, h, w) float16: those images' maps at the channel
    gates: np.ndarray      # (n, C) g1 of each image in its inter pair (API-Net); (0, C) for the Baseline
    vocab: list            # class names
    key: str               # `cache_key`: the model fingerprint, the images and the crop they were seen at


def cache_path(run_dir) -> Path:
    """Where a run's channel statistics are cached."""
    return Path(run_dir) / CACHE


def cache_key(fingerprint: str, items, size: int, resize: int) -> str:
    """What the cached statistics depend on: the model (its fingerprint), the images, the crop."""
    text = "\n".join([str(fingerprint), f"{size}/{resize}", *map(str, items)])
    return hashlib.sha256(text.encode()).hexdigest()


def read_channels(path, key: str | None = None) -> Channels | None:
    """The cached statistics at `path`, or None when there are none, they cannot be read, or their key is not `key`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                return None
            scan = Scan(torch.from_numpy(z["feats"]), torch.from_numpy(z["peaks"]), tuple(int(v) for v in z["fmap_hw"]),
                        torch.from_numpy(z["live"]))
            return Channels([Path(p) for p in z["items"]], z["labels"], scan, z["top"], z["top_maps"], z["gates"],
                            [str(v) for v in z["vocab"]], str(z["key"]))
    except (OSError, KeyError, ValueError):  # missing, half-written by an older apikit, or not an npz
        return None


class _TopMaps:
    """The `TOP` images with the largest mean activation of each channel, and their maps, kept batch by batch."""

    def __init__(self):
        self.seen, self.values, self.index, self.maps = 0, None, None, None

    def __call__(self, fmaps, feats):
        fm = fmaps.float().cpu().transpose(0, 1)  # (C, B, h, w)
        idx = torch.arange(self.seen, self.seen + len(feats)).expand(fm.shape[0], -1)
        self.seen += len(feats)
        values = feats.T if self.values is None else torch.cat([self.values, feats.T], 1)
        index = idx if self.index is None else torch.cat([self.index, idx], 1)
        maps = fm if self.maps is None else torch.cat([self.maps, fm], 1)
        keep = values.topk(min(TOP, values.shape[1]), dim=1).indices
        self.values, self.index = values.gather(1, keep), index.gather(1, keep)
        self.maps = maps.gather(1, keep[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))


def channel_stats(learn, items, labels, vocab, dls, run_dir, fingerprint: str, size: int, resize: int, bs: int = 16,
                  what: str = "channel statistics", done=None) -> Channels:
    """The statistics of every channel of `learn` over `items` (class indices `labels`): read from the run's cache
    when its key matches, else computed in one pass (a progress bar; `done(n_images, total)` also hears of each batch) and
    cached. API-Net's include its gates."""
    items = [Path(p) for p in items]
    key = cache_key(fingerprint, items, size, resize)
    path = cache_path(run_dir)
    found = read_channels(path, key)
    if found is not None:
        return found
    top = _TopMaps()

    def on_maps(fmaps, feats):
        top(fmaps, feats)
        if done is not None:
            done(top.seen, len(items))
    scan = scan_items(learn, items, dls, bs, what=what, on_maps=on_maps)
    labels = np.asarray(labels, dtype=np.int64)
    api = getattr(learn.model, "api", None)
    if api is not None and len(np.unique(labels)) > 1:
        _, logits, _ = partner_gates(api, scan.feats, torch.as_tensor(labels))
        gates = torch.sigmoid(logits).float().numpy()
    else:
        gates = np.zeros((0, scan.feats.shape[1]), dtype=np.float32)
    found = Channels(items, labels, scan, top.index.numpy(), top.maps.half().numpy(), gates, list(vocab), key)
    buf = io.BytesIO()
    np.savez_compressed(buf, items=np.array([str(p) for p in items]), labels=labels, feats=scan.feats.numpy(),
                        peaks=scan.peaks.numpy(), live=scan.live.numpy(), fmap_hw=np.array(scan.fmap_hw),
                        top=found.top, top_maps=found.top_maps, gates=gates, vocab=np.array(found.vocab),
                        key=np.array(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return found


def class_means(ch: Channels, channel: int, n_classes: int) -> tuple[np.ndarray, str]:
    """Per class, the channel's mean gate value g1 (API-Net) or, for the Baseline (no gate), its mean activation;
    and which of the two it is."""
    gated = len(ch.gates) > 0
    values = ch.gates[:, channel] if gated else ch.scan.feats[:, channel].numpy()
    sums = np.bincount(ch.labels, weights=values, minlength=n_classes)
    counts = np.bincount(ch.labels, minlength=n_classes)
    return sums / np.maximum(counts, 1), "mean gate g1" if gated else "mean activation"


def channel_hits(ch: Channels, channel: int, part_locs, parts, size: int, resize: int, radius: float = 1.0,
                 targets=None) -> dict:
    """How often the channel's peak lands on a part over the images, against chance: `part_hit_rate`'s dict
    (its interval: `INTERVAL`), from the cached scan; `targets`: `part_targets` of the items, when computed."""
    channels = np.full((len(ch.items), 1), int(channel))
    return part_hit_rate(None, ch.items, part_locs, parts, channels=channels, radius=radius, size=size,
                         resize=resize, scan=ch.scan, targets=targets)


def crop_images(items, size: int, resize: int) -> tuple[list, list]:
    """The crops the model sees of `items` (`apikit.data.transforms`' test transform) as (H, W, 3) arrays in [0, 1];
    an image that cannot be read is None, and named in the notes returned beside them."""
    from fastai.vision.core import PILImage
    from fasttransform import Pipeline

    from ..data.transforms import item_tfms
    pipe = Pipeline(item_tfms(size, resize), split_idx=1)  # split_idx 1: the test transform (centre crop, no flip)
    images, notes = [], []
    for item in items:
        try:
            images.append(np.asarray(pipe(PILImage.create(item)), dtype=np.float32) / 255)
        except Exception as e:  # noqa: BLE001 -- any decoder error: the image is skipped and said so
            images.append(None)
            notes.append(f"{Path(item).name} cannot be read ({type(e).__name__}): skipped")
    return images, notes


def _hits_line(hits: dict | None) -> str:
    """'peak on a part 41.7% [30.1, 53.2] vs chance 25.0% (n=12)', or why there is none."""
    if hits is None:
        return "no part annotations"
    if not hits["n_images"]:
        return "no image with a part and a peak"
    lo, hi = hits["rate_ci95"]
    return (f"peak on a part {100 * hits['rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] vs chance "
            f"{100 * hits['chance']:.1f}% (n={hits['n_images']})")


def plot_atlas(channel: int, blocks, size: int, resize: int, n: int = TOP, alpha: float = 0.5, cmap: str = "jet"):
    """The atlas of `channel`: per model in `blocks` ((name, Channels, hits or None), ...), the `n` test images on
    which the channel fires most with its map over each (+: the peak), and its per-class means beside them.
    Returns (Figure, notes): notes name images that could not be read (skipped)."""
    cols = min(n, 6)
    rows = -(-n // cols)
    fig = new_figure(2.0 * cols + 4.5, 2.3 * rows * len(blocks) + 0.9, layout="constrained")
    grid = fig.add_gridspec(rows * len(blocks), cols + 2)
    notes = []
    for b, (name, ch, hits) in enumerate(blocks):
        vocab = ch.vocab
        order = ch.top[channel][:n]
        images, bad = crop_images([ch.items[i] for i in order], size, resize)
        notes += bad
        shown = [(i, img, m) for i, img, m in zip(order, images, ch.top_maps[channel][:n]) if img is not None]
        up = upsample_maps(torch.from_numpy(np.stack([m for *_, m in shown]).astype(np.float32)), (size, size)) \
            if shown else []
        h, w = ch.scan.fmap_hw
        for j in range(rows * cols):
            ax = fig.add_subplot(grid[b * rows + j // cols, j % cols])
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(shown):
                ax.axis("off")
                continue
            i, img, m = shown[j]
            ax.imshow(img)
            ax.imshow(up[j], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            pr, pc = divmod(int(np.argmax(m)), w)
            if m.max() > m.min():
                ax.plot((pc + 0.5) * size / w, (pr + 0.5) * size / h, "w+", ms=8, mew=1.6)
            ax.set_title(f"{short_class_name(vocab[int(ch.labels[i])])}\nmean {float(ch.scan.feats[i, channel]):.2f}",
                         fontsize=8)
        bar = fig.add_subplot(grid[b * rows:(b + 1) * rows, cols:])
        means, label = class_means(ch, channel, len(vocab))
        shown_classes = np.argsort(-means, kind="stable")[:20]  # many classes (CUB's 200): the 20 highest
        bar.barh([short_class_name(vocab[c]) for c in shown_classes][::-1], means[shown_classes][::-1])
        bar.tick_params(labelsize=8)
        bar.set_xlabel(f"{label} per class", fontsize=9)
        bar.set_title(f"{name}, channel {channel}: top {len(shown)} test images by mean activation\n"
                      f"{_hits_line(hits)}", fontsize=9, loc="right")
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=fig.axes, shrink=0.5, pad=0.01, label="map, min to max")
    fig.suptitle(f"Channel {channel}: where it fires over the test split; intervals: {INTERVAL}", fontsize=10)
    return fig, notes


def cached_atlas(api_run, baseline_run, channel: int, size: int, resize: int, root=None):
    """The atlas of `channel` from the two runs' cached statistics alone (no network runs), with part hits when the
    data set at `root` has part annotations: (Figure, notes), or None unless both caches are there and current (their
    runs' recorded model, the crop `size`/`resize`)."""
    from ..record import RunRecord
    blocks = []
    for name, run in (("API-Net", api_run), ("Baseline", baseline_run)):
        found = read_channels(cache_path(run))
        if found is None or found.key != cache_key(RunRecord.read(run).fingerprint, found.items, size, resize):
            return None
        blocks.append([name, found, None])
    if root is not None and (Path(root) / "parts" / "part_locs.txt").is_file():
        from ..data.parts import discriminative_parts, read_parts
        part_locs, parts = read_parts(root), discriminative_parts(root)
        targets = part_targets(blocks[0][1].items, part_locs, parts, size, resize)
        for block in blocks:
            block[2] = channel_hits(block[1], channel, part_locs, parts, size, resize, targets=targets)
    return plot_atlas(channel, blocks, size, resize)
