"""visualize.ipynb's results in the report: Fig. 3 (the gate's top channels, API-Net beside the Baseline) and how often
a top channel's peak lands on a part, against chance, read from the `viz.json` in its out_dir.

The report shows the figures from its own folder, so that it can be moved: those of a visualize folder outside it
are copied into its figures/ (named for that folder), those inside it are linked where they are. Rates are
percentages with their 95% t interval over images as [lo, hi] and n, as viz.json records them. Without a visualize
folder, the report says which command draws Fig. 3 from its runs (`fig3_hint`).
"""
import json
import os
from pathlib import Path

import pandas as pd

from ..runs import atomic_write, resolve, shown
from .outdir import FIGURES, figure_stem

__all__ = ["read_viz", "find_viz", "part_hits_table", "visualize_section", "fig3_hint", "FIG3"]

FIG3 = "Fig. 3: the gate's top channels, API-Net beside the Baseline"

# viz.json's part_hit_rate: the gate's top-k channels of API-Net, the Baseline's maps at the same channel ids (as
# Fig. 3 compares them), and each model's own top-k channels by mean activation.
HIT_ROWS = (("api_gate", "API-Net, its gate's top channels"), ("baseline_gate", "Baseline, at the same channel ids"),
            ("api_own", "API-Net, its own top channels"), ("baseline_own", "Baseline, its own top channels"))


def read_viz(folder):
    """The viz.json of visualize.ipynb's out_dir `folder` as a dict, or an error naming the folder and the fix."""
    path = Path(folder) / "viz.json"
    if not path.is_file():
        raise FileNotFoundError(f"visualize={str(folder)!r}: {path} does not exist; point it at the out_dir of a "
                                "finished visualize.ipynb (it writes viz.json there), or leave it None.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e}); run visualize.ipynb again.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; run visualize.ipynb again.")
    return data


def _pct(v, signed=False):
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def _rate(rates, key, signed=False, unit=""):
    """'37.5% [33.5, 41.5]': a rate (or a difference, `signed`) in percent with its 95% interval."""
    lo, hi = rates[f"{key}_ci95"]
    return f"{_pct(rates[key], signed)}{unit} [{_pct(lo, signed)}, {_pct(hi, signed)}]"


def part_hits_table(rates):
    """viz.json's part_hit_rate as a table: per kind of map, the hit rate and its margin over chance (points), each
    with its 95% interval, and n."""
    rows = [{"maps": label, "on a part, % [95% CI]": _rate(rates, key),
             "above chance, points [95% CI]": _rate(rates, f"{key}_above_chance", signed=True),
             "n (images)": rates.get(f"{key}_n_images", rates.get("n_images")),
             "peaks scored": rates.get(f"{key}_n_peaks", "—"), "flat maps (no peak)": rates.get(f"{key}_flat_maps", "—")}
            for key, label in HIT_ROWS if key in rates and f"{key}_ci95" in rates]
    return pd.DataFrame(rows, columns=["maps", "on a part, % [95% CI]", "above chance, points [95% CI]", "n (images)",
                                       "peaks scored", "flat maps (no peak)"])


def find_viz(root):
    """The visualize folders (each holding a viz.json) under `root`, in order: visualize.ipynb writes into
    `<api_run>/visualize` unless told otherwise, so those of the runs are found beside them."""
    return sorted(p.parent for p in Path(root).rglob("viz.json") if p.is_file())


def _place(folder, name, out, copies):
    """The link from the report's folder `out` to the figure `folder/name`: where it is when `folder` is inside
    `out` (it moves with the report), else to a copy in out/figures/ named for `folder` (two visualize folders never
    collide), appended to `copies`."""
    src, folder, out = Path(folder) / name, Path(folder).resolve(), Path(out).resolve()
    if folder.is_relative_to(out):
        return Path(os.path.relpath(src.resolve(), out)).as_posix()
    dst = out / FIGURES / (figure_stem(Path(name).stem.lower(), str(folder), paper=False) + ".png")
    dst.parent.mkdir(parents=True, exist_ok=True)
    copies.append(atomic_write(dst, src.read_bytes()))
    return f"{FIGURES}/{dst.name}"


def _atlas(viz, pairs, folder, out, copies):
    """The blocks of the channel atlas of pair 1's top gate channel, drawn from the channel statistics explore.ipynb
    cached beside both runs (none when it has not, or the runs' models changed since); its figure added to `copies`."""
    channels = (pairs[0].get("channels_a") if pairs else None) or []
    if not (channels and all(viz.get(k) for k in ("api_run", "baseline_run", "size", "resize"))):
        return []
    from ..figure import save_figure
    from ..viz.channels import cached_atlas
    c = int(channels[0])
    drawn = cached_atlas(resolve(viz["api_run"]), resolve(viz["baseline_run"]), c, int(viz["size"]),
                         int(viz["resize"]), resolve(viz["root"]) if viz.get("root") else None)
    if drawn is None:
        return []
    fig, notes = drawn
    dst = out / FIGURES / (figure_stem("atlas", str(Path(folder).resolve()), paper=False) + ".png")
    copies.append(save_figure(fig, dst, kind="maps"))
    skipped = f" Skipped: {'; '.join(notes)}." if notes else ""
    return [("h", 3, f"Channel {c}, pair 1's top gate channel, over the test split"),
            ("p", f"From the channel statistics `explore.ipynb` cached beside both runs: the test images on which "
                  f"channel {c} fires most (by its mean activation) with its map over each (+: the peak), for API-Net "
                  "and, at the same channel id, the Baseline; beside them the channel's mean gate value g1 per class "
                  "(API-Net: each image paired with its most similar image of another class, as in training) or mean "
                  "activation per class (the Baseline), and how often its peak lands on a part against chance, with "
                  f"the 95% t interval over images.{skipped}"),
            ("img", f"{FIGURES}/{dst.name}", f"channel atlas of channel {c}")]


