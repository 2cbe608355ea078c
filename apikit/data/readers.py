"""Each data set's own index files, read into one table: path, label, class_name, is_valid.

`is_valid` marks the official test split, which is the validation set, as in the paper. Labels are
0..K-1 in the data set's own class order; `df.attrs["classes"]` lists the class names in that order.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.data.transforms import image_extensions

from .download import fetch
from .errors import CountMismatchWarning, DataSetNotFound, InvalidDataSet, LayoutWarning
from .locate import data_root, locate, missing_images
from .sources import Source, check_source

__all__ = ["read_split", "READERS", "check_counts"]

log = logging.getLogger(__name__)
COLUMNS = ["path", "label", "class_name", "is_valid"]


# ---------------------------------------------------------------- file formats

def _lines(file: Path) -> list[tuple[str, str]]:
    """`<key> <rest of line>` pairs of a whitespace-separated index file, blank lines skipped."""
    out = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, _, rest = line.partition(" ")
        if not rest.strip():
            raise DataSetNotFound(f"cannot read {file}, line {n}: expected '<id> <value>', got {line!r}. "
                                  "The file looks truncated or is not the data set's own index file.")
        out.append((key, rest.strip()))
    return out


def _table(file: Path) -> dict[str, str]:
    return dict(_lines(file))


def _mat(file: Path) -> dict:
    from scipy.io import loadmat
    try:
        return loadmat(file)
    except Exception as e:  # scipy raises several types for a damaged file
        raise DataSetNotFound(f"cannot read {file}: {type(e).__name__}: {e}. Re-extract the data set.") from None


def _str(x) -> str:
    """A string from a loadmat cell (nested 1x1 arrays)."""
    while isinstance(x, np.ndarray):
        x = x.ravel()[0]
    return str(x)


def _int(x) -> int:
    while isinstance(x, np.ndarray):
        x = x.ravel()[0]
    return int(x)


def _frame(rows, classes: list[str]) -> pd.DataFrame:
    """The table, with class names made unique so that they can serve as the vocabulary."""
    seen, unique = {}, []
    for i, c in enumerate(classes):
        unique.append(c if c not in seen else f"{c} ({i})")
        seen[c] = i
    df = pd.DataFrame(rows, columns=["path", "label", "is_valid"])
    df["label"] = df["label"].astype(int)
    df["is_valid"] = df["is_valid"].astype(bool)
    df.insert(2, "class_name", [unique[i] for i in df["label"]])
    df.attrs["classes"] = unique
    return df


# ---------------------------------------------------------------- readers, one per format

def read_cub_layout(root: Path, used_only: bool = False) -> pd.DataFrame:
    """CUB-200-2011's text files (NABirds uses the same ones). `used_only`: map only the classes that
    have images to 0..K-1, in class-id order (NABirds' classes.txt also lists the parent classes)."""
    images = _lines(root / "images.txt")
    labels = _table(root / "image_class_labels.txt")
    split = _table(root / "train_test_split.txt")
    classes = _lines(root / "classes.txt")
    names = dict(classes)
    ids = [k for k, _ in classes]
    if used_only:
        used = {labels.get(k) for k, _ in images}
        ids = sorted((c for c in ids if c in used), key=lambda c: (int(c) if c.isdigit() else c))
    index = {c: i for i, c in enumerate(ids)}
    rows = []
    for key, rel in images:
        if key not in labels or key not in split or labels[key] not in index:
            raise DataSetNotFound(f"image {key} ({rel}) in {root / 'images.txt'} has no class or split in "
                                  f"image_class_labels.txt / train_test_split.txt / classes.txt. Re-extract the data set.")
        rows.append((root / "images" / rel, index[labels[key]], split[key].strip() == "0"))
    return _frame(rows, [names[c] for c in ids])


def read_aircraft(root: Path, layout: int = 0) -> pd.DataFrame:
    """FGVC-Aircraft at the variant level: variants.txt, images_variant_{trainval,test}.txt."""
    variants = [v.strip() for v in (root / "variants.txt").read_text().splitlines() if v.strip()]
    index = {v: i for i, v in enumerate(variants)}
    rows = []
    for file, is_valid in (("images_variant_trainval.txt", False), ("images_variant_test.txt", True)):
        for image_id, variant in _lines(root / file):
            if variant not in index:
                raise DataSetNotFound(f"{root / file} names variant {variant!r}, which is not in "
                                      f"{root / 'variants.txt'}. Re-extract the data set.")
            rows.append((root / "images" / f"{image_id}.jpg", index[variant], is_valid))
    return _frame(rows, variants)


def _cars_devkit(root: Path) -> pd.DataFrame:
    names = [_str(c) for c in _mat(root / "devkit" / "cars_meta.mat")["class_names"].ravel()]
    test_file = next(f for f in (root / "cars_test_annos_withlabels.mat", root / "devkit" / "cars_test_annos_withlabels.mat")
                     if f.is_file())
    rows = []
    for file, folder, is_valid in ((root / "devkit" / "cars_train_annos.mat", "cars_train", False),
                                   (test_file, "cars_test", True)):
        for a in _mat(file)["annotations"].ravel():
            rows.append((root / folder / _str(a["fname"]), _int(a["class"]) - 1, is_valid))
    return _frame(rows, names)


def _cars_annos(root: Path) -> pd.DataFrame:
    """One cars_annos.mat: `relative_im_path` (car_ims/NNNNNN.jpg), `class`, `test`. The images are either
    where the path says (the original car_ims release) or split into cars_train/ and cars_test/ by the
    test flag, under the same file names (fastai's stanford-cars archive)."""
    mat = _mat(root / "cars_annos.mat")
    names = [_str(c) for c in mat["class_names"].ravel()]
    rows = []
    for a in mat["annotations"].ravel():
        rel, test = _str(a["relative_im_path"]), bool(_int(a["test"]))
        split_dir = root / ("cars_test" if test else "cars_train") / Path(rel).name
        path = root / rel if (root / rel).is_file() and not split_dir.is_file() else split_dir
        rows.append((path, _int(a["class"]) - 1, test))
    return _frame(rows, names)


def read_cars(root: Path, layout: int = 0) -> pd.DataFrame:
    """Stanford Cars: the devkit's .mat files (layout 0) or a single cars_annos.mat (layout 1)."""
    return _cars_devkit(root) if layout == 0 else _cars_annos(root)


def read_dogs(root: Path, layout: int = 0) -> pd.DataFrame:
    """Stanford Dogs: train_list.mat / test_list.mat (`file_list`, 1-based `labels`) over Images/<wnid-breed>/."""
    rows, names = [], {}
    for file, is_valid in (("train_list.mat", False), ("test_list.mat", True)):
        mat = _mat(root / file)
        for f, lab in zip(mat["file_list"].ravel(), mat["labels"].ravel()):
            rel, label = _str(f), _int(lab) - 1
            folder = Path(rel).parent.name
            names.setdefault(label, folder.split("-", 1)[-1])
            rows.append((root / "Images" / rel, label, is_valid))
    k = max(names, default=-1) + 1
    return _frame(rows, [names.get(i, f"class {i}") for i in range(k)])


def read_nabirds(root: Path, layout: int = 0) -> pd.DataFrame:
    """NABirds: CUB's file format; only the classes that have images (555 of classes.txt's 1011)."""
    return read_cub_layout(root, used_only=True)


def _is_image(name: str) -> bool:
    return f".{name.rsplit('.', 1)[-1].lower()}" in image_extensions  # as fastai's get_image_files


def _entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries in name order, hidden ones left out (as fastai's get_files)."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _loops(link: Path) -> bool:
    """A link to a folder that holds the link itself (`loop -> ..`): walking it never ends."""
    target, parent = link.resolve(), link.parent.resolve()
    return parent == target or target in parent.parents


def _n_images(folder: Path) -> int:
    return sum(_is_image(f) for _, _, files in os.walk(folder) for f in files)


def _show(paths, root: Path, n: int = 5) -> str:
    shown = ", ".join(str(Path(p).relative_to(root)) for p in list(paths)[:n])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > n else "")


def read_folder(root: Path, layout: int = 0) -> pd.DataFrame:
    """ImageNet-style class folders: train/<class>/* and valid/ (or val/, test/) <class>/*.

    An image's split is the top folder it is in and its class the folder directly below it; nothing else is
    read. Two held-out folders (valid/ beside val/ or test/), images deeper down or in no class folder, link loops,
    an image in both splits (through a link) and classes with test images only are refused (`InvalidDataSet`);
    links that lead outside `root` are named
    in a `LayoutWarning`.
    """
    held = [v for v in ("valid", "val", "test") if (root / v).is_dir()]
    if len(held) > 1:
        raise InvalidDataSet(f"{root}: both {' and '.join(f'{v}/' for v in held)} are there; apikit reads one held-out "
                             "folder as the test split, and which one is meant cannot be told. Keep the test split "
                             "under one of these names and move the other folder out of the data set.")
    valid = held[0]
    rows, loose, nested, loops, outside = [], [], {}, [], []
    inside = root.resolve()
    for split in ("train", valid):
        for c in _entries(root / split):
            folder = Path(c.path)
            if c.is_symlink() and c.is_dir() and _loops(folder):
                loops.append(folder)
                continue
            if not c.is_dir():
                if _is_image(c.name):
                    loose.append(folder)
                continue
            if c.is_symlink() and not folder.resolve().is_relative_to(inside):
                outside.append(folder)
            for f in _entries(folder):
                path = Path(f.path)
                if f.is_dir():
                    if f.is_symlink() and _loops(path):
                        loops.append(path)
                    elif n := _n_images(path):
                        nested[path] = n
                elif _is_image(f.name):  # a broken link too: read_split then reports the image missing
                    if f.is_symlink() and not c.is_symlink() and not path.resolve().is_relative_to(inside):
                        outside.append(path)
                    rows.append((path, c.name, split == valid))
    where, layout = str(root), f"(images are read as train/<class>/<image> and {valid}/<class>/<image>)"
    if loops:
        raise InvalidDataSet(f"{where}: link loop(s), which would repeat the same images without end: "
                             + ", ".join(f"'{p.relative_to(root)}' -> '{os.readlink(p)}'" for p in loops)
                             + ". Remove these links.")
    if nested:
        raise InvalidDataSet(f"{where}: images in folders below a class folder: "
                             + ", ".join(f"{p.relative_to(root)} ({n} image(s))" for p, n in list(nested.items())[:5])
                             + f". An image's class is the folder directly under the split folder {layout}, so "
                             "these cannot be given a class. Move them up into their class folder, or make each "
                             "subfolder a class folder of its own.")
    if loose:
        raise InvalidDataSet(f"{where}: images in no class folder: {_show(loose, root)} {layout}. Move each "
                             "into the folder of its class, or delete it.")
    real = {}
    for path, c, is_valid in rows:
        real.setdefault(path.resolve(), []).append((path, c, is_valid))
    both = [next(p for p, _, v in same if v) for same in real.values() if len({v for _, _, v in same}) == 2]
    if both:
        raise InvalidDataSet(f"{where}: {len(both)} image(s) are both in train/ and {valid}/ (through links): "
                             f"{_show(both, root)}. A test image must not be trained on; remove the link or the copy "
                             "in one of the two splits.")
    twice = [same[-1][0] for same in real.values() if len({c for _, c, _ in same}) > 1]
    if twice:
        raise InvalidDataSet(f"{where}: {len(twice)} image(s) are in two classes (through links): "
                             f"{_show(twice, root)}. An image has one label; remove the link from the wrong class.")
    train = {c for _, c, is_valid in rows if not is_valid}
    only_valid = sorted({c for _, c, is_valid in rows if is_valid} - train)
    if only_valid:
        raise InvalidDataSet(f"{where}: class(es) only in {valid}/, with no training images: "
                             f"{', '.join(map(repr, only_valid))}. A model trained on train/ never predicts them, yet "
                             f"they would count in the accuracy. Add their training images to train/<class>/ (check "
                             f"the spelling of the folder names), or remove them from {valid}/.")
    if outside:
        warnings.warn(f"{root}: {len(outside)} link(s) lead outside the folder: {_show(outside, root)}. They are "
                      "read, but the data set is not self-contained: moving or copying the folder breaks them.",
                      LayoutWarning, stacklevel=3)
    classes = sorted(train)
    index = {c: i for i, c in enumerate(classes)}
    return _frame([(p, index[c], is_valid) for p, c, is_valid in rows], classes)


READERS = {
    "cub": lambda root, layout=0: read_cub_layout(root),
    "aircraft": read_aircraft,
    "cars": read_cars,
    "dogs": read_dogs,
    "nabirds": read_nabirds,
    "synthetic": lambda root, layout=0: read_cub_layout(root),  # the same code path as CUB
    "folder": read_folder,
}


# ---------------------------------------------------------------- the split

def check_counts(src: Source, df: pd.DataFrame, root: Path) -> tuple[int, int, int]:
    """Log the split sizes and class count found; warn when they differ from the official ones."""
    found = (int((~df.is_valid).sum()), int(df.is_valid.sum()), len(df.attrs["classes"]))
    log.info("%s: %d train / %d test images, %d classes, at %s", src.name, *found, root)
    if src.official and found != src.official:
        warnings.warn(f"{src.title} at {root}: found {found[0]} train / {found[1]} test images in {found[2]} "
                      f"classes; the official split has {src.official[0]} / {src.official[1]} in "
                      f"{src.official[2]}.", CountMismatchWarning, stacklevel=3)
    return found


def _root(src: Source, path, download: bool, synthetic: dict | None) -> tuple[Path, int]:
    if src.name == "synthetic":
        from . import synthetic as generator
        if path is None:  # other generator settings get their own folder: the default set is never redrawn
            key = hashlib.sha256(json.dumps(synthetic or {}, sort_keys=True).encode()).hexdigest()[:8]
            path = data_root() / ("synthetic" if not synthetic else f"synthetic-{key}")
        return generator.make(Path(path).expanduser(), **(synthetic or {})), 0
    try:
        return locate(src, path)
    except DataSetNotFound:
        if not download:
            raise
    fetch(src, path)
    return locate(src, path)


def _refuse_outside(src: Source, df: pd.DataFrame, root: Path) -> None:
    """Index files name images inside the data set's folder: absolute paths and `..` are refused, unopened."""
    out = [p for p in df.path if not p.is_relative_to(root) or ".." in p.relative_to(root).parts]
    if out:
        shown = "\n".join(f"    {p if not p.is_relative_to(root) else p.relative_to(root)}" for p in out[:5])
        raise InvalidDataSet(f"{src.title} ({src.name!r}) at {root}: {len(out)} image path(s) in its index files point "
                             f"outside the data set's folder (absolute or '..' paths), e.g.\n{shown}\n"
                             "  apikit reads only files under the data set's folder. These index files are not the "
                             "data set's own: re-extract it, or fetch it again.")


def read_split(name: str, path=None, *, download: bool = False, synthetic: dict | None = None) -> pd.DataFrame:
    """The official split of data set `name` as a DataFrame (columns path, label, class_name, is_valid).

    `path`: the folder holding the index files, or its parent (default: `data_root()`).
    `download`: fetch the data set into `path` (or the data root) if it is not there.
    `synthetic`: keyword arguments for `apikit.data.synthetic.make` (name "synthetic" only).
    `df.attrs` holds `name`, `root` (the folder read) and `classes` (class names in label order).
    A missing or partial tree raises `DataSetNotFound`; index paths that leave the tree, and the folder
    problems `read_folder` lists, raise `InvalidDataSet`; unreadable images are not checked here (see
    `apikit.data.verify`).
    """
    src = check_source(name, path, synthetic)
    root, layout = _root(src, path, download, synthetic)
    df = READERS[name](root, layout)
    _refuse_outside(src, df, root)
    absent = [p for p in df.path if not p.is_file()]
    if absent:
        raise DataSetNotFound(missing_images(src, root, absent))
    df.attrs.update(name=name, root=root)
    check_counts(src, df, root)
    return df
