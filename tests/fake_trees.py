"""Tiny copies of the benchmarks' official layouts: a few 16x16 JPEGs and the real annotation formats.

Each builder writes under `root` and returns the folder that holds the index files. File names, ids
and class names follow the real data sets; the splits are chosen so that "the last image of each
class is the test image" would be wrong.
"""
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
AIRCRAFT_VARIANTS = ["707-320", "F-16A/B", "Cessna 172"]
CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
DOGS_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
NABIRDS_CLASSES = {0: "Birds", 1: "Perching Birds", 295: "Bewick's Wren", 313: "Black-capped Chickadee",
                   1000: "Red-winged Blackbird (Female/juvenile)", 1010: "Unused leaf class"}
NABIRDS_USED = [1000, 295, 313]  # out of numeric order on purpose: labels follow the class id, not file order


def jpeg(path: Path, seed: int = 0, size=(16, 16), banner: int = 0) -> Path:
    """A noisy JPEG; with `banner`, its bottom `banner` rows are pure blue and the rest has no blue."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    a = np.random.default_rng(seed).integers(40, 220, (h + banner, w, 3)).astype(np.uint8)
    if banner:
        a[:h] = (230, 40, 0)
        a[h:] = (0, 0, 255)
    Image.fromarray(a).save(path, "JPEG", quality=95, subsampling=0)  # 4:4:4: no colour bleeds across rows
    return path


def _write(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _cell(strings, shape) -> np.ndarray:
    """A MATLAB cell array of strings, as savemat writes it."""
    c = np.empty(len(strings), dtype=object)
    c[:] = list(strings)
    return c.reshape(shape)


def _struct(records: list[dict]) -> np.ndarray:
    """A 1xN MATLAB struct array with the records' fields."""
    fields = list(records[0])
    s = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(records):
        s[0, i] = tuple(np.array([[v]], dtype=np.uint16) if isinstance(v, int) else np.array([v]) for v in r.values())
    return s


# ---------------------------------------------------------------- CUB-200-2011 (and the synthetic set's format)

CUB_TRAIN = [1, 0, 1]  # is_training_image of images 1..3 of each class


def make_cub(root: Path, extra: dict | None = None) -> Path:
    """CUB_200_2011/ with 3 classes x 3 images; `extra` maps more relative image paths to their class id
    (1-based), added to the index as training images (used for bad files)."""
    tree = root / "CUB_200_2011"
    images, labels, split = [], [], []
    for c, name in enumerate(CUB_CLASSES, 1):
        stem = name.split(".", 1)[1]
        for i in range(3):
            k = len(images) + 1
            rel = f"{name}/{stem}_{k:04d}_{790 + k}.jpg"
            jpeg(tree / "images" / rel, seed=k)
            images.append(f"{k} {rel}")
            labels.append(f"{k} {c}")
            split.append(f"{k} {CUB_TRAIN[i]}")
    for rel, c in (extra or {}).items():
        k = len(images) + 1
        images.append(f"{k} {rel}")
        labels.append(f"{k} {c}")
        split.append(f"{k} 1")
    _write(tree / "images.txt", images)
    _write(tree / "image_class_labels.txt", labels)
    _write(tree / "train_test_split.txt", split)
    _write(tree / "classes.txt", [f"{c} {n}" for c, n in enumerate(CUB_CLASSES, 1)])
    return tree


# ---------------------------------------------------------------- FGVC-Aircraft

AIRCRAFT_TRAINVAL = {"0034309": "707-320", "0034958": "707-320", "1514522": "F-16A/B",
                     "0062765": "F-16A/B", "1213449": "Cessna 172"}
AIRCRAFT_TEST = {"0056978": "707-320", "1107962": "F-16A/B", "0209554": "Cessna 172", "1700482": "Cessna 172"}


def make_aircraft(root: Path) -> Path:
    """fgvc-aircraft-2013b/data/ with images 16 wide x 36 tall: 16 rows of picture over a 20-row blue banner."""
    data = root / "fgvc-aircraft-2013b" / "data"
    for k, image_id in enumerate([*AIRCRAFT_TRAINVAL, *AIRCRAFT_TEST]):
        jpeg(data / "images" / f"{image_id}.jpg", seed=k, banner=20)
    _write(data / "variants.txt", AIRCRAFT_VARIANTS)
    _write(data / "images_variant_trainval.txt", [f"{i} {v}" for i, v in AIRCRAFT_TRAINVAL.items()])
    _write(data / "images_variant_test.txt", [f"{i} {v}" for i, v in AIRCRAFT_TEST.items()])
    # the family/manufacturer files and the train/val files are there too, and are not the variant split
    _write(data / "images_variant_train.txt", [f"{i} {v}" for i, v in list(AIRCRAFT_TRAINVAL.items())[:2]])
    _write(data / "families.txt", ["Boeing 707", "F-16", "Cessna 172"])
    return data


# ---------------------------------------------------------------- Stanford Cars

CARS_TRAIN = {"00001.jpg": 1, "00002.jpg": 3, "00003.jpg": 2, "00004.jpg": 1}
CARS_TEST = {"00001.jpg": 2, "00002.jpg": 3, "00003.jpg": 1}


def _bbox(**r) -> dict:
    return {"bbox_x1": 1, "bbox_y1": 2, "bbox_x2": 14, "bbox_y2": 15, **r}


