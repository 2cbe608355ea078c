"""apikit's generated stand-in for CUB-200-2011: groups of confusable bird species (`apikit.data.birds`) written
in CUB's own file layout (images, index files, part locations, bounding boxes), drawn once and cached."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..progress import progress
from ..runs import file_lock
from .birds import PART_IDS, PART_NAMES, TRAITS, VERSION, Species, draw, group_sizes, species

__all__ = ["PART_NAMES", "TRAITS", "Species", "species", "draw", "make", "is_complete", "groups", "HELD_OUT"]

GENERATOR = "apikit.data.synthetic"
META = "synthetic.json"
MARKER = "synthetic.complete"  # written last: a tree without it is unfinished
JPEG_QUALITY = 90

HELD_OUT = ("test", "valid")  # what the held-out images are: the test split, or a validation split drawn apart


def _params(n_classes, n_train, n_test, size, seed, held_out="test") -> dict:
    if held_out not in HELD_OUT:
        raise ValueError(f"held_out must be one of {HELD_OUT}, got {held_out!r}")
    for name, v, lo in (("n_classes", n_classes, 1), ("n_train", n_train, 0), ("n_test", n_test, 0),
                        ("size", size, 16)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if n_train + n_test < 1:
        raise ValueError("n_train + n_test must be at least 1")
    return dict(n_classes=int(n_classes), n_train=int(n_train), n_test=int(n_test), size=int(size), seed=int(seed),
                held_out=held_out, version=VERSION)


def is_complete(path, n_classes: int = 24, n_train: int = 40, n_test: int = 20, size: int = 128, seed: int = 0,
                held_out: str = "test") -> bool:
    """Whether `path` holds a finished set drawn with exactly these params (and this VERSION)."""
    return _complete(Path(path), _params(n_classes, n_train, n_test, size, seed, held_out))


def _complete(path: Path, params: dict) -> bool:
    try:
        if json.loads((path / MARKER).read_text()) != params:
            return False
        lines = (path / "images.txt").read_text().splitlines()
    except (OSError, ValueError):
        return False
    n = params["n_classes"] * (params["n_train"] + params["n_test"])
    return len(lines) == n and all((path / "images" / line.split(" ", 1)[1]).is_file() for line in lines)


def _is_ours(path: Path) -> bool:
    """Whether `path` is empty or was written by this module, i.e. safe to replace."""
    if not any(path.iterdir()):
        return True
    try:
        return json.loads((path / META).read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _write(root: Path, params: dict) -> None:
    """Draw every image into root and write CUB's text files, the metadata and, last, the marker."""
    specs = species(params["n_classes"], params["seed"])
    size, n_train, n_images = params["size"], params["n_train"], params["n_train"] + params["n_test"]
    images, labels, split, boxes, locs = [], [], [], [], []
    for c, spec in progress(list(enumerate(specs)), f"drawing the synthetic set ({len(specs)} species)", "images",
                            total=len(specs) * n_images, count=lambda _: n_images):
        (root / "images" / spec.name).mkdir(parents=True)
        stem = spec.name.split(".", 1)[1]
        for i in range(n_images):
            # Training images are the same whatever is held out; a validation split draws its images from
            # another stream than the test split's, so that no validation image is a test image.
            stream = [params["seed"], c, i] + ([1] if i >= n_train and params["held_out"] == "valid" else [])
            img, bbox, parts = draw(spec, size, np.random.default_rng(stream))
            rel = f"{spec.name}/{stem}_{i + 1:04d}.jpg"
            img.save(root / "images" / rel, "JPEG", quality=JPEG_QUALITY)
            k = len(images) + 1
            images.append(f"{k} {rel}")
            labels.append(f"{k} {c + 1}")
            split.append(f"{k} {int(i < n_train)}")
            boxes.append(f"{k} {bbox[0]:.1f} {bbox[1]:.1f} {bbox[2]:.1f} {bbox[3]:.1f}")
            locs += [f"{k} {p + 1} {x:.1f} {y:.1f} {int(v)}" for p, (x, y, v) in enumerate(parts)]

    def write(name, lines):
        (root / name).write_text("".join(line + "\n" for line in lines))

    (root / "parts").mkdir()
    write("images.txt", images)
    write("classes.txt", [f"{c + 1} {s.name}" for c, s in enumerate(specs)])
    write("image_class_labels.txt", labels)
    write("train_test_split.txt", split)
    write("bounding_boxes.txt", boxes)
    write("parts/parts.txt", [f"{i + 1} {name}" for i, name in enumerate(PART_NAMES)])
    write("parts/part_locs.txt", locs)
    sizes = group_sizes(params["n_classes"])
    starts = np.cumsum([0] + sizes)
    meta = {
        "generator": GENERATOR,
        "params": params,
        "parts": {str(i + 1): name for i, name in enumerate(PART_NAMES)},
        "trait_parts": {t: [PART_IDS[p] for p in ps] for t, ps in TRAITS.items()},
        "groups": [list(range(int(a), int(a) + n)) for a, n in zip(starts, sizes)],
        "classes": [
            {"class_id": c + 1, **asdict(s),
             # a base form differs from each group-mate at that mate's trait; a variant at its own
             "discriminative_parts": sorted({PART_IDS[p] for t in ([s.trait] if s.trait else
                                             [o.trait for o in specs if o.group == s.group and o.trait])
                                             for p in TRAITS[t]})}
            for c, s in enumerate(specs)],
    }
    (root / META).write_text(json.dumps(meta, indent=1) + "\n")
    (root / MARKER).write_text(json.dumps(params))


def make(path, n_classes: int = 24, n_train: int = 40, n_test: int = 20, size: int = 128, seed: int = 0,
         held_out: str = "test") -> Path:
    """Draw the set into `path` in CUB-200-2011's layout, unless a finished one with these params is there already.

    n_test images per class are held out (CUB's test split, `train_test_split.txt`). held_out="valid" draws
    them apart from the test images (same species, same training images): a validation split on which to
    choose settings without looking at the test split.
    """
    path = Path(path)
    params = _params(n_classes, n_train, n_test, size, seed, held_out)
    if _complete(path, params):
        return path
    if path.exists() and not (path.is_dir() and _is_ours(path)):
        raise FileExistsError(f"{path} holds something this module did not write; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process draws; the others wait and find it finished. Without the lock a second process would move the
    # first one's finished set aside while the first was already reading its images.
    lock = path.parent / f".{path.name}.lock"
    with file_lock(lock):  # removed as it is let go: a finished set needs no lock, later callers find it complete
        _clean(path)
        if not _complete(path, params):
            _draw(path, params)
    return path


def _clean(path: Path) -> None:
    """Remove what a process killed while drawing `path` left beside it (its .tmp and .old folders): every draw
    of `path` happens under its lock, so none of them is in use."""
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.*.old")]:
        shutil.rmtree(stale, ignore_errors=True)


def _draw(path: Path, params: dict) -> Path:
    """Draw into a sibling and rename it into place, so that `path` is never a half-written set."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)
        _write(tmp, params)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "set")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, path)
            except OSError:
                if not _complete(path, params):  # someone else finished first, or something foreign appeared
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def groups(path) -> list[list[int]]:
    """The confusable groups of a set written by make(), as lists of 0-based class indices."""
    return [list(g) for g in json.loads((Path(path) / META).read_text())["groups"]]
