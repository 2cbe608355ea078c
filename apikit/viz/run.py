"""visualize.ipynb's job: load a Baseline and an API-Net run, draw Fig. 3, Grad-CAM and part hits, write viz.json.

    out = run(baseline_run="reports/runs/demo/api-False/seed-0", api_run="reports/runs/demo/api-net/seed-0")

Relative paths (`baseline_run`, `api_run`, `data_path`, `out_dir`) mean the same wherever the kernel starts:
they resolve against the project root (`apikit.runs.resolve`). What is printed and recorded in viz.json is
relative to the project root (or ~), so it reads the same on every machine. The figures go beside the API-Net
run (`<api_run>/visualize`) unless `out_dir` says otherwise; `make demo` alone writes `reports/demo/visualize`.
"""
from __future__ import annotations

import numpy as np

from ..schema import Param, check_against
from ..data.sources import NAMES
from ..figure import save_figure
from ..paper import RECIPE
from ..progress import progress
from ..runs import resolve, shown, write_json
from .batches import load_batch, normalize_stats
from .cam import ROAD_PERCENTILES, compare_gradcam, plot_gradcam
from .confused import confused_pairs
from .gates import gate_channels, plot_gate_maps, tie_note
from .hits import crop_parts, hit_rates, plot_hit_rates
from .load import Refused, _load, open_runs, small_maps  # noqa: F401 (_load: tests load a run's model alone)

__all__ = ["VISUALIZE_PARAMS", "VISUALIZE_DEFAULTS", "Refused", "check_visualize_params", "run"]

_ROOT = "relative: to the project root"
# The parameters of visualize.ipynb (a test holds its parameters cell equal to these), with their defaults: the
# two seed-0 runs of `make demo`.
VISUALIZE_PARAMS = (
    Param("baseline_run", "reports/runs/demo/api-False/seed-0", str,
          f"run_dir of the Baseline (holds model.pth; {_ROOT})"),
    Param("api_run", "reports/runs/demo/api-net/seed-0", str, f"run_dir of API-Net (holds model.pth; {_ROOT})"),
    Param("dataset", None, str, f"the runs' data set: {' | '.join(NAMES)} (None: api_run's, with its data_path and "
          "synthetic; part hits: cub, synthetic)", NAMES, optional=True),
    Param("data_path", None, str, f"folder of the data set's index files (or its parent; {_ROOT}); None: the apikit "
          "data cache", optional=True),
    Param("synthetic", None, dict, "apikit.data.synthetic.make settings the runs used (dataset synthetic only; None: "
          "api_run's, or the defaults)", optional=True),
    Param("size", None, int, "crop size the models see (None: api_run's, from its metrics.json; the paper: "
          f"{RECIPE['size']})", optional=True, low=1),
    Param("resize", None, int, f"squish-resize before the centre crop (None: api_run's; the paper: {RECIPE['resize']})",
          optional=True, low=1),
    Param("n_pairs", 2, int, "most confused class pairs to draw (the paper shows 2)", low=1),
    Param("k", 5, int, "top gate channels per image (the paper shows 5)", low=1),
    Param("radius", 1.0, float, "a peak hits a part within this many feature-map cells", low=0, strict=True),
    Param("road_percentiles", list(ROAD_PERCENTILES), list, "ROADCombined: percentiles of pixels removed, most/least "
          "relevant first", item=float, low=0, high=100, strict=True),
    Param("n_hit_images", None, int, "test images scored for part hits (None: all)", optional=True, low=2),
    Param("bs", 16, int, "inference batch size", low=1),
    Param("out_dir", None, str, f"where the PNGs and viz.json go (None: <api_run>/visualize; {_ROOT})",
          optional=True),
)
VISUALIZE_DEFAULTS = {p.name: p.default for p in VISUALIZE_PARAMS}


def check_visualize_params(**params) -> dict:
    """Validate visualize.ipynb's parameters (`VISUALIZE_PARAMS`, then their combinations) before any work."""
    p = check_against(VISUALIZE_PARAMS, params, Refused)
    for name in ("baseline_run", "api_run", "out_dir"):
        if p[name] is not None and not p[name].strip():
            raise Refused(f"parameter {name}={p[name]!r} is not valid: expected a folder path.")
    if p["synthetic"] and p["dataset"] not in (None, "synthetic"):
        raise Refused(f"parameter synthetic={p['synthetic']!r} is not valid: it only applies to dataset='synthetic'.")
    return p