def make_cars_devkit(root: Path) -> Path:
    """The original release: cars_train/, cars_test/ (same file names in both), devkit/*.mat and
    cars_test_annos_withlabels.mat."""
    tree = root / "stanford-cars"
    for k, f in enumerate(CARS_TRAIN):
        jpeg(tree / "cars_train" / f, seed=k)
    for k, f in enumerate(CARS_TEST):
        jpeg(tree / "cars_test" / f, seed=100 + k)
    (tree / "devkit").mkdir(parents=True)
    savemat(tree / "devkit" / "cars_meta.mat", {"class_names": _cell(CARS_CLASSES, (1, 3))})
    savemat(tree / "devkit" / "cars_train_annos.mat",
            {"annotations": _struct([_bbox(**{"class": c, "fname": f}) for f, c in CARS_TRAIN.items()])})
    savemat(tree / "devkit" / "cars_test_annos.mat",  # the devkit's test file has no labels
            {"annotations": _struct([_bbox(fname=f) for f in CARS_TEST])})
    savemat(tree / "cars_test_annos_withlabels.mat",
            {"annotations": _struct([_bbox(**{"class": c, "fname": f}) for f, c in CARS_TEST.items()])})
    return tree


CARS_ANNOS = [("car_ims/000001.jpg", 1, 0), ("car_ims/000002.jpg", 1, 1), ("car_ims/000003.jpg", 2, 0),
              ("car_ims/000004.jpg", 2, 0), ("car_ims/000005.jpg", 2, 1), ("car_ims/000006.jpg", 3, 1),
              ("car_ims/000007.jpg", 3, 0)]  # (relative_im_path, class, test)


def make_cars_annos(root: Path, split_folders: bool = True) -> Path:
    """One cars_annos.mat with a test flag per image. `split_folders`: images in cars_train/ and cars_test/
    by that flag (fastai's stanford-cars archive); else all in car_ims/ (the original car_ims release)."""
    tree = root / "stanford-cars"
    for k, (rel, _, test) in enumerate(CARS_ANNOS):
        folder = ("cars_test" if test else "cars_train") if split_folders else "car_ims"
        jpeg(tree / folder / Path(rel).name, seed=k)
    savemat(tree / "cars_annos.mat", {
        "annotations": _struct([_bbox(relative_im_path=rel, **{"class": c, "test": t}) for rel, c, t in CARS_ANNOS]),
        "class_names": _cell(CARS_CLASSES, (1, 3))})
    return tree


# ---------------------------------------------------------------- Stanford Dogs

DOGS_TRAIN = [("n02085620-Chihuahua/n02085620_10074.jpg", 1), ("n02085782-Japanese_spaniel/n02085782_1039.jpg", 2),
              ("n02085936-Maltese_dog/n02085936_10073.jpg", 3), ("n02085936-Maltese_dog/n02085936_10130.jpg", 3)]
DOGS_TEST = [("n02085620-Chihuahua/n02085620_2650.jpg", 1), ("n02085782-Japanese_spaniel/n02085782_1058.jpg", 2)]


def _dogs_list(items) -> dict:
    files = [f for f, _ in items]
    return {"file_list": _cell(files, (len(files), 1)),
            "annotation_list": _cell([f[:-4] for f in files], (len(files), 1)),
            "labels": np.array([[float(c)] for _, c in items])}


def make_dogs(root: Path) -> Path:
    """stanford-dogs/ with Images/<wnid-breed>/*.jpg (images.tar) and train_list.mat, test_list.mat (lists.tar)."""
    tree = root / "stanford-dogs"
    for k, (f, _) in enumerate(DOGS_TRAIN + DOGS_TEST):
        jpeg(tree / "Images" / f, seed=k)
    savemat(tree / "train_list.mat", _dogs_list(DOGS_TRAIN))
    savemat(tree / "test_list.mat", _dogs_list(DOGS_TEST))
    savemat(tree / "file_list.mat", _dogs_list(DOGS_TRAIN + DOGS_TEST))
    return tree


# ---------------------------------------------------------------- NABirds

NABIRDS_IMAGES = [  # (uuid, class id, is_training_image)
    ("0000139e-21dc-4d0c-bfe1-4cae3c85c829", 1000, 0), ("0000d9fc-4e02-4c06-a0af-a55cfb16b12b", 1000, 1),
    ("00019306-9d83-4334-b255-a447742edce3", 295, 1), ("0001afd4-99a1-4a67-b940-d419413e23b3", 295, 0),
    ("000332b8-997c-4540-9647-2f0a8495aecf", 313, 1), ("000343bd-5215-49ba-ab9c-7c97a70ac1a5", 313, 1)]


def make_nabirds(root: Path) -> Path:
    """nabirds/ in CUB's format; classes.txt also lists parent classes (and a leaf) that have no images."""
    tree = root / "nabirds"
    images, labels, split = [], [], []
    for k, (uuid, c, train) in enumerate(NABIRDS_IMAGES):
        rel = f"{c:04d}/{uuid.replace('-', '')}.jpg"
        jpeg(tree / "images" / rel, seed=k)
        images.append(f"{uuid} {rel}")
        labels.append(f"{uuid} {c}")
        split.append(f"{uuid} {train}")
    _write(tree / "images.txt", images)
    _write(tree / "image_class_labels.txt", labels)
    _write(tree / "train_test_split.txt", split)
    _write(tree / "classes.txt", [f"{c} {n}" for c, n in NABIRDS_CLASSES.items()])
    return tree


# ---------------------------------------------------------------- your own folders

def make_folder(root: Path, valid: str = "valid") -> Path:
    """train/<class>/*.jpg and <valid>/<class>/*.jpg."""
    tree = root / "mine"
    for c in ("heron", "egret"):
        for i in range(2):
            jpeg(tree / "train" / c / f"{i}.jpg", seed=i)
        jpeg(tree / valid / c / "0.jpg", seed=9)
    return tree


def truncate(path: Path) -> Path:
    """Cut a JPEG in half: its header is fine, its data ends early."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
