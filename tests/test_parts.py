"""`apikit/data/parts.py`: CUB-layout part annotations and the generated set's discriminative parts."""
import json
from pathlib import Path

import pytest

from apikit.data import synthetic
from apikit.data.parts import discriminative_parts, read_parts

SYN = dict(n_classes=4, n_train=2, n_test=1, size=48)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic.make(tmp_path_factory.mktemp("parts") / "synthetic", **SYN)


def test_read_parts_and_discriminative_parts(root, tmp_path):
    locs = read_parts(root)
    n_images = SYN["n_classes"] * (SYN["n_train"] + SYN["n_test"])
    assert list(locs.columns) == ["image_id", "part_id", "x", "y", "visible", "path", "class_id"]
    assert len(locs) == n_images * 15 and locs["visible"].dtype == bool
    assert all(Path(p).is_file() for p in locs["path"].unique())
    assert locs.attrs["parts"][2] == "beak" and locs.attrs["root"] == root
    disc = discriminative_parts(root)
    assert sorted(disc) == sorted(locs["class_id"].unique()) and all(disc.values())
    meta = json.loads((root / synthetic.META).read_text())
    assert disc == {c["class_id"]: c["discriminative_parts"] for c in meta["classes"]}
    assert discriminative_parts(tmp_path) is None  # no synthetic.json: CUB


def test_a_hand_written_cub_layout(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "images.txt").write_text("1 001.Black_footed_Albatross/a b.jpg\n2 002.Laysan_Albatross/c.jpg\n")
    (tmp_path / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (tmp_path / "parts" / "parts.txt").write_text("1 back\n2 beak\n")
    (tmp_path / "parts" / "part_locs.txt").write_text("1 1 10.5 20.0 1\n1 2 0.0 0.0 0\n2 2 3.0 4.0 1\n")
    locs = read_parts(tmp_path)
    assert locs[["image_id", "part_id", "x", "y", "visible", "class_id"]].values.tolist() == [
        [1, 1, 10.5, 20.0, True, 1], [1, 2, 0.0, 0.0, False, 1], [2, 2, 3.0, 4.0, True, 2]]
    assert locs["path"].iloc[0] == tmp_path / "images" / "001.Black_footed_Albatross" / "a b.jpg"  # spaces kept
    assert locs.attrs["parts"] == {1: "back", 2: "beak"}


def test_part_locations_of_unknown_images_are_refused(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "images.txt").write_text("1 a/x.jpg\n")
    (tmp_path / "image_class_labels.txt").write_text("1 1\n")
    (tmp_path / "parts" / "part_locs.txt").write_text("1 1 1 1 1\n7 1 1 1 1\n")
    with pytest.raises(ValueError, match="names images that are not in"):
        read_parts(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no part annotations"):
        read_parts(tmp_path / "parts")
