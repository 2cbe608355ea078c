"""Inference of a trained API-Net (the API module attached but unloaded at test) against the plain
torchvision CNN with the same weights.

    python benchmarks/bench_infer.py [--arch resnet18] [--size 112] [--bs 32]

The API-Net model is `api_learner(...).model` (a FineGrainedNet holding `model.api`); the plain CNN is
`torchvision.models.<arch>` with the backbone and classifier weights copied over, and the two must give
the same logits. Both run in eval mode under `torch.inference_mode()`, in turns. Writes
reports/perf/bench_infer.json; target ratio 1.00 within noise.
"""
import argparse
import statistics
import tempfile

import torch
import torchvision

from _common import add_threads_arg, interleaved, set_threads, summary, synthetic_dls, write_perf


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18", help="a torchvision ResNet")
    p.add_argument("--size", type=int, default=112, help="input size")
    p.add_argument("--bs", type=int, default=32, help="images per forward")
    p.add_argument("--n-classes", type=int, default=8)
    p.add_argument("--reps", type=int, default=15, help="timed forwards of each model")
    add_threads_arg(p)
    args = p.parse_args()
    set_threads(args.threads)

    from apikit.learner import api_learner

    with tempfile.TemporaryDirectory() as tmp:
        dls = synthetic_dls(tmp, args.n_classes, 4, 32)
        learn = api_learner(dls, arch=args.arch, pretrained=False)
    api_net = learn.model.eval()
    assert hasattr(api_net, "api")  # attached, as after training; its forward never calls it
    plain = torchvision.models.get_model(args.arch, num_classes=dls.c).eval()
    # FineGrainedNet.body is the torchvision ResNet's children up to layer4, in order.
    names = [n for n, _ in plain.named_children()][:len(api_net.body)]
    for name, module in zip(names, api_net.body):
        getattr(plain, name).load_state_dict(module.state_dict())
    plain.fc.load_state_dict(api_net.fc.state_dict())

    x = torch.randn(args.bs, 3, args.size, args.size)
    with torch.inference_mode():
        torch.testing.assert_close(api_net(x), plain(x))
        times = interleaved({"api_net_unloaded": lambda: api_net(x), "plain_cnn": lambda: plain(x)},
                            reps=args.reps, warmup=2)
    res = {name: summary(t) for name, t in times.items()}
    ratio = res["api_net_unloaded"]["median_s"] / res["plain_cnn"]["median_s"]
    paired = statistics.median(a / b for a, b in zip(times["api_net_unloaded"], times["plain_cnn"]))
    print(f"inference, {args.arch} at {args.size} px, batch {args.bs}, CPU, {torch.get_num_threads()} threads, "
          "process CPU time")
    for name, r in res.items():
        print(f"  {name:17s} median {1e3 * r['median_s']:8.1f} ms  (min {1e3 * r['min_s']:.1f}, max {1e3 * r['max_s']:.1f})")
    print(f"  api_net_unloaded/plain_cnn {ratio:.3f} (ratio of medians), {paired:.3f} (median of paired runs); "
          "target 1.00")
    path = write_perf("bench_infer", {"params": vars(args), "times": res,
                                      "ratios": {"api_net_unloaded/plain_cnn": ratio,
                                                 "api_net_unloaded/plain_cnn_paired": paired}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
