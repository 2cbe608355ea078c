"""The gate explorer (explore.ipynb's logic): Fig. 3 for any confused class pair, image pair, gate, view and k, and the
channel atlas, redrawn without running the networks again.

    ex = Explorer("reports/runs/demo/api-False/seed-0", "reports/runs/demo/api-net/seed-0")
    ex.choose(pair=3, gate="g2", view="other", k=8)
    fig = ex.figure()          # API-Net's maps at the gate's top-k channels, the Baseline's at the same ids below
    ex.save()                  # -> <api_run>/visualize/explore-....png
    fig, notes = ex.atlas(ex.view().channels[0])

Each image goes through both networks once (`forward`, kept); a gate is Eq. 2 on the kept pooled features, so a
change of k, gate, view, ranking or overlay only draws. The widget around it is `apikit.viz.widgets`.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from ..notebook_errors import OneLineError
from ..data.parts import discriminative_parts, read_parts
from ..figure import DPI, new_figure, save_figure
from ..runs import shown
from .batches import display_image, feature_maps, item_paths, load_batch, model_device, plain_tensor, short_class_name
from .channels import channel_hits, channel_stats, plot_atlas
from .confused import pairs_from_probs
from .gates import draw_map_strip, gate_logits, gate_ties, map_peaks, prediction_title
from .hits import crop_parts, part_targets
from .load import Refused, open_runs, small_maps
from .run import VISUALIZE_DEFAULTS

__all__ = ["GATES", "VIEWS", "RANKINGS", "MAX_K", "Unreadable", "Forward", "View", "Explorer"]

GATES = ("g1", "g2")           # g1: image 1's gate, g2: image 2's (Eq. 2)
VIEWS = ("self", "other")      # self: the gate's own image (x_i^self, Eq. 3); other: the other image (x_j^other, Eq. 4-5)
RANKINGS = {"pre-sigmoid": "the gate's pre-sigmoid value, as Fig. 3 (no ties where the sigmoid saturates)",
            "activation": "the gate's value g (saturated gates tie; ties in channel order)"}
MAX_K = 16
SIMILAR = "most similar"       # image 2: image 1's most similar image of the other class, as the pair miner chooses


class Unreadable(OneLineError, ValueError):
    """An image that cannot be loaded: it is skipped, and the choice before it stays."""


class Forward(NamedTuple):
    """One image through both networks, kept."""
    x: torch.Tensor        # (1, 3, size, size), normalised
    image: np.ndarray      # (size, size, 3) in [0, 1], as shown
    feats: torch.Tensor    # (C,) API-Net's pooled features x_i
    maps: dict             # {"API-Net", "Baseline"}: (C, h, w) last-stage feature maps
    probs: dict            # {"API-Net", "Baseline"}: (n_classes,) softmax


class View(NamedTuple):
    """What the figure shows: the image, the gate's top-k channels and their values, each row's peaks."""
    item: Path
    label: int
    gate: str
    view: str
    channels: list         # channel ids, ranked
    gates: list            # the gate's values g at them
    logits: list           # its pre-sigmoid values
    peaks: dict            # {"API-Net", "Baseline"}: per channel (row, col) of the map's peak, None for a flat map
    ties: int              # channels tied at the top in float32 (`gate_ties`)


class Explorer:
    """Two runs of one setting, their confused class pairs, and the current choice (see the module's docstring)."""

    def __init__(self, baseline_run=VISUALIZE_DEFAULTS["baseline_run"], api_run=VISUALIZE_DEFAULTS["api_run"],
                 n_pairs: int = 50, done=None, **options):
        """`options`: visualize.ipynb's data and crop parameters (dataset, data_path, synthetic, size, resize, bs);
        `done(n_images, total)` hears of the Baseline's statistics pass, the first time (`channels`)."""
        self.opened = open_runs(baseline_run, api_run, **options)
        o = self.opened
        index = {v: i for i, v in enumerate(o.vocab)}
        self.items, self.labels = item_paths(o.dls.valid), [index[str(c)] for c in o.dls.valid.items["class_name"]]
        self.forwards, self._kept, self._cams, self._parts, self._stats, self._targets = 0, {}, {}, {}, {}, None
        hw = self.forward(self.items[0]).maps["API-Net"].shape[-2:]
        if small_maps(hw, o.size):
            raise Refused(small_maps(hw, o.size))
        n = len(o.vocab)
        # The Baseline's predictions from its channel statistics (built once, cached beside it): its pooled features
        # through its classifier, in eval mode, as `confused_pairs` would predict them in another pass.
        feats = self.channels("Baseline", done).scan.feats.to(model_device(o.baseline))
        with torch.no_grad():
            probs = plain_tensor(o.baseline.model.eval().classify(feats)).softmax(1)
        self.pairs = pairs_from_probs(probs, self.labels, o.vocab, self.items, k=min(n_pairs, n * (n - 1) // 2))
        self.part_locs = read_parts(o.root) if (o.root / "parts" / "part_locs.txt").is_file() else None
        self.parts = discriminative_parts(o.root)  # {class_id: part ids} on the generated set; None: every visible part
        self.state = dict(pair=0, image1=self.pairs[0].item_a, image2=self.pairs[0].item_b, gate="g1", view="self",
                          k=5, ranking="pre-sigmoid", overlay=True, alpha=0.5, gradcam=False)

    # --- what can be chosen -------------------------------------------------------------------------------------
    def pair_options(self) -> list[tuple[str, int]]:
        """The class pairs as a dropdown lists them, by how often the Baseline confuses them."""
        return [(f"{short_class_name(p.class_a)} vs {short_class_name(p.class_b)} ({p.n_confused} confused)", i)
                for i, p in enumerate(self.pairs)]

    def images_of(self, label: int) -> list[Path]:
        """The test images of class `label`."""
        return [p for p, y in zip(self.items, self.labels) if y == label]

    def choose(self, **changes) -> None:
        """Change the choice; a new class pair starts from its pair of images (the Baseline's confused ones)."""
        unknown = set(changes) - set(self.state)
        if unknown:
            raise Refused(f"nothing to choose named {', '.join(sorted(unknown))}: choose {', '.join(self.state)}")
        new = {**self.state, **changes}
        if "pair" in changes:
            if not (isinstance(new["pair"], int) and 0 <= new["pair"] < len(self.pairs)):
                raise Refused(f"pair {new['pair']!r} is not one of the {len(self.pairs)} class pairs listed")
            pair = self.pairs[new["pair"]]
            new["image1"], new["image2"] = changes.get("image1", pair.item_a), changes.get("image2", pair.item_b)
        if new["gate"] not in GATES or new["view"] not in VIEWS or new["ranking"] not in RANKINGS:
            raise Refused(f"gate is one of {GATES}, view one of {VIEWS}, ranking one of {tuple(RANKINGS)}")
        if not (isinstance(new["k"], int) and 1 <= new["k"] <= MAX_K):
            raise Refused(f"k={new['k']!r}: choose 1 to {MAX_K} channels")
        if not 0 <= float(new["alpha"]) <= 1:
            raise Refused(f"opacity {new['alpha']!r}: choose 0 to 1")
        for key in ("image1", "image2"):
            if new[key] != SIMILAR:
                new[key] = Path(new[key])
                self.forward(new[key])  # an unreadable image stops here, and the choice before it stays
        self.state = new

    # --- the networks, once per image ---------------------------------------------------------------------------
    def forward(self, item) -> Forward:
        """`item` through both networks (kept: a second call runs nothing); `Unreadable` if it cannot be loaded."""
        item = Path(item)
        if item not in self._kept:
            o = self.opened
            try:
                x = load_batch(o.dls, [item])
            except Exception as e:  # noqa: BLE001 -- any decoder error: the person picks another image
                raise Unreadable(f"{item.name} cannot be read ({type(e).__name__}): skipped; choose another image")
            self.forwards += 1
            models = (("API-Net", o.api), ("Baseline", o.baseline))
            maps = {name: feature_maps(learn, x) for name, learn in models}
            with torch.no_grad():  # the classifier on the pooled maps (eval mode): the prediction, with no second pass
                pooled = {name: plain_tensor(learn.model.pool(maps[name])) for name, learn in models}
                probs = {name: plain_tensor(learn.model.classify(pooled[name])).softmax(1)[0].cpu()
                         for name, learn in models}
            self._kept[item] = Forward(x, display_image(x, o.dls), pooled["API-Net"][0].cpu(),
                                       {k: v[0].cpu() for k, v in maps.items()}, probs)
        return self._kept[item]

    def label_of(self, item) -> int:
        return self.labels[self.items.index(Path(item))]

    def partner(self, item) -> Path:
        """`item`'s most similar test image of the other class of the current pair, in API-Net's pooled features,
        as the pair miner chooses an inter pair in training (`mine_pairs`)."""
        from ..pairs import mine_pairs
        pair = self.pairs[self.state["pair"]]
        label = self.label_of(item)
        other = pair.label_b if label == pair.label_a else pair.label_a
        stats = self.channels("API-Net")
        pool = [i for i, y in enumerate(stats.labels) if y == other]
        anchor = stats.items.index(Path(item))
        feats = stats.scan.feats[[anchor] + pool]
        idx1, idx2 = mine_pairs(feats, torch.tensor([label] + [other] * len(pool)), intra=None, inter="similar")
        return stats.items[pool[int(idx2[idx1 == 0][0]) - 1]]

    def images(self) -> tuple[Path, Path]:
        """The current image pair, image 2 resolved when it is image 1's most similar."""
        image1, image2 = self.state["image1"], self.state["image2"]
        return image1, self.partner(image1) if image2 == SIMILAR else image2

    # --- what is drawn ------------------------------------------------------------------------------------------
    def view(self) -> View:
        """The current figure's content, from kept forward passes only."""
        s, o = self.state, self.opened
        pair = self.images()
        f1, f2 = (self.forward(i) for i in pair)
        dev = model_device(o.api)
        l1, l2, _ = gate_logits(o.api.model.api, f1.feats[None].to(dev), f2.feats[None].to(dev))
        own = GATES.index(s["gate"])
        logits = (l1, l2)[own][0].cpu()
        g = torch.sigmoid(logits)
        if s["ranking"] == "pre-sigmoid":
            channels = logits.topk(s["k"]).indices
        else:  # float32, as the model computes it: a saturated gate ties at 1.0, and the stable sort keeps channel order
            channels = torch.sort(g.float(), descending=True, stable=True).indices[:s["k"]]
        item = pair[own if s["view"] == "self" else 1 - own]
        fw = self.forward(item)
        peaks = {name: map_peaks(fw.maps[name][channels]) for name in fw.maps}
        return View(item, self.label_of(item), s["gate"], s["view"], channels.tolist(), g[channels].tolist(),
                    logits[channels].tolist(), peaks, gate_ties(g.float(), s["k"]))

    def figure(self, view: View | None = None):
        """The current Fig. 3 (2 rows: API-Net, the Baseline at the same channel ids), with Grad-CAM if chosen."""
        s, o = self.state, self.opened
        v = self.view() if view is None else view
        fw = self.forward(v.item)
        cols = len(v.channels) + 1 + bool(s["gradcam"])
        width = 1.7 * cols + 0.9
        fig = new_figure(width, 5.0)
        parts = self._crop_parts(v.item)
        name = short_class_name(o.vocab[v.label])
        for r, model in enumerate(("API-Net", "Baseline")):
            # The Baseline's tiles name only the channel (the title says they are API-Net's ids): a redraw's time is
            # mostly glyphs, and at k = 16 a repeated line per tile costs a tenth of a second.
            titles = [f"{model} ch {c}" + (f"\n{v.gate}={g:.3f} logit {lg:.2f}" if r == 0 else "")
                      for c, g, lg in zip(v.channels, v.gates, v.logits)]
            head = prediction_title(f"{v.view} view: {name}", model, fw.probs[model], v.label, o.vocab)
            after = ()
            if s["gradcam"]:
                from pytorch_grad_cam.utils.image import show_cam_on_image
                cam = show_cam_on_image(fw.image.astype(np.float32), self._gradcam(v.item, model), use_rgb=True)
                after = ((f"{model} Grad-CAM\n(true class)", cam / 255),)
            # One axes per row, its maps as tiles: a redraw lays out 3 axes, whatever k is.
            ax = fig.add_axes([0.3 / width, 0.5 - 0.47 * r, 1 - 1.3 / width, 0.33])
            draw_map_strip(ax, fw.image, head, fw.maps[model][v.channels], titles, parts=parts, alpha=s["alpha"],
                           overlay=s["overlay"], after=after)
        bar = fig.add_axes([1 - 0.75 / width, 0.1, 0.12 / width, 0.6])
        fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), cax=bar, label="map, min to max")
        pair = self.pairs[s["pair"]]
        image1, image2 = self.images()
        tie = f"; {v.ties} channels tie at the top of {v.gate} (saturated)" if v.ties else ""
        fig.suptitle(f"{short_class_name(pair.class_a)} vs {short_class_name(pair.class_b)}: image 1 {image1.name}, "
                     f"image 2 {image2.name}; top-{len(v.channels)} channels of {v.gate} by "
                     f"{s['ranking']}{tie}; the Baseline below at the same channel ids", fontsize=10, y=0.99)
        return fig

    def png(self, fig=None) -> bytes:
        """The figure as PNG bytes, at the dpi of saved maps (what the widget shows)."""
        buf = io.BytesIO()
        # zlib's fastest level: the widget's PNG is shown once, and the default level takes a third of a redraw
        (self.figure() if fig is None else fig).savefig(buf, format="png", dpi=DPI["maps"],
                                                        pil_kwargs={"compress_level": 1})
        return buf.getvalue()

    def save(self, fig=None) -> Path:
        """Write the current figure (atomic, `apikit.figure.save_figure`) into the API-Net run's visualize folder."""
        s = self.state
        image1, image2 = self.images()
        stem = "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", str(t)) for t in (
            "explore", image1.stem, image2.stem, s["gate"], s["view"], f"k{s['k']}", s["ranking"]))
        path = self.opened.api_run / "visualize" / f"{stem}.png"
        return save_figure(self.figure() if fig is None else fig, path, kind="maps")

    # --- the channel atlas --------------------------------------------------------------------------------------
    def channels(self, model: str = "API-Net", done=None):
        """The model's channel statistics over the test split (`apikit.viz.channels`: cached beside its run)."""
        if model not in self._stats:
            o = self.opened
            learn, run, fp = ((o.api, o.api_run, o.fingerprints["api"]) if model == "API-Net" else
                              (o.baseline, o.baseline_run, o.fingerprints["baseline"]))
            self._stats[model] = channel_stats(learn, self.items, self.labels, o.vocab, o.dls, run, fp, o.size,
                                               o.resize, what=f"{model}'s channel statistics (once per run)", done=done)
        return self._stats[model]

    def atlas(self, channel: int, done=None):
        """The atlas of `channel` for API-Net and the Baseline: (Figure, notes on images skipped)."""
        o = self.opened
        n_channels = self.forward(self.pairs[0].item_a).feats.shape[0]
        if not (isinstance(channel, int) and 0 <= channel < n_channels):
            raise Refused(f"channel {channel!r}: choose 0 to {n_channels - 1}")
        blocks = []
        for model in ("API-Net", "Baseline"):
            stats = self.channels(model, done)
            hits = None
            if self.part_locs is not None:
                if self._targets is None:
                    self._targets = part_targets(stats.items, self.part_locs, self.parts, o.size, o.resize)
                hits = channel_hits(stats, channel, self.part_locs, self.parts, o.size, o.resize, targets=self._targets)
            blocks.append((model, stats, hits))
        return plot_atlas(channel, blocks, o.size, o.resize)

    def where(self) -> str:
        """The runs, as printed."""
        return f"Baseline {shown(self.opened.baseline_run)}, API-Net {shown(self.opened.api_run)}"

    def _crop_parts(self, item):
        if self.part_locs is None:
            return None
        if item not in self._parts:
            self._parts[item] = crop_parts([item], self.part_locs, self.parts, self.opened.size, self.opened.resize)[0]
        return self._parts[item]

    def _gradcam(self, item, model: str) -> np.ndarray:
        """Grad-CAM (`apikit.viz.cam.gradcam`) of `model` for the image's true class, kept."""
        if (item, model) not in self._cams:
            from .cam import gradcam
            learn = self.opened.api if model == "API-Net" else self.opened.baseline
            self._cams[item, model] = gradcam(learn, self.forward(item).x, [self.label_of(item)])[0]
        return self._cams[item, model]
