"""docs/demo.md, the demo's research log, rendered from what the demo recorded: every figure it quotes comes from
`reports/demo/demo.json`, the newest rerun beside it (`reports/demo/reruns/<date>.json`, a copy of another day's
demo.json) and visualize's `viz.json`, so the text cannot drift from them. The words are `docs/demo.template.md`,
its figures `${name}` fields (`fields`, filled by `string.Template`); `make demo` renders it again after the demo.

    python -m apikit.demodoc          # writes docs/demo.md
"""
import argparse
from string import Template

from .demo import OUT, summary_lines
from .paper import PAPER_GAIN
from .runs import atomic_write, read_json, resolve, shown

__all__ = ["TEMPLATE", "DOC", "fields", "render", "main"]

TEMPLATE, DOC = "docs/demo.template.md", "docs/demo.md"


def _ci(lo, hi):
    return f"[{lo:+.1f}, {hi:+.1f}]"


def _pct(x):
    return f"{100 * x:.1f}%"


def _span(seeds):
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))


def fields(out=OUT) -> dict:
    """The figures docs/demo.md quotes, as text, from the records under `out` (see the module's docstring)."""
    out = resolve(out)
    demo = read_json(out / "demo.json")
    reruns = sorted((out / "reruns").glob("*.json"))
    rerun = read_json(reruns[-1]) if reruns else None
    viz = read_json(out / "visualize" / "viz.json")
    hits = viz["part_hit_rate"]
    dev = demo["development"]
    gates = [g for p in viz["pairs"] for g in p["gates_a"] + p["gates_b"]]
    rate = lambda key: f"{_pct(hits[key])} [{100 * hits[key + '_ci95'][0]:.1f}, {100 * hits[key + '_ci95'][1]:.1f}]"
    baseline = list(demo["top1"]["Baseline"].values())
    f = dict(
        seeds=_span(demo["seeds"]), demo_json=shown(out / "demo.json"),
        printout="\n".join(summary_lines(demo["top1"], demo["seeds"], demo["verdict"], demo["split"])),
        baseline_mean=f"{sum(baseline) / len(baseline):.0f}", gain=f"{demo['gain']:+.1f}",
        interval=_ci(*demo["interval"]), width=f"{demo['interval'][1] - demo['interval'][0]:.1f}",
        upper=f"{demo['interval'][1]:+.1f}", n=str(demo["n"]), paper_gain=f"{PAPER_GAIN['table1']['API-Net']:+.1f}",
        dev_seeds=_span(dev["seeds"]), dev=f"{dev['gain']:+.1f} {_ci(*dev['interval'])}, n={dev['n']}",
        dev_cell=f"{dev['gain']:+.1f} {_ci(*dev['interval'])}, {dev['n']}", dev_baseline=f"{dev['baseline_top1']:.1f}",
        gates=f"{min(gates):.2f} and {max(gates):.2f}", k=str(hits["k"]),
        api_gate=rate("api_gate"), api_peaks=f"{hits['api_gate_n_peaks']:,}", n_images=f"{hits['n_images']:,}",
        chance=_pct(hits["chance"]), baseline_gate=rate("baseline_gate"),
        baseline_flat=f"{hits['baseline_gate_flat_maps']:,}", api_own=_pct(hits["api_own"]),
        baseline_own=_pct(hits["baseline_own"]), fmap="{} x {}".format(*hits["fmap_hw"]))
    if rerun is not None:
        lines = summary_lines(rerun["top1"], rerun["seeds"], rerun["verdict"], rerun["split"])
        f.update(rerun_date=reruns[-1].stem, rerun_json=shown(reruns[-1]), rerun_gain=f"{rerun['gain']:+.1f}",
                 rerun_printout="\n".join(lines[1:4]),  # the arms' rows and the verdict
                 upper_both=f"{max(demo['interval'][1], rerun['interval'][1]):+.1f}")
    return f


def render(out=OUT, template=TEMPLATE) -> str:
    """docs/demo.md's text: the template with every `${name}` filled from `fields(out)`."""
    values = fields(out)
    try:
        return Template(resolve(template).read_text(encoding="utf-8")).substitute(values)
    except KeyError as e:
        raise ValueError(f"{template} asks for {e.args[0]}, which the demo's records do not give: fields are "
                         f"{', '.join(values)}") from None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m apikit.demodoc", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT, help="the demo's report folder (default: reports/demo)")
    args = ap.parse_args(argv)
    text, doc = render(args.out), resolve(DOC)
    if not doc.is_file() or doc.read_text(encoding="utf-8") != text:
        atomic_write(doc, text.encode())
        print(f"wrote {shown(doc)} from {shown(resolve(args.out))}'s records")
    else:
        print(f"{shown(doc)} already says what {shown(resolve(args.out))}'s records hold")


if __name__ == "__main__":
    main()
