"""`apikit/viz/cam.py`: Grad-CAM maps and ROAD scores of both models, and their figure."""
import copy

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from apikit import viz
from viz_fixtures import SIZE


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
    # the same seed gives the same ROAD scores, and the global RNG is left alone
    state = np.random.get_state()[1].copy()
    again = viz.road_scores(base, x, result["baseline"]["cams"], labels, percentiles=(50,))
    np.testing.assert_allclose(again, result["baseline"]["road"])
    assert (np.random.get_state()[1] == state).all()
    before = plt.get_fignums()
    fig = viz.plot_gradcam(x, labels, result, [str(v) for v in dls.vocab], dls)
    assert isinstance(fig, Figure) and plt.get_fignums() == before
    images = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(images) == 2 * 3 and len(fig.axes) == 2 * 3 + 1  # one colour bar
    assert images[1].get_title().startswith("Baseline: ") and "ROAD " in images[1].get_title()
