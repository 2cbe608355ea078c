"""`apikit/viz.py` and `notebooks/visualize.ipynb` on a tiny generated set and tiny resnet18 runs."""
import copy
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import set_seed
from PIL import Image
from torch import nn

from apikit import viz
from apikit.data import get_dls, synthetic
from apikit.learner import FineGrainedNet, api_learner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "visualize.ipynb"
SYN = dict(n_classes=4, n_train=6, n_test=3, size=64)  # 4 classes: one group of 4 confusable species
SIZE, RESIZE = 64, 72  # resnet18 -> 2 x 2 feature maps; the centre crop starts at pixel 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The generated set, its DataLoaders, and an untrained Baseline and API-Net (other seeds), exported as
    training runs export them. Untrained keeps the suite fast; nothing here depends on accuracy."""
    tmp = tmp_path_factory.mktemp("viz")
    root = synthetic.make(tmp / "synthetic", **SYN)
    dls = get_dls("synthetic", root, size=SIZE, resize=RESIZE, n_classes=2, n_images=4, bs=12, device="cpu",
                  synthetic=SYN)
    learners = {}
    for seed, (name, api) in enumerate((("api", True), ("baseline", False))):
        set_seed(seed)
        learn = api_learner(dls, arch="resnet18", pretrained=False, api=api)
        learn.path = tmp / "runs" / name
        learn.path.mkdir(parents=True)
        learn.export("model.pkl")
        learners[name] = load_learner(learn.path / "model.pkl")
    return dict(root=root, dls=dls, tmp=tmp, **learners)


def test_gate_channels_are_the_topk_of_the_eq2_gates(runs):
    api, dls = runs["api"], runs["dls"]
    items = list(dls.split.loc[dls.split.is_valid, "path"])[:2]
    x = viz.load_batch(dls, items)
    got = viz.gate_channels(api, x[:1], x[1:], k=5)

    model = copy.deepcopy(api.model).eval()
    with torch.no_grad():
        fmaps = model.body(x)
        feats = fmaps.mean(dim=(2, 3))  # global average pooling, by hand
        g1, g2 = model.api.double().gates(feats[:1].double(), feats[1:].double())
        g1_32, _ = copy.deepcopy(api.model).eval().api.gates(feats[:1], feats[1:])
    assert got.channels1.tolist() == g1[0].topk(5).indices.tolist()
    assert got.channels2.tolist() == g2[0].topk(5).indices.tolist()
    for ch in (got.channels1, got.channels2):
        assert len(set(ch.tolist())) == 5
    torch.testing.assert_close(got.g1.float(), g1_32[0], atol=1e-5, rtol=1e-5)  # float64 only for the ranking
    assert got.fmaps1.shape == got.fmaps2.shape == fmaps.shape[1:] == (512, 2, 2)
    torch.testing.assert_close(got.fmaps2, fmaps[1])


def test_plot_gate_maps_draws_both_models(runs):
    api, base, dls = runs["api"], runs["baseline"], runs["dls"]
    x = viz.load_batch(dls, list(dls.split.loc[dls.split.is_valid, "path"])[:2])
    fig = viz.plot_gate_maps(api, base, x[:1], x[1:], k=3, labels=[0, 1], dls=dls)
    assert len(fig.axes) == 4 * (3 + 1)
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("API-Net ch") for t in titles) == sum(t.startswith("Baseline ch") for t in titles) == 6
    plt.close(fig)


def test_confused_pairs_follow_fastai_most_confused(runs):
    base, dls = runs["baseline"], runs["dls"]
    pairs = viz.confused_pairs(base, k=2, dl=dls.valid)
    interp = ClassificationInterpretation(base, dls.valid, losses=None)
    cm = interp.confusion_matrix()
    interp.confusion_matrix = lambda: cm.copy()  # one inference pass: most_confused reuses it
    vocab = [str(v) for v in dls.vocab]
    assert viz.most_confused(cm, vocab) == [(str(a), str(b), int(n)) for a, b, n in interp.most_confused()]
    assert len(pairs) == 2 and len({frozenset((p.class_a, p.class_b)) for p in pairs}) == 2
    top = interp.most_confused()
    if top:
        assert {pairs[0].class_a, pairs[0].class_b} == {str(top[0][0]), str(top[0][1])}
    preds = base.get_preds(dl=dls.test_dl([p.item_a for p in pairs] + [p.item_b for p in pairs]))[0].argmax(1)
    for i, p in enumerate(pairs):
        assert p.item_a.parent.name == p.class_a and p.item_b.parent.name == p.class_b
        assert p.n_confused == cm[p.label_a, p.label_b] + cm[p.label_b, p.label_a]
        if p.baseline_wrong_a:
            assert int(preds[i]) == p.label_b
        if p.baseline_wrong_b:
            assert int(preds[len(pairs) + i]) == p.label_a


def test_gradcam_maps_and_road_scores(runs):
    api, base, dls = runs["api"], runs["baseline"], runs["dls"]
    df = dls.split[dls.split.is_valid].iloc[[0, 3]]
    x, labels = viz.load_batch(dls, df.path), list(df.label)
    result = viz.compare_gradcam(api, base, x, labels, percentiles=(50,))
    for name in ("api", "baseline"):
        cams, road = result[name]["cams"], result[name]["road"]
        assert cams.shape == (2, SIZE, SIZE)
        assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
        assert road.shape == (2,) and np.isfinite(road).all()
        assert result[name]["empty"].tolist() == [bool(c.max() <= 1e-6) for c in cams]
    # a frozen backbone (pretrained runs) still gives Grad-CAM maps: the input carries the gradient
    frozen = copy.deepcopy(base)
    for p in frozen.model.body.parameters():
        p.requires_grad_(False)
    np.testing.assert_allclose(viz.gradcam(frozen, x, labels), result["baseline"]["cams"], atol=1e-5)
    fig = viz.plot_gradcam(x, labels, result, [str(v) for v in dls.vocab], dls)
    assert len(fig.axes) == 2 * 3
    plt.close(fig)


def test_read_parts_and_discriminative_parts(runs):
    root = runs["root"]
    locs = viz.read_parts(root)
    n_images = SYN["n_classes"] * (SYN["n_train"] + SYN["n_test"])
    assert list(locs.columns) == ["image_id", "part_id", "x", "y", "visible", "path", "class_id"]
    assert len(locs) == n_images * 15 and locs["visible"].dtype == bool
    assert all(Path(p).is_file() for p in locs["path"].unique())
    assert locs.attrs["parts"][2] == "beak"
    disc = viz.discriminative_parts(root)
    assert sorted(disc) == sorted(locs["class_id"].unique()) and all(disc.values())
    assert viz.discriminative_parts(runs["tmp"]) is None  # no synthetic.json: CUB


# ---------------------------------------------------------------- geometry, by hand
# A 200 x 100 image, squish-resized to 64 x 64, centre crop 48 (offset 8), a 3 x 3 feature map
# (cells of 16 crop pixels = 50 x 25 image pixels). Cell (0, 2): crop centre (40, 8) -> resized (48, 16)
# -> image (48 * 200 / 64, 16 * 100 / 64) = (150, 25).

def test_a_hot_cell_maps_to_its_image_pixels():
    fmap = torch.zeros(3, 3)
    fmap[0, 2] = 1.0
    row, col = divmod(int(fmap.argmax()), 3)
    x, y, cw, ch = viz.cell_to_image(row, col, (3, 3), (200, 100), size=48, resize=64)
    assert (x, y, cw, ch) == (150.0, 25.0, 50.0, 25.0)
    # the cell spans image x in [125, 175) and y in [12.5, 37.5)
    assert (x - cw / 2, x + cw / 2, y - ch / 2, y + ch / 2) == (125.0, 175.0, 12.5, 37.5)
    np.testing.assert_allclose(viz.image_to_crop([(150, 25)], (200, 100), 48, 64), [[40, 8]])
    # the top-left cell of a map over the whole crop
    assert viz.cell_to_image(0, 0, (3, 3), (64, 64), size=48, resize=64)[:2] == (16.0, 16.0)


def test_score_peaks_by_hand():
    peaks = [[(0, 2)], [(0, 2)], [(0, 2)]]
    parts = [np.array([[150.0, 25.0]]),   # at the cell centre: hit
             np.array([[90.0, 25.0]]),    # 1.2 cells to the left: miss
             np.array([[105.0, 35.0]])]   # (-0.9, 0.4) cells: 0.98 cells away: hit
    hits = viz.score_peaks(peaks, (3, 3), np.array([[200, 100]] * 3), parts, size=48, resize=64, radius=1.0)
    assert hits[:, 0].tolist() == [True, False, True]
    hits = viz.score_peaks(peaks, (3, 3), np.array([[200, 100]] * 3), parts, size=48, resize=64, radius=0.5)
    assert hits[:, 0].tolist() == [True, False, False]


class HotBody(nn.Module):
    """A 'backbone' whose 3 x 3 maps are zero but for one hot cell per channel: ch 0 at (0, 2), value 3;
    ch 1 at (2, 0), value 2; ch 2 at (1, 1), value 1."""

    def forward(self, x):
        out = x.new_zeros(len(x), 3, 3, 3)
        out[:, 0, 0, 2], out[:, 1, 2, 0], out[:, 2, 1, 1] = 3.0, 2.0, 1.0
        return out


@pytest.fixture(scope="module")
def hot(tmp_path_factory):
    """A 2-image test split of 200 x 100 images, a Learner on HotBody, and hand-made part locations."""
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
    # chance (cell centres at x = 50, 100, 150 and y = 25, 50, 75): image 1's part is hit from cell (0, 2) and
    # its neighbours (0, 1) and (1, 2), exactly 1 cell away; image 2's part at (90, 25) from (0, 0) and (0, 1)
    assert r["chance"] == pytest.approx((3 / 9 + 2 / 9) / 2)
    assert viz.part_hit_rate(learn, items, locs, parts=None, k=1, channels=on_hot)["rate"] == 1.0
    assert viz.part_hit_rate(learn, items, locs, parts={1: [2], 2: [5]}, k=1, channels=on_hot)["rate"] == 1.0
    # channel 2 peaks at the centre cell (1, 1): 1.41 and 1.02 cells from the parts
    assert viz.part_hit_rate(learn, items, locs, parts=[2], k=1, channels=[[2], [2]])["rate"] == 0.0
    # the model's own top-1 by mean activation is channel 0 (the hottest)
    assert viz.part_hit_rate(learn, items, locs, parts=[2], k=1)["rate"] == 0.5
    # an image whose counted parts are all invisible is skipped
    r = viz.part_hit_rate(learn, items, locs, parts=[5], k=1, channels=on_hot)
    assert (r["n_images"], r["rate"]) == (1, 1.0)


def test_hit_rates_compare_the_models(runs):
    api, base, dls, root = runs["api"], runs["baseline"], runs["dls"], runs["root"]
    items = list(dls.split.loc[dls.split.is_valid, "path"])
    r = viz.hit_rates(api, base, items, viz.read_parts(root), viz.discriminative_parts(root), k=3, dls=dls)
    for key in ("api_gate", "baseline_gate", "api_own", "baseline_own", "chance"):
        assert 0 <= r[key] <= 1
    assert r["n_images"] <= len(items) and r["n_peaks"] == 3 * r["n_images"] and r["fmap_hw"] == [2, 2]


# ---------------------------------------------------------------- the notebook

def test_notebook_parameters():
    """The template itself is checked with the others in tests/test_notebooks.py."""
    import papermill
    params = papermill.inspect_notebook(NOTEBOOK)
    assert {"baseline_run", "api_run", "dataset", "data_path", "size", "resize", "n_pairs", "k",
            "out_dir"} <= set(params)
    assert all(p["help"] for p in params.values())


def test_notebook_runs_with_papermill(runs, python3_kernel, tmp_path):
    """python3_kernel (conftest.py): a `python3` kernelspec running this interpreter, first on JUPYTER_PATH."""
    import papermill
    out = tmp_path / "visualize"
    api_run = runs["tmp"] / "runs" / "api"
    # size and resize are left to the notebook, which reads them from the API-Net run's metrics.json
    (api_run / "metrics.json").write_text(json.dumps({"config": {"size": SIZE, "resize": RESIZE}}))
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name=python3_kernel, progress_bar=False,
        parameters=dict(baseline_run=str(runs["tmp"] / "runs" / "baseline"), api_run=str(api_run),
                        dataset="synthetic", data_path=str(runs["root"]), synthetic=SYN, n_pairs=1, k=3,
                        road_percentiles=[50], bs=12, out_dir=str(out)))
    assert sorted(p.name for p in out.iterdir()) == ["gates_pair1.png", "gradcam.png", "part_hits.png", "viz.json"]
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    summary = json.loads((out / "viz.json").read_text())
    assert {"pairs", "road", "part_hit_rate", "part_hits_detail", "figures"} <= set(summary)
    assert summary["figures"] == ["gates_pair1.png", "gradcam.png", "part_hits.png"]
    assert len(summary["pairs"]) == 1 and (summary["size"], summary["resize"]) == (SIZE, RESIZE)
    for pair in summary["pairs"]:
        assert len(pair["channels_a"]) == len(pair["channels_b"]) == 3
        assert all(math.isfinite(g) for g in pair["gates_a"] + pair["gates_b"])
    for name in ("api", "baseline"):
        assert math.isfinite(summary["road"][name])
        assert 0 <= summary["road"][f"{name}_empty_maps"] <= 2
    for key in ("api_gate", "baseline_gate", "api_own", "baseline_own", "chance"):
        assert 0 <= summary["part_hit_rate"][key] <= 1
