"""GPU figures for the paper's setting (30 classes x 4 images at 448 px), in plain torch (no fastai).

    python3 benchmarks/bench_gpu.py                 # on a CUDA machine (driven by benchmarks/gpu_check.sh)
    python3 benchmarks/bench_gpu.py --dry-run       # tiny sizes on the CPU, to check that the script runs

For ResNet-50 and ResNet-101 it times the API-Net training step (backbone -> pair mining -> API module
-> Eq. 8 -> backward -> SGD step: `apikit.model.FineGrainedNet` and `apikit.step.pair_step`, as
APICallback runs them) in several configurations: fp32 (convolutions
in TF32, PyTorch's default), bf16 autocast + channels_last, and the gradient cache (`apikit.gradcache`)
with a few chunk sizes, plus the Baseline step (CE on the plain classifier) for the API-Net/Baseline
ratio. For each: median step time, images/s, peak GPU memory (allocated and reserved by PyTorch's
caching allocator), and model FLOP utilisation: 3 x the backbone's forward FLOPs (counted by
`torch.utils.flop_counter`) x the batch, per step time, over the GPU's dense peak (bf16, or TF32 for
fp32). The gradient cache's recompute is not counted in the model FLOPs (its hardware FLOPs are
4 x forward). It also says which ResNet-101 configurations fit in 16 GB: peak reserved <= 15 GiB (leaving room
for the CUDA context), and, for those within 24 GiB, whether they run with PyTorch's allocator capped
at 15 GiB (cuDNN chooses its algorithms by the memory free, so a big card's peak can overstate a small
card's). Inputs are random tensors already on the GPU: data loading is not
measured. Before timing, a self-check compares chunked and full-batch gradients on the GPU and checks
that the recompute reproduces CUDA dropout masks.

apikit.api, apikit.model, apikit.step and apikit.gradcache import no fastai, so nothing beyond PyTorch
and torchvision is needed: run from the repository root with PYTHONPATH=. (or apikit installed).
Writes reports/perf/bench_gpu.json (or --out).
"""
import argparse
import copy
import gc
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from apikit.api import APIModule  # noqa: E402
from apikit.gradcache import enable_gradient_cache  # noqa: E402
from apikit.model import FineGrainedNet, create_backbone  # noqa: E402
from apikit.runs import write_json  # noqa: E402
from apikit.step import pair_step  # noqa: E402
from _common import add_step_args, dry_run_sizes  # noqa: E402  (plain torch, like this script)

# Dense (no sparsity) tensor-core peaks, FLOP/s, from NVIDIA's data sheets (SXM parts).
PEAKS = {"H100": {"bf16": 989.4e12, "tf32": 494.7e12}, "H200": {"bf16": 989.4e12, "tf32": 494.7e12},
         "A100": {"bf16": 312e12, "tf32": 156e12}}
GIB = 2 ** 30
FITS_16GB = 15 * GIB  # peak reserved, leaving about 1 GiB of a 16 GB card to the CUDA context


def make_net(arch, n_classes, api=True, dropout=0.5):
    """The network `apikit.learner.api_learner` builds (`apikit.model.FineGrainedNet`), with `api` attached
    as `APICallback` attaches it; random weights: the speed does not depend on them."""
    body, dim, _ = create_backbone(arch, pretrained=False, size=64)
    model = FineGrainedNet(body, dim, n_classes, dropout)
    if api:
        model.api = APIModule(dim, dropout=dropout)
    return model


def api_net_loss(model, x, y):
    """APICallback's loss: the pooled features through `apikit.step.pair_step` (fixed-size pairs, no host sync)."""
    return pair_step(model, model.pool(model.body(x)), y)[0]


def baseline_loss(model, x, y):
    return F.cross_entropy(model(x).float(), y)


def backbone_flops(arch, size):
    """Forward FLOPs of the backbone for one image (2 per multiply-add), counted on the meta device."""
    with torch.device("meta"):
        body = create_backbone(arch, pretrained=False, size=size)[0].eval()
        x = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        body(x)
    return counter.get_total_flops()


