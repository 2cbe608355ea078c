"""The user's training step on a GPU: `api_learner(...)` and `learn.fit`, API-Net against the Baseline.

    python benchmarks/bench_fastai_gpu.py             # CUDA: ResNet-50/101, 448 px, 30 x 4 (driven by gpu_check.sh)
    python benchmarks/bench_fastai_gpu.py --dry-run   # tiny sizes on the CPU, to check that the script runs

For each configuration (the names of `bench_gpu.py`, so that the two line up: `bf16_cl` is bf16 autocast
through fastai's MixedPrecision + channels_last, `fp32`, `_chunk30` the gradient cache with
`chunk_size=30`, `baseline_` is `api=False`) it builds the Learner the user builds
(`api_learner(dls, arch, pretrained=False, api, precision, channels_last, chunk_size)`) and times its
training steps in `learn.fit`: everything fastai does from `before_batch` to `after_batch` (the callbacks,
forward, pair mining and API module or plain classifier, loss, backward, SGD step), wall clock between
`torch.cuda.synchronize()` calls, median after warm-up steps, with `cudnn.benchmark` on; and the peak
memory of the fit (allocated and reserved by PyTorch's caching allocator). The batch is one batch of
the real pipeline (`apikit.data.get_dls("synthetic")`, class-balanced, normalised on the GPU), fed again
at every step, so that data loading is not in the step (`bench_pipeline.py` measures it).
Writes reports/perf/bench_fastai_gpu.json (or --out) after every configuration.
"""
import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch

from _common import add_step_args, dry_run_sizes, machine, step_timer, summary, synthetic_dls
from bench_gpu import FITS_16GB, GIB
from apikit.runs import write_json


class FixedBatches:
    """A training 'loader' for fastai's Learner that yields the same device batch `n` times."""

    def __init__(self, xb, yb, n):
        self.xb, self.yb, self.n = xb, yb, n

    def __iter__(self):
        for _ in range(self.n):
            yield self.xb, self.yb

    def __len__(self):
        return self.n

    def to(self, device):
        self.xb, self.yb = self.xb.to(device), self.yb.to(device)
        return self


def configs(args):
    """name -> api_learner options; the same names as `bench_gpu.configs`."""
    chunk = 5 if args.dry_run else 30

    def cfg(arch, precision="bf16", cl=True, chunk=None, api=True):
        return {"arch": arch, "api": api, "precision": precision, "channels_last": cl, "chunk": chunk}
    if args.dry_run:
        a = args.archs[0]
        return {f"{a}/bf16_cl": cfg(a), f"{a}/baseline_bf16_cl": cfg(a, api=False),
                f"{a}/fp32_chunk{chunk}": cfg(a, "fp32", False, chunk=chunk)}
    out = {}
    for a in args.archs:
        out[f"{a}/bf16_cl"] = cfg(a)
        out[f"{a}/baseline_bf16_cl"] = cfg(a, api=False)
        out[f"{a}/bf16_cl_chunk{chunk}"] = cfg(a, chunk=chunk)
    for a in args.archs:  # fp32 last: the likeliest to run out of memory
        out[f"{a}/fp32"] = cfg(a, "fp32", False)
        out[f"{a}/baseline_fp32"] = cfg(a, "fp32", False, api=False)
        if a == args.archs[-1]:
            out[f"{a}/fp32_chunk{chunk}"] = cfg(a, "fp32", False, chunk=chunk)
    return out


def run_config(cfg, dls, batch, args, device):
    """Step times (median after warm-up), images/s and peak memory of one configuration's `learn.fit`."""
    from fastai.data.core import DataLoaders
    from fastai.torch_core import set_seed
    from apikit.learner import api_learner
    set_seed(0)
    learn = api_learner(dls, arch=cfg["arch"], pretrained=False, api=cfg["api"], precision=cfg["precision"],
                        channels_last=cfg["channels_last"], chunk_size=cfg["chunk"])
    learn.dls = DataLoaders(FixedBatches(*batch, args.warmup + args.steps), FixedBatches(*batch, 1), device=device)
    timer = step_timer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    error = None
    try:
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-3, cbs=timer)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or cuDNN failing to get its workspace
        if "out of memory" not in str(e).lower():
            raise
        error = "out of memory"
    res = {**cfg}
    if device.type == "cuda":
        res["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        res["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
    del learn
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if error:
        return {**res, "error": error}
    times = timer.times[args.warmup:]
    res.update(summary(times))
    res["images_per_s"] = len(batch[1]) / res["median_s"]
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_args(p, "bench_fastai_gpu", 2)
    args = p.parse_args()
    dry_run_sizes(args, 2)
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry-run to check the script on a CPU")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              "cpu (dry run)", "params": vars(args), "results": {}}

    def save():  # after every configuration, so that a run stopped by its time limit keeps what it measured
        write_json(out, report)

    with tempfile.TemporaryDirectory() as tmp:
        # Drawn small and squish-resized to `size`: the step's speed does not depend on the pictures.
        dls = synthetic_dls(tmp, args.n_classes, args.n_images, args.size, draw=64, device=device)
        xb, yb = dls.one_batch()
        batch = (xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor))
        assert xb.shape[-1] == args.size, xb.shape
        print(f"{report['device']}, torch {torch.__version__}, fastai step, batch {args.n_classes}x{args.n_images} "
              f"at {args.size} px", flush=True)
        for name, cfg in configs(args).items():
            t0 = time.perf_counter()
            res = report["results"][name] = run_config(cfg, dls, batch, args, device)
            mem = f"{res['peak_reserved_gib']:6.1f} GiB reserved" if "peak_reserved_gib" in res else ""
            what = res["error"] if "error" in res else f"{1e3 * res['median_s']:8.1f} ms  {res['images_per_s']:7.1f} img/s"
            print(f"  {name:28s} {what}  {mem}  ({time.perf_counter() - t0:.0f} s)", flush=True)
            save()
    results, ratios = report["results"], {}
    for name, res in results.items():
        arch, setting = name.split("/", 1)
        base = results.get(f"{arch}/baseline_{setting}", {})
        if res["api"] and "median_s" in res and "median_s" in base:
            ratios[f"{name}/baseline"] = res["median_s"] / base["median_s"]
    report["ratios"] = ratios
    if device.type == "cuda":
        report["resnet101_30x4_448_fits_16GB"] = {
            n: ("error" not in r and r["peak_reserved_gib"] <= FITS_16GB / GIB) for n, r in results.items()
            if n.startswith("resnet101/") and r["api"]}
    for k, v in ratios.items():
        print(f"  {k:40s} {v:.3f}")
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