def run(**params) -> dict:
    """Draw Fig. 3 for the Baseline's most confused pairs, Grad-CAM with ROAD, and part hits; write the PNGs and
    viz.json to `out_dir`. Returns viz.json's dict, with "out_dir" absolute ("figures": the PNG names there)."""
    from ..data.parts import discriminative_parts, read_parts
    p = check_visualize_params(**params)
    opened = open_runs(p["baseline_run"], p["api_run"], p["dataset"], p["data_path"], p["synthetic"], p["size"],
                       p["resize"], p["bs"])
    baseline, api, dls, root, vocab, p["dataset"], size, resize, baseline_run, api_run, _ = opened
    out = api_run / "visualize" if p["out_dir"] is None else resolve(p["out_dir"]).resolve()
    print(f"baseline_run: {shown(baseline_run)}\napi_run: {shown(api_run)}\nout_dir: {shown(out)}")
    has_parts = (root / "parts" / "part_locs.txt").is_file()
    part_locs = read_parts(root) if has_parts else None
    parts = discriminative_parts(root)  # {class_id: part ids} on the generated set; None (all visible) on CUB
    out.mkdir(parents=True, exist_ok=True)
    print(f"{p['dataset']} at {shown(root)}: {len(dls.valid_ds)} test images, {len(vocab)} classes; parts: "
          f"{'discriminative (synthetic.json)' if parts else 'all visible' if has_parts else 'none'}")

    figures, pair_info, ranking = [], [], None
    pairs = confused_pairs(baseline, k=p["n_pairs"], dl=dls.valid)
    for i, pair in enumerate(progress(pairs, "Fig. 3", "pairs"), start=1):
        x = load_batch(dls, pair.items)
        gates = gate_channels(api, x[:1], x[1:], k=p["k"])
        ranking = gates.ranking
        hw = tuple(gates.fmaps1.shape[-2:])
        if i == 1 and small_maps(hw, size, p["radius"]):
            # A line of its own, as the others: a Python warning would print the kernel's /tmp/ipykernel_* path with it.
            print("warning: " + small_maps(hw, size, p["radius"]), flush=True)
        marks = crop_parts(pair.items, part_locs, parts, size, resize) if has_parts else None
        fig = plot_gate_maps(api, baseline, x[:1], x[1:], gates=gates, labels=[pair.label_a, pair.label_b],
                             vocab=vocab, dls=dls, parts=marks)
        save_figure(fig, out / f"gates_pair{i}.png", kind="maps")
        figures.append(f"gates_pair{i}.png")
        note = tie_note(gates)
        pair_info.append({**pair.to_dict(), "channels_a": gates.channels1.tolist(),
                          "channels_b": gates.channels2.tolist(), "gates_a": gates.g1[gates.channels1].tolist(),
                          "gates_b": gates.g2[gates.channels2].tolist(),
                          "logits_a": gates.logits1[gates.channels1].tolist(),
                          "logits_b": gates.logits2[gates.channels2].tolist(), "ties_a": gates.ties1,
                          "ties_b": gates.ties2, "tie_note": note, "fmap_hw": list(gates.fmaps1.shape[-2:]),
                          "figure": f"gates_pair{i}.png"})
        print(f"pair {i}: {pair.class_a} vs {pair.class_b} ({pair.n_confused} confused); top-{p['k']} of "
              f"g1 {gates.channels1.tolist()}, g2 {gates.channels2.tolist()}" + (f"; {note}" if note else ""))

    # Grad-CAM of both models on the pair images (each once), with ROADCombined.
    items, labels = [], []
    for pair in pairs:
        for item, label in zip(pair.items, (pair.label_a, pair.label_b)):
            if item not in items:
                items.append(item)
                labels.append(label)
    x = load_batch(dls, items)
    cams = compare_gradcam(api, baseline, x, labels, percentiles=p["road_percentiles"])
    save_figure(plot_gradcam(x, labels, cams, vocab, dls), out / "gradcam.png", kind="maps")
    figures.append("gradcam.png")
    road = {"metric": "ROADCombined", "percentiles": list(p["road_percentiles"]),
            "score": "(LeRF - MoRF) / 2 of the softmax probability of the true class; higher is more faithful",
            "items": [shown(i) for i in items]}
    for name in ("api", "baseline"):
        road[name] = float(np.mean(cams[name]["road"]))
        road[f"{name}_per_image"] = cams[name]["road"].tolist()
        road[f"{name}_empty_maps"] = int(cams[name]["empty"].sum())  # all-zero Grad-CAM: ROAD about 0 by construction
    print("ROAD:", {name: round(road[name], 4) for name in ("api", "baseline")})

    part_hit_rate, part_hits_detail = None, None
    if has_parts:
        test_items = list(dls.split.loc[dls.split.is_valid, "path"])
        n = p["n_hit_images"]
        if n is not None and n < len(test_items):
            test_items = [test_items[i] for i in np.linspace(0, len(test_items) - 1, n).round().astype(int)]
        part_hit_rate = hit_rates(api, baseline, test_items, part_locs, parts, k=p["k"], dls=dls,
                                  radius=p["radius"], bs=p["bs"])
        part_hits_detail = part_hit_rate.pop("detail")
        part_hit_rate["parts"] = "discriminative (synthetic.json)" if parts else "all visible"
        save_figure(plot_hit_rates(part_hit_rate), out / "part_hits.png")
        figures.append("part_hits.png")
        for name in ("api_gate", "baseline_gate"):
            lo, hi = part_hit_rate[f"{name}_ci95"]
            print(f"part hits, {name}: {part_hit_rate[name]:.3f} (95% t interval {lo:.3f} to {hi:.3f}) vs chance "
                  f"{part_hit_rate['chance']:.3f}, over {part_hit_rate['n_images']} images")

    mean, std = (v.flatten().tolist() for v in normalize_stats(dls))
    viz_json = {"dataset": p["dataset"], "root": shown(root), "baseline_run": shown(baseline_run),
                "api_run": shown(api_run), "out_dir": shown(out), "size": size, "resize": resize,
                "normalization": {"mean": mean, "std": std}, "k": p["k"],
                "n_pairs": p["n_pairs"], "radius": p["radius"], "gate_ranking": ranking, "pairs": pair_info,
                "road": road, "part_hit_rate": part_hit_rate, "part_hits_detail": part_hits_detail,
                "figures": figures}
    write_json(out / "viz.json", viz_json)
    print(f"wrote {', '.join(figures)} and viz.json to {shown(out)}")
    return {**viz_json, "out_dir": str(out)}
