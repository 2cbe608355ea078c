"""`apikit/viz/hits.py`: part hit rates by hand (a Learner on a hand-made backbone), their t intervals, and
API-Net vs the Baseline on the tiny runs."""
import numpy as np
import pandas as pd
import pytest
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from apikit import viz
from apikit.data import get_dls
from apikit.model import FineGrainedNet
from apikit.stats import t_interval

T_975 = {1: 12.7062047, 2: 4.3026527}  # Student t quantiles (0.975) for 1 and 2 degrees of freedom, from a table


class HotBody(nn.Module):
    """A 'backbone' whose 3 x 3 maps are zero but for one hot cell per channel: ch 0 at (0, 2), value 3;
    ch 1 at (2, 0), value 2; ch 2 at (1, 1), value 1."""

    def forward(self, x):
        out = x.new_zeros(len(x), 3, 3, 3)
        out[:, 0, 0, 2], out[:, 1, 2, 0], out[:, 2, 1, 1] = 3.0, 2.0, 1.0
        return out


@pytest.fixture(scope="module")
def hot(tmp_path_factory):
    """A 2-image test split of 200 x 100 images, a Learner on HotBody, and hand-made part locations
    (the geometry of tests/test_viz_geometry.py: cell centres at x = 50, 100, 150 and y = 25, 50, 75)."""
    path = tmp_path_factory.mktemp("hot")
    for split in ("train", "valid"):
        for c in ("a", "b"):
            (path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (200, 100), (40 * i, 90, 160)).save(path / split / c / f"{i}.png")
    dls = get_dls("folder", path, size=48, resize=64, n_classes=2, n_images=2, device="cpu")
    learn = Learner(dls, FineGrainedNet(HotBody(), 3, 2), loss_func=CrossEntropyLossFlat())
    items = [path / "valid" / "a" / "0.png", path / "valid" / "b" / "0.png"]
    # image 1: part 2 at the hot cell's centre; image 2: part 2 1.2 cells away, part 5 on the cell
    rows = [(1, 2, 150.0, 25.0, True, items[0], 1), (1, 5, 0.0, 0.0, False, items[0], 1),
            (2, 2, 90.0, 25.0, True, items[1], 2), (2, 5, 150.0, 25.0, True, items[1], 2)]
    locs = pd.DataFrame(rows, columns=["image_id", "part_id", "x", "y", "visible", "path", "class_id"])
    return learn, items, locs


def test_part_hit_rate_by_hand(hot):
    learn, items, locs = hot
    assert viz.crop_geometry(learn.dls) == (48, 64)
    on_hot = [[0], [0]]  # channel 0 peaks at cell (0, 2) in both images
    r = viz.part_hit_rate(learn, items, locs, parts=[2], k=1, channels=on_hot)
    assert (r["hits"], r["n_peaks"], r["n_images"], r["rate"]) == (1, 2, 2, 0.5)
    # chance: image 1's part is hit from cell (0, 2) and its neighbours (0, 1) and (1, 2), exactly 1 cell away;
    # image 2's part at (90, 25) from (0, 0) and (0, 1)
    assert r["chance"] == pytest.approx((3 / 9 + 2 / 9) / 2)
    assert r["chance_per_image"] == pytest.approx([3 / 9, 2 / 9])
    assert viz.part_hit_rate(learn, items, locs, parts=None, k=1, channels=on_hot)["rate"] == 1.0
    assert viz.part_hit_rate(learn, items, locs, parts={1: [2], 2: [5]}, k=1, channels=on_hot)["rate"] == 1.0
    # channel 2 peaks at the centre cell (1, 1): 1.41 and 1.02 cells from the parts
    assert viz.part_hit_rate(learn, items, locs, parts=[2], k=1, channels=[[2], [2]])["rate"] == 0.0
    # the model's own top-1 by mean activation is channel 0 (the hottest)
    assert viz.part_hit_rate(learn, items, locs, parts=[2], k=1)["rate"] == 0.5
    # an image whose counted parts are all invisible is skipped
    r = viz.part_hit_rate(learn, items, locs, parts=[5], k=1, channels=on_hot)
    assert (r["n_images"], r["rate"]) == (1, 1.0)


