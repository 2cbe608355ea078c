"""Pair mining at the paper's batch (30 classes x 4 images, D=2048): `mine_pairs` (and `candidate_pairs`,
its fixed-size form that APICallback uses) against a Python loop over anchors, and against the
backbone's forward pass of the same 120 images.

    python benchmarks/bench_pairs.py [--size 112] [--reps 50]

Writes reports/perf/bench_pairs.json. Ratios: mine_pairs / loop (must be < 1) and mine_pairs / forward.
"""
import argparse

import numpy as np
import torch
import torchvision

from _common import add_threads_arg, interleaved, set_threads, summary, timed, write_perf
from apikit.pairs import candidate_pairs, mine_pairs


def mine_pairs_loop(feats, labels):
    """The straightforward version: the distance matrix to NumPy, then one Python iteration per anchor."""
    dist = torch.cdist(feats[None], feats[None])[0].numpy()
    labels = labels.numpy()
    intra, inter = ([], []), ([], [])
    for i in range(len(labels)):
        same = labels == labels[i]
        same[i] = False
        for pairs, mask in ((intra, same), (inter, labels != labels[i])):
            cols = np.flatnonzero(mask)
            if len(cols):
                pairs[0].append(i)
                pairs[1].append(cols[np.argmin(dist[i, cols])])
    return torch.tensor(intra[0] + inter[0]), torch.tensor(intra[1] + inter[1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-classes", type=int, default=30, help="N_cl")
    p.add_argument("--n-images", type=int, default=4, help="N_im")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension D (ResNet-101: 2048)")
    p.add_argument("--size", type=int, default=112, help="input size for the resnet101 forward (paper: 448)")
    p.add_argument("--reps", type=int, default=50, help="timed repetitions of each miner")
    p.add_argument("--forward-reps", type=int, default=1, help="timed resnet101 forwards of the whole batch")
    add_threads_arg(p)
    args = p.parse_args()
    set_threads(args.threads)

    torch.manual_seed(0)
    b = args.n_classes * args.n_images
    feats = torch.randn(b, args.dim)
    labels = torch.arange(args.n_classes).repeat_interleave(args.n_images)
    fast, slow = mine_pairs(feats, labels), mine_pairs_loop(feats, labels)
    assert all(torch.equal(a, s) for a, s in zip(fast, slow)), "the two miners disagree"
    times = interleaved({"mine_pairs": lambda: mine_pairs(feats, labels),
                         "candidate_pairs": lambda: candidate_pairs(feats, labels),  # the training step's form
                         "loop": lambda: mine_pairs_loop(feats, labels)}, reps=args.reps, warmup=3)

    model = torchvision.models.resnet101().eval()  # random weights: the time does not depend on them
    x = torch.randn(b, 3, args.size, args.size)
    with torch.no_grad():
        model(x[:2])  # warm-up on two images: the full batch takes seconds on a CPU
        times["resnet101_forward"] = [timed(lambda: model(x)) for _ in range(args.forward_reps)]

    res = {name: summary(t) for name, t in times.items()}
    med = {name: r["median_s"] for name, r in res.items()}
    ratios = {"mine_pairs/loop": med["mine_pairs"] / med["loop"],
              "candidate_pairs/loop": med["candidate_pairs"] / med["loop"],
              "mine_pairs/resnet101_forward": med["mine_pairs"] / med["resnet101_forward"]}
    print(f"pair mining, B={b} ({args.n_classes}x{args.n_images}), D={args.dim}, CPU, {torch.get_num_threads()} threads, "
          "process CPU time")
    print(f"  mine_pairs         {1e3 * med['mine_pairs']:9.3f} ms")
    print(f"  candidate_pairs    {1e3 * med['candidate_pairs']:9.3f} ms  (fixed size, used in training)")
    print(f"  Python loop        {1e3 * med['loop']:9.3f} ms")
    print(f"  resnet101 forward  {1e3 * med['resnet101_forward']:9.1f} ms  ({b} images at {args.size} px, eval, no grad)")
    for k, v in ratios.items():
        print(f"  {k:30s} {v:.4f}")
    path = write_perf("bench_pairs", {"params": vars(args), "times": res, "ratios": ratios,
                                      "note": f"resnet101 forward at {args.size} px (the paper trains at 448)"})
    print(f"wrote {path}")
    assert ratios["mine_pairs/loop"] < 1, "mine_pairs is slower than the Python loop"


if __name__ == "__main__":
    main()
