"""Tests for apikit/data/synthetic.py: CUB-200-2011's exact file formats, determinism, caching and speed."""
import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apikit.data import synthetic
from apikit.data.errors import CacheWarning

SMALL = dict(n_classes=6, n_train=4, n_test=2, size=64, seed=0)  # 6 classes -> 2 groups of 3, 36 images
N_IMAGES = 6 * (4 + 2)
CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]
TRAIT_PART_IDS = {"bill_length": [2], "bill_curve": [2], "crown_patch": [5, 6], "eye_ring": [7, 11],
                  "wing_bar": [9, 13], "tail_shape": [14], "girth": [3, 4]}
FLOAT = r"-?\d+\.\d"  # CUB writes coordinates with one decimal, e.g. "60.0"


def lines(path, name):
    return (Path(path) / name).read_text().splitlines()


def tree(path):
    """Every file under path, as {relative path: bytes}."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synthetic.make(tmp_path_factory.mktemp("small") / "cub", **SMALL)


def test_text_files_have_cub_formats(small):
    names = [f"{i:03d}.Group_{g}_{f}_{k}" for i, (g, f, k) in enumerate(
        [("A", "Tern", 1), ("A", "Tern", 2), ("A", "Tern", 3), ("B", "Sparrow", 1), ("B", "Sparrow", 2),
         ("B", "Sparrow", 3)], start=1)]
    assert lines(small, "classes.txt") == [f"{i} {n}" for i, n in enumerate(names, start=1)]
    assert lines(small, "parts/parts.txt") == [f"{i} {n}" for i, n in enumerate(CUB_PARTS, start=1)]

    # class-major order, 6 images per class, the first 4 of each class for training
    expected_images = [f"{c * 6 + i} {names[c]}/{names[c][4:]}_{i:04d}.jpg" for c in range(6) for i in range(1, 7)]
    assert lines(small, "images.txt") == expected_images
    assert lines(small, "image_class_labels.txt") == [f"{k} {(k - 1) // 6 + 1}" for k in range(1, N_IMAGES + 1)]
    assert lines(small, "train_test_split.txt") == [f"{k} {int((k - 1) % 6 < 4)}" for k in range(1, N_IMAGES + 1)]


def test_split_counts_per_class(small):
    split = dict(line.split() for line in lines(small, "train_test_split.txt"))
    label = dict(line.split() for line in lines(small, "image_class_labels.txt"))
    for c in range(1, 7):
        flags = [split[k] for k in label if label[k] == str(c)]
        assert flags.count("1") == 4 and flags.count("0") == 2


def test_every_image_exists_at_the_requested_size(small):
    for line in lines(small, "images.txt"):
        with Image.open(small / "images" / line.split(" ", 1)[1]) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 64))


def test_bounding_boxes_lie_in_the_image(small):
    rows = lines(small, "bounding_boxes.txt")
    assert len(rows) == N_IMAGES
    for k, row in enumerate(rows, start=1):
        assert re.fullmatch(rf"{k} {FLOAT} {FLOAT} {FLOAT} {FLOAT}", row), row
        x, y, w, h = map(float, row.split()[1:])
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= 64 + 1e-6 and y + h <= 64 + 1e-6
        assert w > 10 and h > 5  # a bird, not a speck


def test_part_locs_have_one_line_per_image_and_part(small):
    rows = lines(small, "parts/part_locs.txt")
    assert len(rows) == N_IMAGES * 15
    boxes = [list(map(float, r.split()[1:])) for r in lines(small, "bounding_boxes.txt")]
    n_visible = 0
    for n, row in enumerate(rows):
        k, p = n // 15 + 1, n % 15 + 1
        assert re.fullmatch(rf"{k} {p} {FLOAT} {FLOAT} [01]", row), row
        x, y, v = float(row.split()[2]), float(row.split()[3]), int(row.split()[4])
        if v:
            n_visible += 1
            assert 0 <= x < 64 and 0 <= y < 64
            bx, by, bw, bh = boxes[k - 1]  # every part is on the bird, so inside its box
            assert bx - 0.5 <= x <= bx + bw + 0.5 and by - 0.5 <= y <= by + bh + 0.5
        else:
            assert (x, y) == (0.0, 0.0)  # as CUB writes unseen parts
    assert n_visible > N_IMAGES * 15 // 2


def test_far_side_eye_and_wing_are_hidden(small):
    vis = np.array([int(r.split()[4]) for r in lines(small, "parts/part_locs.txt")]).reshape(N_IMAGES, 15)
    left_eye, right_eye, left_wing, right_wing = 6, 10, 8, 12  # 0-based columns
    assert not (vis[:, left_eye] & vis[:, right_eye]).any()
    assert not (vis[:, left_wing] & vis[:, right_wing]).any()
    # a side-on bird shows one side: its eye and wing are on the same side
    assert not (vis[:, left_eye] & vis[:, right_wing]).any()
    assert not (vis[:, right_eye] & vis[:, left_wing]).any()


def test_metadata_and_groups(small):
    meta = json.loads((small / "synthetic.json").read_text())
    assert meta["params"] == {**SMALL, "held_out": "test", "version": synthetic.VERSION}
    assert meta["groups"] == [[0, 1, 2], [3, 4, 5]]
    assert synthetic.groups(small) == [[0, 1, 2], [3, 4, 5]]
    assert meta["parts"] == {str(i): n for i, n in enumerate(CUB_PARTS, start=1)}
    classes = meta["classes"]
    assert [c["class_id"] for c in classes] == [1, 2, 3, 4, 5, 6]
    for base, mates in ((0, (1, 2)), (3, (4, 5))):
        assert classes[base]["trait"] is None
        union = sorted({p for m in mates for p in TRAIT_PART_IDS[classes[m]["trait"]]})
        assert classes[base]["discriminative_parts"] == union
        for m in mates:
            assert classes[m]["discriminative_parts"] == TRAIT_PART_IDS[classes[m]["trait"]]


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again = synthetic.make(tmp_path / "again", **SMALL)
    assert tree(again) == tree(small)
    other = tree(synthetic.make(tmp_path / "other", **{**SMALL, "seed": 1}))
    mine = tree(small)
    assert other.keys() == mine.keys()
    images = [k for k in mine if k.endswith(".jpg")]
    assert sum(other[k] != mine[k] for k in images) == len(images)


def test_second_make_is_cached(tmp_path):
    path = synthetic.make(tmp_path / "cub", **SMALL)
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    assert synthetic.make(tmp_path / "cub", **SMALL) == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == before
    assert [p.name for p in tmp_path.iterdir()] == ["cub"]  # no temporary siblings left behind


def test_other_params_are_redrawn(tmp_path):
    synthetic.make(tmp_path / "cub", **SMALL)
    path = synthetic.make(tmp_path / "cub", **{**SMALL, "n_classes": 4, "n_test": 1})
    assert len(lines(path, "images.txt")) == 4 * 5
    assert len(lines(path, "classes.txt")) == 4
    assert not (path / "images" / "006.Group_B_Sparrow_3").exists()
    assert json.loads((path / "synthetic.json").read_text())["params"]["n_classes"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["cub"]


@pytest.mark.parametrize("damage", ["marker", "image"])
def test_partial_set_is_redrawn(tmp_path, damage):
    """Without its marker a set is unfinished and drawn again quietly; with it, a missing image is named."""
    path = synthetic.make(tmp_path / "cub", **SMALL)
    first = tree(path)
    rel = "images/" + lines(path, "images.txt")[5].split(" ", 1)[1]
    (path / rel).unlink()
    if damage == "marker":
        (path / synthetic.MARKER).unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synthetic.make(path, **SMALL)
    said = [str(w.message) for w in caught if w.category is CacheWarning]
    assert said == ([] if damage == "marker" else [
        f"{path} is not the generated set drawn there: 1 file(s) differ from what was drawn or are gone ({rel}): a "
        "label file edited, images swapped or damaged. It is drawn again."])
    assert tree(path) == first


def _swap(a, b):
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def _drift(path, how):
    """Change the set on disk as a hand or a disk might; the files changed, relative to the set."""
    images = ["images/" + line.split(" ", 1)[1] for line in lines(path, "images.txt")]
    if how == "label":  # image 1 relabelled as class 2: the set would train on a wrong label
        labels = path / "image_class_labels.txt"
        labels.write_text(labels.read_text().replace("1 1\n", "1 2\n", 1))
        return ["image_class_labels.txt"]
    if how == "swap":  # two images of different classes swapped: the labels now name the wrong birds
        _swap(path / images[0], path / images[-1])
        return [images[0], images[-1]]
    if how == "damage":  # a truncated image would only be excluded, shrinking the set
        (path / images[3]).write_bytes((path / images[3]).read_bytes()[:200])
        return [images[3]]
    if how == "fifo":  # never opened to wait for a writer
        (path / images[2]).unlink()
        os.mkfifo(path / images[2])
        return [images[2]]
    (path / images[4]).unlink()  # "zero": a link to a device that never ends, never read
    os.symlink("/dev/zero", path / images[4])
    return [images[4]]


@pytest.mark.parametrize("how", ["label", "swap", "damage", "fifo", "zero"])
def test_a_set_that_drifted_from_what_was_drawn_is_named_and_drawn_again(tmp_path, monkeypatch, how):
    """The marker records every file's sha256: an edited label file, swapped or damaged images, a FIFO or a link to
    /dev/zero in place of an image are found on the next use (read_split here, as a run reads it), named in a
    warning, and the set is drawn again, as first drawn."""
    import threading
    from apikit.data import read_split
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path))
    small = dict(n_classes=4, n_train=2, n_test=1, size=32)
    root = Path(read_split("synthetic", synthetic=small).attrs["root"])
    first = tree(root)
    changed = _drift(root, how)
    result = []

    def read():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result.append((read_split("synthetic", synthetic=small), [str(w.message) for w in caught
                                                                      if w.category is CacheWarning]))
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    assert result, "reading the set hung"
    df, said = result[0]
    assert said == [f"{root} is not the generated set drawn there: {len(changed)} file(s) differ from what was drawn "
                    f"or are gone ({', '.join(changed)}): a label file edited, images swapped or damaged. It is drawn "
                    "again."]
    assert tree(root) == first
    assert df["label"].tolist() == [k // 3 for k in range(12)]  # every image under the class it was drawn for


def test_foreign_directory_is_left_alone(tmp_path):
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        synthetic.make(tmp_path / "cub", **SMALL)
    assert (tmp_path / "cub" / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["cub"]


def test_empty_directory_is_filled(tmp_path):
    (tmp_path / "cub").mkdir()
    path = synthetic.make(tmp_path / "cub", **SMALL)
    assert len(lines(path, "images.txt")) == N_IMAGES


@pytest.mark.parametrize("bad", [dict(n_classes=0), dict(size=8), dict(n_train=0, n_test=0), dict(n_train=2.5)])
def test_bad_params_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        synthetic.make(tmp_path / "cub", **{**SMALL, **bad})


def test_default_set_draws_in_30_seconds(tmp_path):
    start = time.perf_counter()
    path = synthetic.make(tmp_path / "cub")
    elapsed = time.perf_counter() - start
    assert len(lines(path, "images.txt")) == 24 * 60
    assert len(lines(path, "parts/part_locs.txt")) == 24 * 60 * 15
    assert synthetic.groups(path) == [[4 * g + k for k in range(4)] for g in range(6)]
    assert elapsed <= 30, f"default set took {elapsed:.1f} s"


def test_other_generator_settings_get_their_own_folder(tmp_path, monkeypatch):
    """get_dls('synthetic', synthetic=...) without a path never redraws the default set in place."""
    from apikit.data import read_split
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path))
    small = dict(n_classes=4, n_train=2, n_test=1, size=32)
    df = read_split("synthetic", synthetic=small)
    root = Path(df.attrs["root"])
    assert root.parent == tmp_path and root.name.startswith("synthetic-") and len(df) == 12
    assert Path(read_split("synthetic", synthetic=small).attrs["root"]) == root
    assert not (tmp_path / "synthetic").exists()


def _make_in_a_process(args):
    from apikit.data import synthetic
    path, params = args
    root = synthetic.make(path, **params)
    return sorted(p.name for p in (root / "images").rglob("*.jpg"))


def test_processes_drawing_one_set_share_one_draw(tmp_path):
    """Three processes on a fresh path: one draws, the others wait and read it; no set is swapped under a reader."""
    import multiprocessing as mp
    params = dict(n_classes=4, n_train=2, n_test=1, size=32)
    with mp.get_context("fork").Pool(3) as pool:
        got = pool.map(_make_in_a_process, [(tmp_path / "syn", params)] * 3)
    assert got[0] == got[1] == got[2] and len(got[0]) == 12
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_a_validation_split_is_drawn_apart_from_the_test_split(tmp_path):
    """held_out="valid": the same species and training images; other held-out images than the test split's."""
    test = synthetic.make(tmp_path / "test", **{**SMALL, "n_test": 2})
    valid = synthetic.make(tmp_path / "valid", **{**SMALL, "n_test": 2}, held_out="valid")
    split = [line.split()[1] for line in (test / "train_test_split.txt").read_text().splitlines()]
    images = [line.split()[1] for line in (test / "images.txt").read_text().splitlines()]
    assert (valid / "images.txt").read_text() == (test / "images.txt").read_text()
    for rel, is_train in zip(images, split):
        same = (test / "images" / rel).read_bytes() == (valid / "images" / rel).read_bytes()
        assert same == (is_train == "1"), rel
    assert (test / "classes.txt").read_text() == (valid / "classes.txt").read_text()
    with pytest.raises(ValueError, match="held_out must be one of"):
        synthetic.make(tmp_path / "bad", **SMALL, held_out="train")


