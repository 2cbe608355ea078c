"""One training step of API-Net against Table 1's Baseline, on the same backbone, batch and input,
through the real fastai path: `api_learner(...)` (APICallback) against `api_learner(..., api=False)`.

    python benchmarks/bench_step.py            # CPU: resnet18, 112 px, 8 x 4 batch
    python benchmarks/bench_step.py --gpu      # CUDA: resnet101, 448 px, 30 x 4 batch (needs fastai there)

A step is everything fastai does between `before_batch` and `after_batch`: forward, pair mining and
the API module (API-Net) or the plain classifier (Baseline), the loss, backward, the SGD step and
zero_grad, timed by wall clock on a GPU and by this process's CPU time on a CPU. Data loading and validation are not timed (validation is skipped). The two learners train
in turns, one epoch each, so that drifting machine load hits both; the first round is warm-up. The
ratio is given as the ratio of the median step times and as the median of the paired steps' ratios.
Writes reports/perf/bench_step.json; target ratio API-Net / Baseline <= 1.05.
"""
import argparse
import statistics
import tempfile

import torch

from _common import add_threads_arg, set_threads, step_timer, summary, synthetic_dls, write_perf


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="the paper's setting on CUDA: resnet101, 448 px, 30 x 4")
    p.add_argument("--arch", default=None, help="backbone (default resnet18 on CPU, resnet101 with --gpu)")
    p.add_argument("--size", type=int, default=None, help="input size (default 112 on CPU, 448 with --gpu)")
    p.add_argument("--n-classes", type=int, default=None, help="N_cl (default 8 on CPU, 30 with --gpu)")
    p.add_argument("--n-images", type=int, default=4, help="N_im")
    p.add_argument("--steps", type=int, default=1, help="training steps per epoch (batches)")
    p.add_argument("--rounds", type=int, default=13, help="epochs per learner, taken in turns; the first is warm-up")
    add_threads_arg(p)
    args = p.parse_args()
    set_threads(args.threads)
    gpu = args.gpu
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA")
    args.arch = args.arch or ("resnet101" if gpu else "resnet18")
    args.size = args.size or (448 if gpu else 112)
    args.n_classes = args.n_classes or (30 if gpu else 8)

    from fastai.torch_core import set_seed
    from apikit.learner import api_learner

    device = torch.device("cuda" if gpu else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        set_seed(0)
        dls = synthetic_dls(tmp, args.n_classes, args.n_images, args.size, n_train=args.n_images * args.steps,
                            device=device)
        learners, timers = {}, {}
        for name, api in (("api_net", True), ("baseline", False)):
            set_seed(0)
            learners[name] = api_learner(dls, arch=args.arch, pretrained=False, api=api)
            timers[name] = step_timer(device)
        for r in range(args.rounds):
            for name, learn in learners.items():
                if r == 1:
                    timers[name].times.clear()  # round 0 was warm-up
                with learn.no_bar(), learn.no_logging():
                    learn.fit(1, 1e-3, cbs=timers[name])
    res = {name: summary(t.times) for name, t in timers.items()}
    ratio = res["api_net"]["median_s"] / res["baseline"]["median_s"]
    # Steps taken back to back share the machine's load: the median of their ratios is the steadier figure.
    paired = statistics.median(a / b for a, b in zip(timers["api_net"].times, timers["baseline"].times))
    where = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads, process CPU time"
    print(f"training step, {args.arch} at {args.size} px, {args.n_classes}x{args.n_images} batch, {where}")
    for name, r in res.items():
        print(f"  {name:9s} median {1e3 * r['median_s']:9.1f} ms  (min {1e3 * r['min_s']:.1f}, max {1e3 * r['max_s']:.1f}, "
              f"n={r['n']})")
    print(f"  api_net/baseline {ratio:.3f} (ratio of medians), {paired:.3f} (median of paired steps); target <= 1.05")
    path = write_perf("bench_step_gpu" if gpu else "bench_step",
                      {"params": vars(args), "times": res, "ratios": {"api_net/baseline": ratio, "api_net/baseline_paired": paired}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
