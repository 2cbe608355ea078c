"""Data loading, images per second for one loader worker: decoding the original JPEGs and resizing them
(`get_dls(cache=False)`) against reading images pre-resized to the `resize` size (`get_dls(cache=True)`).

    python benchmarks/bench_data.py [--size 500] [--resize 512] [--crop 448]

The JPEG cache is apikit's own (`apikit.data.cache.cache_resized`, quality 95), written into a temporary
folder; raw uint8 arrays (.npy) are measured beside it as the upper bound of a decode-free cache. The originals are drawn by `apikit.data.synthetic.make`
(CUB's layout, `--size` px squares; CUB's images are about 500 x 375) when that module exists, else
random smooth JPEGs. Each variant runs the paper's training item transforms (flip, squish-resize to
`resize`, random `crop`, to tensor) through a fastai `TfmdDL` with num_workers=0, i.e. one worker, and
is timed by this process's CPU time, variants in turns. Writes reports/perf/bench_data.json.
"""
import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from _common import add_threads_arg, clock, set_threads, write_perf


def originals(root, n, size, seed=0):
    """n original JPEGs under root: the synthetic CUB stand-in if the package has it, else smooth noise."""
    try:
        from apikit.data.synthetic import make
    except ImportError:
        make = None
    if make is not None:
        path = make(Path(root) / "synthetic", n_classes=max(1, n // 12), n_train=12, n_test=0, size=size)
        return sorted((path / "images").rglob("*.jpg")), "apikit.data.synthetic.make"
    from PIL import Image
    rng, files = np.random.default_rng(seed), []
    for i in range(n):
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size * 3 // 4), Image.BICUBIC)
        a = np.clip(np.asarray(img, np.int16) + rng.integers(-8, 8, (size * 3 // 4, size, 3)), 0, 255)
        files.append(Path(root) / f"{i}.jpg")
        Image.fromarray(a.astype(np.uint8)).save(files[-1], quality=90)
    return files, "random smooth JPEGs"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=48, help="number of original images")
    p.add_argument("--size", type=int, default=500, help="side of the original images")
    p.add_argument("--resize", type=int, default=512, help="the paper's resize (and the cache's size)")
    p.add_argument("--crop", type=int, default=448, help="the paper's crop")
    p.add_argument("--rounds", type=int, default=4, help="passes over each variant, in turns; the first is warm-up")
    add_threads_arg(p)
    args = p.parse_args()
    set_threads(args.threads)

    from fastai.data.core import Datasets, TfmdDL
    from fastai.vision.augment import FlipItem, RandomCrop, Resize, ResizeMethod
    from fastai.vision.core import PILImage
    from fastai.data.transforms import ToTensor
    from PIL import Image

    tfms = [FlipItem(p=0.5), Resize(args.resize, method=ResizeMethod.Squish), RandomCrop(args.crop), ToTensor()]
    now = clock("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        files, source = originals(tmp, args.n, args.size)
        import pandas as pd
        from apikit.data.cache import cache_resized
        jpegs = list(cache_resized(pd.DataFrame({"path": list(map(str, files))}), "bench", args.resize,
                                   root=tmp)["path"])
        arrays = []
        for f in jpegs:
            arrays.append(Path(f).with_suffix(".npy"))
            np.save(arrays[-1], np.asarray(Image.open(f).convert("RGB")))
        variants = {
            "jpeg_original": (files, PILImage.create),
            "jpeg_preresized": (jpegs, PILImage.create),
            "npy_preresized": (arrays, lambda f: PILImage.create(np.load(f))),
        }
        loaders = {name: TfmdDL(Datasets(items, tfms=[[load]]), bs=16, after_item=tfms, num_workers=0, shuffle=False)
                   for name, (items, load) in variants.items()}
        times = {name: [] for name in loaders}
        for r in range(args.rounds):
            for name, dl in loaders.items():
                t0 = now()
                n = sum(len(b[0]) for b in dl)
                if r:
                    times[name].append((now() - t0) / n)
        file_bytes = {name: sum(Path(f).stat().st_size for f in items) / len(items) for name, (items, _) in variants.items()}
    rate = {name: 1 / statistics.median(t) for name, t in times.items()}
    ratios = {"jpeg_preresized/jpeg_original": rate["jpeg_preresized"] / rate["jpeg_original"],
              "npy_preresized/jpeg_original": rate["npy_preresized"] / rate["jpeg_original"]}
    print(f"data loading per worker (num_workers=0, process CPU time), {len(files)} images from {source}, "
          f"{args.size} px originals, resize {args.resize}, crop {args.crop}")
    for name, r in rate.items():
        print(f"  {name:16s} {r:8.1f} images/s   ({file_bytes[name] / 1024:.0f} KiB per file)")
    for k, v in ratios.items():
        print(f"  {k:32s} {v:.2f}x")
    path = write_perf("bench_data", {"params": vars(args), "source": source, "images_per_s": rate,
                                     "bytes_per_file": file_bytes, "ratios": ratios,
                                     "note": "jpeg_preresized is apikit.data.cache (get_dls(cache=True)); npy is a decode-free upper bound"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