def test_the_hit_rate_interval_by_hand(hot):
    learn, items, locs = hot
    # k = 2 channels per image, 0 and 2. Image 1: channel 0 hits, channel 2 misses (1.41 cells): 1/2.
    # Image 2: both miss (1.2 and 1.02 cells): 0/2. Per-image rates [0.5, 0], chance [3/9, 2/9].
    r = viz.part_hit_rate(learn, items, locs, parts=[2], k=2, channels=[[0, 2], [0, 2]])
    assert r["per_image"] == [0.5, 0.0] and (r["hits"], r["n_peaks"]) == (1, 4)
    # mean 0.25; sample sd |0.5 - 0| / sqrt(2), standard error 0.25; t(0.975, 1 df) = 12.706
    assert r["rate"] == 0.25
    assert r["rate_ci95"] == pytest.approx([0.25 - T_975[1] * 0.25, 0.25 + T_975[1] * 0.25])
    # rate minus chance per image: 1/2 - 3/9 = 1/6 and 0 - 2/9 = -2/9; mean -1/36, standard error
    # |1/6 + 2/9| / 2 = 7/36
    assert r["above_chance"] == pytest.approx(-1 / 36)
    assert r["above_chance_ci95"] == pytest.approx([-1 / 36 - T_975[1] * 7 / 36, -1 / 36 + T_975[1] * 7 / 36])


def test_hit_rates_compare_the_models(runs):
    api, base, dls, root = runs["api"], runs["baseline"], runs["dls"], runs["root"]
    items = list(dls.split.loc[dls.split.is_valid, "path"])
    r = viz.hit_rates(api, base, items, viz.read_parts(root), viz.discriminative_parts(root), k=3, dls=dls)
    for key in ("api_gate", "baseline_gate", "api_own", "baseline_own", "chance"):
        assert 0 <= r[key] <= 1
    assert r["n_images"] <= len(items) and r["n_peaks"] == 3 * r["n_images"] and r["fmap_hw"] == [2, 2]
    assert r["ranking"] == "pre-sigmoid x_m * x_i (Eq. 2)" and r["interval"] == viz.hits.INTERVAL
    for name in ("api_gate", "baseline_gate"):
        d = r["detail"][name]
        mean, half, _ = t_interval(d["per_image"])
        assert r[name] == pytest.approx(mean) and r[f"{name}_ci95"] == pytest.approx([mean - half, mean + half])
        assert r[f"{name}_above_chance"] == pytest.approx(np.mean(d["per_image"]) - np.mean(d["chance_per_image"]))
    fig = viz.plot_hit_rates(r)
    assert isinstance(fig, Figure) and "95% t interval" in fig.axes[0].get_title()
    assert all(r[f"{name}_flat_maps"] == r["detail"][name]["flat_maps"] for name in r["detail"])
    ticks = [t.get_text() for t in viz.plot_hit_rates({**r, "baseline_gate_flat_maps": 3}).axes[0].get_xticklabels()]
    assert ticks[1] == "Baseline\nsame channels\n(3 flat maps\nnot scored)" and "flat" not in ticks[0]
    with pytest.raises(ValueError, match="items must span 2\\+ classes"):
        viz.hit_rates(api, base, items[:1], viz.read_parts(root), k=3, dls=dls)


class FlatBody(HotBody):
    """HotBody plus a channel 3 that is 0 everywhere on every image (a ReLU channel that stays off)."""

    def forward(self, x):
        import torch
        return torch.cat([super().forward(x), x.new_zeros(len(x), 1, 3, 3)], 1)


def test_a_flat_map_has_no_peak_and_is_not_scored(hot):
    """argmax of an all-zero map is cell (0, 0) on every image: scoring it would score that corner. Flat maps are
    left out and counted; an image whose chosen maps are all flat is skipped."""
    learn, items, locs = hot
    flat = Learner(learn.dls, FineGrainedNet(FlatBody(), 4, 2), loss_func=CrossEntropyLossFlat())
    r = viz.part_hit_rate(flat, items, locs, parts=[2], k=1, channels=[[3], [0]])
    assert (r["flat_maps"], r["n_peaks"], r["n_images"], r["hits"]) == (1, 1, 1, 0)  # image 2's hot peak misses
    both = viz.part_hit_rate(flat, items, locs, parts=[2], k=2, channels=[[0, 3], [3, 0]])
    assert (both["flat_maps"], both["n_peaks"], both["n_images"], both["hits"], both["rate"]) == (2, 2, 2, 1, 0.5)
    assert both["per_image"] == [1.0, 0.0]  # per image: hits among its live peaks only
