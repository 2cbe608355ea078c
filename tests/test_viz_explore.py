"""`apikit/viz/explore.py` and `apikit/viz/channels.py` driven without a browser, on the tiny runs of tests/viz_fixtures.py
seen at a 128 px crop (resnet18: 4 x 4 maps; at the runs' own 64 px the maps are 2 x 2, which the explorer refuses)."""
import shutil
import subprocess

import numpy as np
import pytest
import torch

from apikit import viz
from apikit.viz import feature_maps, gate_channels, load_batch
from apikit.viz.channels import cache_path, channel_stats, crop_images, read_channels
from apikit.viz.explore import SIMILAR, Explorer
from viz_fixtures import ROOT, SYN

AT_128 = dict(size=128, resize=144, bs=12)
pytestmark = pytest.mark.xdist_group("viz_explore")  # one worker builds the explorer, once


@pytest.fixture(scope="module")
def explorer(runs, tmp_path_factory):
    """An Explorer on copies of the tiny runs (the channel cache and saved figures go beside them)."""
    tmp = tmp_path_factory.mktemp("explore")
    for name in ("api", "baseline"):
        shutil.copytree(runs["tmp"] / "runs" / name, tmp / name)
    return Explorer(tmp / "baseline", tmp / "api", data_path=str(runs["root"]), synthetic=SYN, **AT_128)


def test_each_control_draws_what_apikit_viz_computes(explorer):
    """Per gate, view and ranking: the channels, gate values and peaks are those of gate_channels and the Baseline's
    feature maps on the same two images."""
    ex = explorer
    pair = ex.pairs[0]
    x = load_batch(ex.opened.dls, pair.items)
    ref = gate_channels(ex.opened.api, x[:1], x[1:], k=6)
    base = feature_maps(ex.opened.baseline, x).cpu()
    for i, item in enumerate(pair.items):  # each model's prediction, as its own forward gives it
        for name, learn in (("API-Net", ex.opened.api), ("Baseline", ex.opened.baseline)):
            assert torch.allclose(ex.forward(item).probs[name], viz.batches.predict_probs(learn, x[i:i + 1])[0],
                                  atol=1e-5)
    want = viz.confused_pairs(ex.opened.baseline, k=len(ex.pairs), dl=ex.opened.dls.valid)  # from its own pass
    assert [(p.class_a, p.class_b, p.n_confused, p.items) for p in ex.pairs] == \
        [(p.class_a, p.class_b, p.n_confused, p.items) for p in want]
    labels = [l for l, _ in ex.pair_options()]
    assert all("confused)" in l for l in labels) and [p.n_confused for p in ex.pairs] == \
        sorted((p.n_confused for p in ex.pairs), reverse=True)
    for gate, own in (("g1", 0), ("g2", 1)):
        channels, g = (ref.channels1, ref.g1) if own == 0 else (ref.channels2, ref.g2)
        for view, shown_image in (("self", own), ("other", 1 - own)):
            ex.choose(pair=0, gate=gate, view=view, k=6, ranking="pre-sigmoid")
            v = ex.view()
            assert v.item == pair.items[shown_image] and v.channels == channels.tolist()
            np.testing.assert_allclose(v.gates, g[channels].numpy(), rtol=1e-5)
            fm = (ref.fmaps1, ref.fmaps2)[shown_image][channels]
            w = fm.shape[-1]
            for name, maps in (("API-Net", fm), ("Baseline", base[shown_image][channels])):
                want = [None if m.max() <= m.min() else divmod(int(m.flatten().argmax()), w) for m in maps]
                assert v.peaks[name] == want, (gate, view, name)
    ex.choose(ranking="activation", gate="g1", view="self", k=4)
    v = ex.view()
    assert v.gates == sorted(v.gates, reverse=True) and len(v.channels) == 4
    ex.choose(overlay=False, alpha=0.2, gradcam=True)
    fig = ex.figure()
    titles = [[t.get_text() for t in ax.texts] for ax in fig.axes[:2]]  # 2 rows of tiles, then the colour bar
    assert len(fig.axes) == 3 and [len(t) for t in titles] == [4 + 2, 4 + 2]
    assert titles[0][-1].startswith("API-Net Grad-CAM") and titles[1][-1].startswith("Baseline Grad-CAM")
    assert titles[1][1].startswith(f"Baseline ch {v.channels[0]}\nmax ") and fig._suptitle.get_text().endswith("the Baseline below at the same channel ids")
    assert len(ex.png(fig)) > 1000
    ex.choose(overlay=True, alpha=0.5, gradcam=False, ranking="pre-sigmoid")


