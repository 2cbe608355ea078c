"""Gather the parts of `gpu_check.sh` into one JSON: the CUDA tests, the fastai step beside the plain-torch
step, the 16 GB verdicts and the data pipeline, with the overhead ratios.

    python benchmarks/gpu_summary.py WORK_DIR OUT_JSON

WORK_DIR holds what the parts wrote: parts.tsv (name, exit status, seconds per part), cuda_tests.xml
(pytest's JUnit XML), bench_fastai_gpu.json, bench_gpu.json and bench_pipeline.json; a part that did
not finish leaves its file partial or absent, and the summary says so. Standard library only.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def parts(work):
    """{part: {rc, seconds, timed_out}} from parts.tsv."""
    out = {}
    for line in (work / "parts.tsv").read_text().splitlines() if (work / "parts.tsv").exists() else []:
        name, rc, seconds = line.split("\t")
        out[name] = {"rc": int(rc), "seconds": float(seconds), "timed_out": int(rc) in (124, 137)}
    return out


def cuda_tests(xml):
    """Counts and each test's outcome (with the first line of its message when it did not pass)."""
    if not xml.exists():
        return None
    tests, counts = {}, {"passed": 0, "failed": 0, "skipped": 0}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name, outcome, message = case.get("name"), "passed", ""
        for tag, what in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                outcome, message = what, (el.get("message") or "").splitlines()[0][:300] if el.get("message") else ""
                break
        counts[outcome] += 1
        tests[name] = {"outcome": outcome, "seconds": float(case.get("time") or 0), **({"message": message} if message else {})}
    return {**counts, "tests": tests}


def steps(fastai, plain):
    """Per configuration: the fastai step and the plain-torch step, and their ratio."""
    fastai_res, plain_res = (fastai or {}).get("results", {}), (plain or {}).get("results", {})
    keep = ("images_per_s", "median_s", "peak_allocated_gib", "peak_reserved_gib", "mfu", "error")
    out = {}
    for name in list(fastai_res) + [n for n in plain_res if n not in fastai_res]:
        row = {}
        for who, res in (("fastai", fastai_res.get(name)), ("plain_torch", plain_res.get(name))):
            if res is not None:
                row[who] = {k: res[k] for k in keep if res.get(k) is not None}
        f, t = row.get("fastai", {}), row.get("plain_torch", {})
        if "median_s" in f and "median_s" in t:
            row["fastai/plain_torch"] = f["median_s"] / t["median_s"]
        out[name] = row
    return out


def ratios(table):
    """API-Net step / Baseline step, for fastai and plain torch, per arch and setting; fastai / plain torch."""
    out = {}
    for name, row in table.items():
        arch, setting = name.split("/", 1)
        if setting.startswith("baseline_"):
            continue
        base = table.get(f"{arch}/baseline_{setting}", {})
        for who in ("fastai", "plain_torch"):
            a, b = row.get(who, {}), base.get(who, {})
            if "median_s" in a and "median_s" in b:
                out[f"{who}: {name} api_net/baseline"] = a["median_s"] / b["median_s"]
    for name, row in table.items():
        if "fastai/plain_torch" in row:
            out[f"{name} fastai/plain_torch"] = row["fastai/plain_torch"]
    return out


def main():
    work, dest = Path(sys.argv[1]), Path(sys.argv[2])
    fastai, plain = load(work / "bench_fastai_gpu.json"), load(work / "bench_gpu.json")
    pipeline = load(work / "bench_pipeline.json")
    table = steps(fastai, plain)
    summary = {
        "device": next((r["device"] for r in (fastai, plain, pipeline) if r and "device" in r), None),
        "machine": next((r["machine"] for r in (fastai, pipeline) if r and "machine" in r), None),
        "parts": parts(work),
        "cuda_tests": cuda_tests(work / "cuda_tests.xml"),
        "step": table,
        "ratios": ratios(table),
        "resnet101_30x4_448_fits_16GB": {
            "fastai": (fastai or {}).get("resnet101_30x4_448_fits_16GB"),
            "plain_torch": (plain or {}).get("resnet101_30x4_448_fits_16GB"),
            "plain_torch_under_15GiB_cap": {n: "error" not in r for n, r in
                                            (plain or {}).get("resnet101_under_15GiB_cap", {}).items()} or None},
        "plain_torch_selfcheck_max_rel_grad_error": (plain or {}).get("selfcheck_max_rel_grad_error"),
        "pipeline": pipeline and {"params": {k: pipeline["params"].get(k) for k in (
            "arch", "draw", "resize", "size", "n_classes", "n_images", "n_train", "epochs", "precision", "channels_last")},
            "draw_s": pipeline.get("draw_s"), **pipeline.get("results", {})},
        "missing": [f for f in ("cuda_tests.xml", "bench_fastai_gpu.json", "bench_gpu.json", "bench_pipeline.json")
                    if not (work / f).exists()],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(summary, indent=1) + "\n")
    t = summary["cuda_tests"]
    print(f"CUDA tests: {t and {k: t[k] for k in ('passed', 'failed', 'skipped')}}")
    for k, v in summary["ratios"].items():
        print(f"  {k:55s} {v:.3f}")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