def visualize_section(folder, out):
    """The report's blocks for visualize.ipynb's out_dir `folder`: Fig. 3 with how it was drawn, then the part hits
    (figure, numbers, table) when viz.json has them; and the figures copied into the report's folder `out`."""
    viz, copies = read_viz(folder), []
    k, pairs = viz.get("k", 5), [p for p in viz.get("pairs", []) if isinstance(p, dict) and p.get("figure")]
    if not pairs:  # a viz.json that does not name each pair's figure: its list of figures
        pairs = [{"figure": f} for f in viz.get("figures", []) if str(f).startswith("gates_pair")]
    doc = [("h", 2, FIG3),
           ("p", f"From `visualize.ipynb` on the API-Net run `{shown(viz.get('api_run'))}` and the Baseline run "
                 f"`{shown(viz.get('baseline_run'))}`: for each of the Baseline's {len(pairs)} most confused class "
                 f"pairs, API-Net's feature maps at the top {k} channels of its gate (g1 / g2 of Eq. 2, ranked by "
                 "the gate's pre-sigmoid value x_m * x_i) and, below them, the Baseline's maps at the same channel "
                 "ids. White circles: the parts that count for that image; +: each map's peak (a flat map, all one value, has "
                 "none).")]
    for i, p in enumerate(pairs, start=1):
        if (Path(folder) / p["figure"]).is_file():
            classes = f": {p['class_a']} and {p['class_b']}" if "class_a" in p and "class_b" in p else ""
            doc.append(("img", _place(folder, p["figure"], out, copies), f"Fig. 3, pair {i}{classes}"))
    doc += _atlas(viz, pairs, folder, out, copies)
    rates = viz.get("part_hit_rate")
    if not isinstance(rates, dict) or "api_gate" not in rates:
        return doc, copies
    hw = rates.get("fmap_hw") or viz.get("fmap_hw") or ["?", "?"]
    doc += [("h", 3, "Where a top gate channel peaks: on a part, against chance"),
            ("p", f"A top gate channel's peak lands on a part in {_rate(rates, 'api_gate', unit='%')} of API-Net's "
                  f"{rates.get('api_gate_n_peaks', rates.get('n_peaks'))} peaks, against {_pct(rates['chance'])}% "
                  f"for a peak at a random cell (chance): {_rate(rates, 'api_gate_above_chance', signed=True)} points "
                  f"above chance. The Baseline's maps at the same channel ids: "
                  f"{_rate(rates, 'baseline_gate', unit='%')}, {_rate(rates, 'baseline_gate_above_chance', signed=True)}"
                  f" points above chance. A flat map (all one value, e.g. a ReLU channel that is 0 on the whole image) "
                  f"has no peak and is not scored: {rates.get('api_gate_flat_maps', 0)} of API-Net's maps and "
                  f"{rates.get('baseline_gate_flat_maps', 0)} of the Baseline's (see the table). Intervals: 95% t "
                  f"over the test images (n in the table), as [lo, hi]. A hit is a peak within "
                  f"{rates.get('radius', viz.get('radius'))} cell of a part on the {hw[0]} x {hw[1]} map; parts: "
                  f"{rates.get('parts', 'as recorded')}."),
            ("table", part_hits_table(rates))]
    if (Path(folder) / "part_hits.png").is_file():
        doc.append(("img", _place(folder, "part_hits.png", out, copies),
                    "part hits: API-Net and the Baseline against chance"))
    return doc, copies


def fig3_hint(table1, root):
    """The blocks that say where Fig. 3 would come from, when no visualize folder is shown: visualize.ipynb on a
    Baseline and an API-Net run of one setting and seed (from Table 1's cells `table1`, `ablation_stats`), whose
    folder the next report finds by itself. Run folders are shown relative to the project root."""
    pair = None
    for _, block in table1.groupby("setting", sort=False):
        cells = {r["row"]: dict(zip(r["seeds"], r["run_dirs"])) for _, r in block.iterrows()}
        base, api = cells.get("Baseline", {}), cells.get("API-Net", {})
        seed = next((s for s in api if s in base), None)
        if seed is not None:
            pair = base[seed], api[seed]
            break
    runs = ("<run_dir of a Baseline>", "<run_dir of API-Net, same setting and seed>") if pair is None else \
        tuple(shown(Path(d).resolve()) for d in pair)
    return [("h", 2, FIG3),
            ("p", "Not drawn: no visualize folder (a viz.json) was found under the runs. visualize.ipynb draws it from a "
                  "Baseline and an API-Net run of one setting" + ("" if pair else " (none is finished yet)") + " into "
                  "`<api_run>/visualize`, where the next report finds it (or pass `-p visualize FOLDER`):"),
            ("code", f"papermill --log-output notebooks/visualize.ipynb /tmp/visualize.ipynb -p baseline_run {runs[0]} "
                     f"-p api_run {runs[1]}")]