def test_a_redraw_runs_no_network(explorer, monkeypatch):
    """Forward passes are kept per image: k, gate, view, ranking and overlay only draw."""
    ex = explorer
    ex.choose(pair=0)
    ex.figure()
    before = ex.forwards
    for name in ("load_batch", "feature_maps"):
        monkeypatch.setattr(f"apikit.viz.explore.{name}", lambda *a, **k: pytest.fail("a forward pass ran"))
    for change in (dict(k=3), dict(k=16), dict(gate="g2"), dict(view="other"), dict(ranking="activation"),
                   dict(overlay=False), dict(alpha=0.9)):
        ex.choose(**change)
        ex.figure()
    assert ex.forwards == before
    ex.choose(k=5, gate="g1", view="self", ranking="pre-sigmoid", overlay=True, alpha=0.5)


def test_the_atlas_shows_the_highest_activation_images_and_is_cached_by_fingerprint(explorer, monkeypatch):
    ex = explorer
    stats = ex.channels("API-Net")
    x = load_batch(ex.opened.dls, stats.items)
    feats = feature_maps(ex.opened.api, x).mean((2, 3)).cpu()  # the pooled features: each channel's mean activation
    for c in (0, 7, 300):
        got = feats[stats.top[c], c]
        assert torch.allclose(got, feats[:, c].topk(len(got)).values, atol=1e-5), c
        assert got.tolist() == sorted(got.tolist(), reverse=True)
    assert len(stats.gates) == len(stats.items) and stats.vocab == ex.opened.vocab
    fig, notes = ex.atlas(7)
    assert notes == [] and len(fig.axes) > 20
    # Cached beside the run: read again with no pass; another model fingerprint rebuilds it.
    path = cache_path(ex.opened.api_run)
    assert path.is_file()
    o = ex.opened
    monkeypatch.setattr("apikit.viz.channels.scan_items", lambda *a, **k: pytest.fail("scanned again"))
    again = channel_stats(o.api, ex.items, ex.labels, o.vocab, o.dls, o.api_run, o.fingerprints["api"], o.size, o.resize)
    assert again.key == stats.key and np.array_equal(again.top, stats.top)
    assert read_channels(path, key="another model") is None
    monkeypatch.undo()
    rebuilt = channel_stats(o.api, ex.items, ex.labels, o.vocab, o.dls, o.api_run, "another model", o.size, o.resize)
    assert rebuilt.key != stats.key and read_channels(path).key == rebuilt.key
    channel_stats(o.api, ex.items, ex.labels, o.vocab, o.dls, o.api_run, o.fingerprints["api"], o.size, o.resize)


def test_an_image_that_cannot_be_read_is_skipped_with_a_note(explorer, tmp_path):
    ex = explorer
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    before = dict(ex.state)
    with pytest.raises(ValueError) as e:
        ex.choose(image1=bad)
    assert e.value._render_traceback_() == [f"Unreadable: {bad.name} cannot be read (UnidentifiedImageError): "
                                            "skipped; choose another image"]
    assert ex.state == before
    images, notes = crop_images([ex.items[0], bad], 128, 144)
    assert images[0].shape == (128, 128, 3) and images[1] is None and notes == [f"{bad.name} cannot be read "
                                                                                 "(UnidentifiedImageError): skipped"]