def test_what_a_killed_draw_left_is_removed(tmp_path):
    """A process killed while drawing leaves a half-drawn .tmp folder (or an .old one) beside the set: the next
    draw removes it, and the lock file goes when it is let go."""
    (tmp_path / ".synthetic-0a1b2c3d.x1y2z3.tmp" / "images").mkdir(parents=True)
    (tmp_path / ".synthetic-0a1b2c3d.x1y2z3.tmp" / "images" / "half.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / ".synthetic-0a1b2c3d.q9.old" / "set").mkdir(parents=True)
    (tmp_path / ".synthetic.kept.tmp").mkdir()  # another set's: not this one's to remove
    synthetic.make(tmp_path / "synthetic-0a1b2c3d", n_classes=2, n_train=1, n_test=1, size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".synthetic.kept.tmp", "synthetic-0a1b2c3d"]


def test_a_full_disk_while_drawing_names_the_folder_drawn_into(tmp_path, monkeypatch):
    """ENOSPC from PIL mid-draw: DiskFull names the set's folder (in the data root), and nothing half-drawn stays."""
    import errno
    from PIL import Image as PILImage
    from apikit.runs import DiskFull
    save, saved = PILImage.Image.save, []

    def save_on_a_full_disk(self, fp, *args, **kwargs):
        saved.append(fp)
        if len(saved) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)
    monkeypatch.setattr(PILImage.Image, "save", save_on_a_full_disk)
    path = tmp_path / "data" / "synthetic-0a1b2c3d"
    with pytest.raises(DiskFull) as e:
        synthetic.make(path, **SMALL)
    assert str(e.value) == (f"[Errno 28] the disk is full: the generated set could not be drawn into {path} (OSError: "
                            "[Errno 28] No space left on device); free space there, or set APIKIT_DATA to a folder on "
                            f"a disk with room: '{path}'")
    assert e.value.filename == str(path) and list((tmp_path / "data").iterdir()) == []


def test_drawing_shows_its_count_once(tmp_path, capsys):
    synthetic.make(tmp_path / "cub", **SMALL)
    lines = capsys.readouterr().out.splitlines()
    assert 2 <= len(lines) <= 11 and lines[0] == f"drawing the synthetic set (6 species): 0/{N_IMAGES} images"
    assert re.fullmatch(rf"drawing the synthetic set \(6 species\): {N_IMAGES}/{N_IMAGES} images \(100%\) in "
                        r"\d\d:\d\d", lines[-1])
    synthetic.make(tmp_path / "cub", **SMALL)
    assert capsys.readouterr().out == ""  # found finished: nothing drawn
