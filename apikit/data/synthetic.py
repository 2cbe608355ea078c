"""apikit's generated stand-in for CUB-200-2011: groups of confusable bird species (`apikit.data.birds`) written
in CUB's own file layout (images, index files, part locations, bounding boxes), drawn once and cached.

The cache is checked, not trusted: the marker written last records the sha256 of every file drawn, and every use
compares the set on disk with it. An edited label file, swapped or damaged images are named in a warning and the
set is drawn again; a run never trains on labels or images the generator did not write.
"""
from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..progress import progress
from ..runs import DiskFull, disk_full, file_lock, regular_bytes
from .birds import PART_IDS, PART_NAMES, TRAITS, VERSION, Species, draw, group_sizes, species
from .errors import CacheWarning
from .locate import writable

__all__ = ["PART_NAMES", "TRAITS", "Species", "species", "draw", "make", "groups", "HELD_OUT",
           "settings", "run_problem"]

GENERATOR = "apikit.data.synthetic"
META = "synthetic.json"
MARKER = "synthetic.complete"  # written last: the params and every other file's sha256; a tree without it is unfinished
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


def settings(synthetic: dict | None = None) -> dict:
    """make()'s settings from a run's `synthetic` parameter (None: the defaults), checked by make()'s own rules;
    a ValueError names an unknown key or a bad value."""
    defaults = {k: v.default for k, v in inspect.signature(make).parameters.items() if k != "path"}
    given = {} if synthetic is None else synthetic
    unknown = sorted(map(str, set(given) - set(defaults))) if isinstance(given, dict) else None
    if unknown is None or unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; valid ones: {', '.join(defaults)}" if unknown
                         else f"expected a dict of settings ({', '.join(defaults)}), or None for the defaults")
    return _params(**{**defaults, **given})


def run_problem(synthetic: dict | None, n_classes: int) -> str | None:
    """Why a training run with N_cl = `n_classes` cannot use the set these settings draw (said before anything is
    drawn or written), or None: make()'s rules, training images, held-out images to evaluate on, and at least a
    batch's classes."""
    try:
        s = settings(synthetic)
    except ValueError as e:
        return str(e)
    if s["n_train"] < 1:
        return f"n_train={s['n_train']} draws no training image; use n_train >= 1"
    if s["n_test"] < 1:
        return f"n_test={s['n_test']} holds out no image, and a run is evaluated on its held-out images; use n_test >= 1"
    if s["n_classes"] < n_classes:
        k = s["n_classes"]
        other = f", or the run's n_classes to between 2 and {k}" if k >= 2 else ""  # a batch needs 2 classes
        return (f"it draws {k} class{'es' * (k != 1)}, fewer than a batch holds (n_classes={n_classes}): set its "
                f"n_classes to {n_classes} or more{other}")
    return None


def _json(file: Path):
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _recorded(path: Path, params: dict) -> dict | None:
    """{file: sha256} as the marker records them, if `path` holds a finished set drawn with these params; else None."""
    marker = _json(path / MARKER)
    ok = isinstance(marker, dict) and marker.get("params") == params and isinstance(marker.get("files"), dict)
    return marker["files"] if ok else None


def _sha256(path: Path) -> str | None:
    data = regular_bytes(path)  # a FIFO or a link to /dev/zero in the set is a changed file, never waited on
    return None if data is None else hashlib.sha256(data).hexdigest()


def _changed(path: Path, files: dict) -> list[str]:
    """The files of `files` ({relative path: sha256}) that are gone from `path` or differ from what was drawn."""
    return [rel for rel, digest in files.items() if _sha256(path / rel) != digest]


def _complete(path: Path, params: dict) -> bool:
    files = _recorded(path, params)
    return files is not None and not _changed(path, files)


def _is_ours(path: Path) -> bool:
    """Whether `path` is empty or was written by this module, i.e. safe to replace: its metadata or its marker say
    so (either, so that a set whose metadata was damaged is drawn again)."""
    if not any(path.iterdir()):
        return True
    meta, marker = _json(path / META), _json(path / MARKER)
    return ((isinstance(meta, dict) and meta.get("generator") == GENERATOR)
            or (isinstance(marker, dict) and {"params", "files"} <= set(marker)))


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
    drawn = sorted(f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file())
    (root / MARKER).write_text(json.dumps({"params": params, "files": {rel: _sha256(root / rel) for rel in drawn}}))


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
    writable(path.parent)  # a read-only data root is one line naming it and the fix, before the lock is made there
    # One process draws; the others wait and find it finished. Without the lock a second process would move the
    # first one's finished set aside while the first was already reading its images.
    lock = path.parent / f".{path.name}.lock"
    with file_lock(lock):  # removed as it is let go: a finished set needs no lock, later callers find it complete
        _clean(path)
        files = _recorded(path, params)
        changed = [] if files is None else _changed(path, files)
        if files is None or changed:
            if changed:
                shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                warnings.warn(f"{path} is not the generated set drawn there: {len(changed)} file(s) differ from what "
                              f"was drawn or are gone ({shown}): a label file edited, images swapped or damaged. "
                              "It is drawn again.", CacheWarning, stacklevel=2)
            _draw(path, params)
    return path


def _clean(path: Path) -> None:
    """Remove what a process killed while drawing `path` left beside it (its .tmp and .old folders): every draw
    of `path` happens under its lock, so none of them is in use."""
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.*.old")]:
        shutil.rmtree(stale, ignore_errors=True)


def _draw(path: Path, params: dict) -> Path:
    """Draw into a sibling and rename it into place, so that `path` is never a half-written set. A full disk is
    `DiskFull` naming `path`, where the set is drawn (the data root's), not the folder of the run that asked for it."""
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
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
    except BaseException as e:
        full = disk_full(e, path.parent) if isinstance(e, Exception) else None  # now, while the draw takes its space
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if full is not None and not isinstance(e, DiskFull):
            raise DiskFull(errno.ENOSPC, f"the disk is full: the generated set could not be drawn into {path} "
                                         f"({type(e).__name__}: {str(e).strip()[:200]}); free space there, or set "
                                         "APIKIT_DATA to a folder on a disk with room", str(path)) from e
        raise
    return path


def groups(path) -> list[list[int]]:
    """The confusable groups of a set written by make(), as lists of 0-based class indices."""
    return [list(g) for g in json.loads((Path(path) / META).read_text())["groups"]]