def test_image_two_may_be_the_pair_miners_choice(explorer):
    ex = explorer
    pair = ex.pairs[0]
    ex.choose(pair=0, image2=SIMILAR)
    image1, image2 = ex.images()
    assert image1 == pair.item_a and ex.label_of(image2) == pair.label_b
    stats = ex.channels("API-Net")
    others = [i for i, y in enumerate(stats.labels) if y == pair.label_b]
    anchor = stats.scan.feats[stats.items.index(image1)]
    nearest = min(others, key=lambda i: float((stats.scan.feats[i] - anchor).norm()))
    assert image2 == stats.items[nearest]
    ex.choose(pair=0)


def test_saving_writes_into_the_api_runs_visualize_folder_and_nothing_tracked(explorer):
    status = lambda: subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout
    before = status()
    path = explorer.save()
    assert path.parent == explorer.opened.api_run / "visualize" and path.suffix == ".png" and path.stat().st_size > 1000
    assert status() == before


def test_runs_it_cannot_compare_are_one_line(runs, tmp_path):
    """2 x 2 maps, a run without its model, runs of two settings: one line each, in the widget too."""
    from apikit.viz.widgets import ExplorerWidget
    for name in ("api", "baseline"):
        shutil.copytree(runs["tmp"] / "runs" / name, tmp_path / name)
    common = dict(data_path=str(runs["root"]), synthetic=SYN)
    with pytest.raises(ValueError) as e:
        Explorer(tmp_path / "baseline", tmp_path / "api", **common)  # the runs' own 64 px: 2 x 2 maps
    (line,) = e.value._render_traceback_()
    assert line.startswith("Refused: the runs' last-stage feature maps are 2 x 2 at size=64") and "4 x 4" in line
    assert not (tmp_path / "baseline" / "visualize").exists()  # refused before any pass over the test split
    (tmp_path / "api" / "model.pth").unlink()  # model.pkl is still there: never a fallback
    widget = ExplorerWidget(str(tmp_path / "baseline"), str(tmp_path / "api"), **common, **AT_128)
    assert "NoModel:" in widget.status.value and "holds model.pkl but no model.pth" in widget.status.value
    assert "re-run the training (overwrite=True) with this apikit" in widget.status.value
    assert widget.explorer is None and "Traceback" not in widget.status.value


def test_the_report_shows_the_atlas_of_pair_1s_top_gate_channel_once_cached(explorer, tmp_path):
    """report.ipynb -p visualize: Fig. 3's folder, and the atlas of pair 1's top gate channel drawn from the channel
    statistics the explorer cached beside both runs; not when a run's model changed since."""
    import json

    from apikit.report.fig3 import visualize_section
    ex, o = explorer, explorer.opened
    ex.channels("API-Net"), ex.channels("Baseline")
    folder = tmp_path / "viz"
    folder.mkdir()
    pair = {"class_a": ex.pairs[0].class_a, "class_b": ex.pairs[0].class_b, "channels_a": [7, 3], "figure": "x.png"}
    (folder / "viz.json").write_text(json.dumps({"api_run": str(o.api_run), "baseline_run": str(o.baseline_run),
                                                 "root": str(o.root), "size": o.size, "resize": o.resize, "k": 2,
                                                 "pairs": [pair]}))
    doc, copies = visualize_section(folder, tmp_path / "out")
    (img,) = [b for b in doc if b[0] == "img" and "atlas" in b[2]]
    assert img[2] == "channel atlas of channel 7" and (tmp_path / "out" / img[1]).is_file()
    assert copies == [tmp_path / "out" / img[1]]
    assert any(b[0] == "p" and "peak lands on a part against chance" in b[1] for b in doc)
    metrics = json.loads((o.baseline_run / "metrics.json").read_text())
    (o.baseline_run / "metrics.json").write_text(json.dumps({**metrics, "weights_sha256": "0" * 64}))
    try:
        doc, copies = visualize_section(folder, tmp_path / "out2")
        assert not [b for b in doc if b[0] == "img" and "atlas" in b[2]] and copies == []
    finally:
        (o.baseline_run / "metrics.json").write_text(json.dumps(metrics))
