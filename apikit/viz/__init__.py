"""Section 4.3 (Fig. 3) and beyond: what the gates pick, Grad-CAM with a faithfulness score, and part hits.

    pairs = confused_pairs(baseline, k=2, dl=dls.valid)        # the Baseline's most confused class pairs
    x = load_batch(dls, pairs[0].items)                       # the pair, as the models see it
    gates = gate_channels(api, x[:1], x[1:], k=5)             # top-5 channels of g1 and g2 (Eq. 2)
    fig = plot_gate_maps(api, baseline, x[:1], x[1:], gates=gates)
    cams = compare_gradcam(api, baseline, x, labels)          # Grad-CAM + ROAD for both models
    rates = hit_rates(api, baseline, items, read_parts(root), discriminative_parts(root), dls=dls)
    viz_json = run(baseline_run=..., api_run=..., out_dir=...)  # all of it, as visualize.ipynb does

Modules: batches (images, feature maps, predictions), confused (pairs), gates (Fig. 3), cam (Grad-CAM, ROAD),
geometry (feature-map cell <-> image pixel), hits (part hit rates), load (two runs opened for comparison), run
(visualize.ipynb's job), channels (the channel atlas and its cache), explore and widgets (explore.ipynb's explorer).
Part annotations are read by `apikit.data.parts`.
"""
from ..data.parts import discriminative_parts, read_parts
from ..runs import write_json
from .batches import feature_maps, load_batch
from .cam import ROAD_PERCENTILES, compare_gradcam, gradcam, plot_gradcam, road_scores
from .confused import ConfusedPair, confused_pairs, most_confused
from .gates import GateChannels, gate_channels, gate_logits, gate_ties, plot_gate_maps, tie_note
from .geometry import cell_to_image, crop_geometry, image_to_crop, score_peaks
from .hits import Scan, crop_parts, hit_rates, part_hit_rate, plot_hit_rates, scan_items
from .run import VISUALIZE_DEFAULTS, check_visualize_params, run

__all__ = ["ConfusedPair", "most_confused", "confused_pairs", "load_batch", "feature_maps", "GateChannels",
           "gate_channels", "plot_gate_maps", "gradcam", "road_scores", "compare_gradcam", "plot_gradcam",
           "read_parts", "discriminative_parts", "crop_geometry", "cell_to_image", "image_to_crop", "score_peaks",
           "Scan", "scan_items", "crop_parts", "part_hit_rate", "hit_rates", "plot_hit_rates", "write_json",
           "ROAD_PERCENTILES", "gate_logits", "gate_ties", "tie_note", "VISUALIZE_DEFAULTS", "check_visualize_params",
           "run"]
