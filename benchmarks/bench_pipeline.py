"""The data pipeline on a GPU: a short API-Net run on the generated set rendered at 512 px, the loader's
images/s measured apart from the GPU step's, with the resize cache off and on.

    python benchmarks/bench_pipeline.py --root DIR            # CUDA: ResNet-50, 448 crops of 512 px, 30 x 4
    python benchmarks/bench_pipeline.py --root DIR --draw-only # only draw the set (gpu_check.sh starts it early)
    python benchmarks/bench_pipeline.py --dry-run --root DIR  # tiny sizes on the CPU

The set is `apikit.data.synthetic.make` (CUB's layout) drawn at `--draw` px under `--root`. For
`get_dls("synthetic", ..., cache=False)` and then `cache=True` (JPEGs pre-resized to `--resize`, built
under `--root`/cache; its build time is reported), at `--num-workers` loader processes:

- loader: images/s of iterating the training loader alone (decode, squish-resize, random crop, flip on
  the CPU workers; to the GPU and normalised there), per epoch, worker start included;
- fit: `api_learner(dls, arch, pretrained=False, precision, channels_last)` and `learn.fit_paper(epochs,
  lr, freeze_epochs=0)`, with each training step (before_batch to after_batch, synchronised) timed apart
  from the wait for the next batch; images/s of the steps alone, of the training epochs as a whole,
  and the share of the epoch spent waiting for the loader.
Writes --out (default reports/perf/bench_pipeline.json) after each part.
"""
import argparse
import os
import time
from pathlib import Path

import torch

from _common import machine, step_timer, sync
from apikit.runs import write_json


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder for the generated set and the cache (APIKIT_DATA)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--draw", type=int, default=512, help="size the set is drawn at")
    p.add_argument("--resize", type=int, default=512)
    p.add_argument("--size", type=int, default=448, help="training crop")
    p.add_argument("--n-classes", type=int, default=30, help="N_cl")
    p.add_argument("--n-images", type=int, default=4, help="N_im")
    p.add_argument("--n-train", type=int, default=16, help="training images per class")
    p.add_argument("--n-test", type=int, default=2, help="test images per class")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=None, help="loader processes (default: get_dls's, min(8, CPUs))")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--draw-only", action="store_true", help="draw the set and stop")
    p.add_argument("--dry-run", action="store_true", help="CPU, resnet18, 64 px drawn, 48 crops, 4 x 3, 1 epoch")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "reports" / "perf" / "bench_pipeline.json"))
    args = p.parse_args()
    if args.dry_run:
        args.arch, args.draw, args.resize, args.size = "resnet18", 64, 56, 48
        args.n_classes, args.n_images, args.n_train, args.n_test, args.epochs = 4, 3, 6, 1, 1
        args.num_workers, args.precision = 0, "fp32"
        torch.set_num_threads(1)
    root = Path(args.root).resolve()
    os.environ["APIKIT_DATA"] = str(root)  # the resize cache goes under the data root
    synthetic = dict(n_classes=args.n_classes, n_train=args.n_train, n_test=args.n_test, size=args.draw)
    from apikit.data.synthetic import make
    t0 = time.perf_counter()
    make(root / "synthetic", **synthetic)
    draw_s = time.perf_counter() - t0
    if args.draw_only:
        print(f"drew {root / 'synthetic'} in {draw_s:.0f} s")
        return
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("no CUDA device: use --dry-run to check the script on a CPU")
    torch.backends.cudnn.benchmark = device.type == "cuda"

    from fastai.torch_core import set_seed
    from apikit.data import get_dls
    from apikit.learner import api_learner
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              "cpu (dry run)", "params": vars(args), "draw_s": draw_s, "results": {}}

    def save():
        write_json(out, report)

    save()
    for cache in (False, True):
        name = "cache_on" if cache else "cache_off"
        res = report["results"][name] = {}
        t0 = time.perf_counter()
        set_seed(0)
        dls = get_dls("synthetic", path=root / "synthetic", size=args.size, resize=args.resize,
                      n_classes=args.n_classes, n_images=args.n_images, num_workers=args.num_workers, device=device,
                      synthetic=synthetic, cache=cache)
        res["build_s"] = time.perf_counter() - t0  # with cache=True: resizing every image once
        res["num_workers"] = dls.train.fake_l.num_workers  # loader processes (0: in this process)
        res["batches_per_epoch"] = len(dls.train)
        rates = []
        for _ in range(2):  # the loader alone, twice: the first epoch also warms the page cache
            n, t0 = 0, time.perf_counter()
            for xb, yb in dls.train:
                n += len(yb)
            sync(device)
            rates.append(n / (time.perf_counter() - t0))
        res["loader_images_per_s"] = rates
        save()
        learn = api_learner(dls, arch=args.arch, pretrained=False, precision=args.precision,
                            channels_last=args.channels_last)
        timer = step_timer(device, skip_validation=False)
        epochs = []

        from fastai.callback.core import Callback

        class EpochClock(Callback):
            """Wall time of each training phase (the epoch without validation)."""
            order = -101

            def before_train(self):
                sync(device)
                self.t0 = time.perf_counter()

            def after_train(self):
                sync(device)
                epochs.append(time.perf_counter() - self.t0)

        with learn.no_bar(), learn.no_logging():
            learn.fit_paper(args.epochs, 1e-3, freeze_epochs=0, cbs=[timer, EpochClock()])
        b = args.n_classes * args.n_images
        steps, waits = sorted(timer.times), timer.waits
        res["step_median_s"] = steps[len(steps) // 2]
        res["step_images_per_s"] = b / res["step_median_s"]
        res["train_epoch_s"] = epochs
        res["train_images_per_s"] = [len(timer.times) // args.epochs * b / e for e in epochs]
        res["loader_wait_s_total"] = sum(waits)
        res["loader_wait_share"] = sum(waits) / sum(epochs)
        res["train_loss"] = float(learn.recorder.values[-1][0])
        res["valid_loss"] = float(learn.recorder.values[-1][1])
        del learn, dls
        save()
        print(f"  {name}: loader {rates[-1]:.0f} img/s ({res['num_workers']} workers), step {res['step_images_per_s']:.0f} "
              f"img/s, training epochs {res['train_images_per_s'][-1]:.0f} img/s, waiting for data "
              f"{100 * res['loader_wait_share']:.0f}% (built in {res['build_s']:.1f} s)", flush=True)
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