def peak_flops(device, override):
    if override:
        return {"bf16": override * 1e12, "tf32": override * 1e12}
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def run_config(cfg, args, device):
    """Median step time and peak memory of one configuration; {'error': 'out of memory'} if it does not fit."""
    torch.manual_seed(0)
    b = args.n_classes * args.n_images
    x = torch.randn(b, 3, args.size, args.size, device=device)
    y = torch.arange(args.n_classes, device=device).repeat_interleave(args.n_images)
    model = make_net(cfg["arch"], args.n_classes, api=cfg["api"]).to(device).train()
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    if cfg["chunk"]:
        enable_gradient_cache(model, cfg["chunk"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    loss_fn = api_net_loss if cfg["api"] else baseline_loss
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")

    def step():
        with torch.autocast(**amp):
            loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, oom = [], False
    try:
        for _ in range(args.warmup):
            step()
        for _ in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or cuDNN failing to get its workspace
        if "out of memory" not in str(e).lower():
            raise
        oom = True
    model = opt = x = y = step = None  # free the memory before the next configuration
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if oom:
        return {"error": "out of memory"}
    res = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}
    res["images_per_s"] = b / res["median_s"]
    if device.type == "cuda":
        res["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        res["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
    return res


def configs(args):
    """The configurations timed: name -> arch, api, precision, channels_last, chunk."""
    def cfg(arch, precision="bf16", cl=True, chunk=None, api=True):
        return {"arch": arch, "api": api, "precision": precision, "channels_last": cl, "chunk": chunk}
    if args.dry_run:
        a = args.archs[0]
        return {f"{a}/bf16_cl": cfg(a), f"{a}/baseline_bf16_cl": cfg(a, api=False),
                f"{a}/bf16_cl_chunk5": cfg(a, chunk=5), f"{a}/fp32": cfg(a, "fp32", False)}
    out = {}
    for a in args.archs:
        out[f"{a}/bf16_cl"] = cfg(a)
        out[f"{a}/baseline_bf16_cl"] = cfg(a, api=False)
        out[f"{a}/bf16_cl_chunk30"] = cfg(a, chunk=30)
        if a == "resnet101":  # the 16 GB question
            out[f"{a}/bf16_cl_chunk15"] = cfg(a, chunk=15)
            out[f"{a}/fp32_chunk15"] = cfg(a, "fp32", False, chunk=15)
            out[f"{a}/fp32_chunk8"] = cfg(a, "fp32", False, chunk=8)
    for a in args.archs:  # last: the likeliest to run out of memory
        out[f"{a}/fp32"] = cfg(a, "fp32", False)
        out[f"{a}/baseline_fp32"] = cfg(a, "fp32", False, api=False)
    return out


def selfcheck(device):
    """On `device`: chunked gradients equal full-batch ones (BatchNorm eval, no dropout), and the recompute
    reproduces the forward's dropout masks (train mode). Returns the largest relative gradient error."""
    torch.manual_seed(0)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        model = make_net("resnet18", 4, dropout=0.0).to(device).train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        chunked = enable_gradient_cache(copy.deepcopy(model), 5)
        x = torch.randn(12, 3, 64, 64, device=device)
        y = torch.arange(4, device=device).repeat_interleave(3)
        for m in (model, chunked):
            api_net_loss(m, x, y).backward()
        err = 0.0
        for (name, p), q in zip(model.named_parameters(), chunked.parameters()):
            err = max(err, ((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12)).item())
        # Dropout inside the backbone: the chunked gradient must equal that of the same chunks run with a graph.
        body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Dropout(0.5), nn.Conv2d(8, 8, 3)).to(device).train()
        ref = copy.deepcopy(body)
        from apikit.gradcache import GradCache
        cache = GradCache(body, 5)
        torch.manual_seed(1)
        cache(x).square().sum().backward()
        torch.manual_seed(1)
        torch.cat([ref(c) for c in x.split(5)]).square().sum().backward()
        for p, q in zip(body.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if err > 1e-4:
        raise AssertionError(f"chunked gradients differ from the full batch's by {err:.2e} (relative)")
    return err


def memory_verdict(report, args, device, save):
    """Which ResNet-101 API-Net settings fit in 16 GB: by peak reserved, and by running under a 15 GiB cap."""
    results = report["results"]
    fits = {n: r["peak_reserved_gib"] <= FITS_16GB / GIB for n, r in results.items()
            if n.startswith("resnet101/") and r.get("api") and "peak_reserved_gib" in r}
    fits.update({n: False for n, r in results.items() if n.startswith("resnet101/") and "error" in r})
    report["resnet101_30x4_448_fits_16GB"] = fits
    save()
    # cuDNN picks algorithms by the memory free, so a big card's peak can overstate a small card's: rerun
    # the near misses with PyTorch's allocator capped at 15 GiB, as on a 16 GB card.
    capped = report["resnet101_under_15GiB_cap"] = {}
    near = [n for n, r in results.items() if n.startswith("resnet101/") and r.get("api")
            and "peak_reserved_gib" in r and r["peak_reserved_gib"] <= 24]
    torch.cuda.set_per_process_memory_fraction(FITS_16GB / torch.cuda.get_device_properties(device).total_memory)
    try:
        short = argparse.Namespace(**{**vars(args), "warmup": 2, "steps": 3})
        for name in near:
            res = run_config(configs(args)[name], short, device)
            capped[name] = res
            print(f"  15 GiB cap: {name:28s} " + (res["error"] if "error" in res else
                  f"runs, {1e3 * res['median_s']:.1f} ms, {res['peak_reserved_gib']:.1f} GiB reserved"), flush=True)
            save()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_args(p, "bench_gpu", 1)
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense peak, if not an A100/H100/H200")
    args = p.parse_args()
    dry_run_sizes(args, 1)
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # steadier on a shared machine; the CPU figures mean nothing anyway
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry-run to check the script on a CPU")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    peaks = peak_flops(device, args.peak_tflops)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "params": vars(args), "peak_flops": peaks}
    print(f"{report['device']}, torch {torch.__version__}, batch {args.n_classes}x{args.n_images} at {args.size} px",
          flush=True)
    report["selfcheck_max_rel_grad_error"] = selfcheck(device)
    print(f"self-check: chunked vs full-batch gradients, max relative error {report['selfcheck_max_rel_grad_error']:.1e}; "
          "dropout masks reproduced", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every configuration, so that a run stopped by its time limit keeps what it measured
        write_json(out, report)

    b = args.n_classes * args.n_images
    flops = {a: backbone_flops(a, args.size) for a in args.archs}
    report["backbone_forward_gflops_per_image"] = {a: f / 1e9 for a, f in flops.items()}
    results = report["results"] = {}
    for name, cfg in configs(args).items():
        t0 = time.perf_counter()
        res = {**cfg, **run_config(cfg, args, device)}
        if "median_s" in res:
            model_flops = 3 * flops[cfg["arch"]] * b
            res["model_tflops_per_s"] = model_flops / res["median_s"] / 1e12
            peak = peaks and peaks["bf16" if cfg["precision"] == "bf16" else "tf32"]
            res["mfu"] = model_flops / res["median_s"] / peak if peak else None
            if cfg["chunk"]:
                res["hfu"] = 4 / 3 * res["mfu"] if peak else None  # with the recompute's forward
        results[name] = res
        mem = f"{res['peak_reserved_gib']:6.1f} GiB reserved" if "peak_reserved_gib" in res else ""
        if "error" in res:
            print(f"  {name:28s} {res['error']}", flush=True)
        else:
            mfu = f"MFU {100 * res['mfu']:5.1f}%" if res.get("mfu") else ""
            print(f"  {name:28s} {1e3 * res['median_s']:8.1f} ms  {res['images_per_s']:7.1f} img/s  {mem}  {mfu}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        save()

    ratios = {}
    for a in args.archs:
        api, base = results.get(f"{a}/bf16_cl", {}), results.get(f"{a}/baseline_bf16_cl", {})
        if "median_s" in api and "median_s" in base:
            ratios[f"{a}/api_net/baseline (bf16_cl)"] = api["median_s"] / base["median_s"]
        for name, res in results.items():
            if name.startswith(f"{a}/") and res.get("chunk") and "median_s" in res:
                plain = results.get(f"{a}/{res['precision']}" + ("_cl" if res["channels_last"] else ""), {})
                if "median_s" in plain:
                    ratios[f"{name}/unchunked"] = res["median_s"] / plain["median_s"]
    report["ratios"] = ratios
    if device.type == "cuda":
        memory_verdict(report, args, device, save)
    for k, v in ratios.items():
        print(f"  {k:40s} {v:.3f}")
    if "resnet101_30x4_448_fits_16GB" in report:
        ok = [n for n, f in report["resnet101_30x4_448_fits_16GB"].items() if f]
        print(f"  fits in 16 GB (peak reserved <= 15 GiB): {', '.join(ok) or 'none'}")
        ok = [n for n, r in report["resnet101_under_15GiB_cap"].items() if "error" not in r]
        print(f"  runs under a 15 GiB allocator cap: {', '.join(ok) or 'none'}")
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
