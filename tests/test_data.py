"""apikit.data: the five readers on tiny official-layout trees, the clear errors, bad images, downloads,
and the DataLoaders get_dls builds (class-balanced training batches, centre-cropped validation)."""
import contextlib
import dataclasses
import hashlib
import logging
import shutil
import tarfile
import traceback
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from fastai.vision.core import imagenet_stats
from PIL import Image

import fake_trees as ft
import os

from apikit.data import CountMismatchWarning, DataSetNotFound, SOURCES, get_dls, read_split
from apikit.data.errors import InvalidDataSet, LayoutWarning
from apikit.data import download as download_mod
from apikit.data import verify as verify_mod
from apikit.data.sources import Archive
from apikit.data.transforms import CropBanner
from apikit.sampler import ClassBalancedDL
from fastai.vision.core import PILImage

SMALL = dict(size=32, resize=40, n_classes=2, n_images=2, device="cpu")


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """apikit's data root (caches, downloads, synthetic sets) inside the test's tmp_path."""
    root = tmp_path / "apikit-data"
    monkeypatch.setenv("APIKIT_DATA", str(root))
    return root


def read(name, path, **kwargs):
    """read_split on a tiny tree, which must warn that the counts are not the official ones."""
    with pytest.warns(CountMismatchWarning, match="official split"):
        return read_split(name, path, **kwargs)


def assert_no_chain(err):
    """The error prints alone: no "During handling of the above exception" soup."""
    text = "".join(traceback.format_exception(err))
    assert "During handling" not in text and "direct cause" not in text


def classes(df):
    return dict(zip(df.label, df.class_name))


def valid_names(df):
    return {p.name for p in df[df.is_valid].path}


@contextlib.contextmanager
def no_count_warning():
    """Fail on a CountMismatchWarning (data sets without official counts must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CountMismatchWarning)
        yield


# ---------------------------------------------------------------- the five readers

def test_cub(tmp_path):
    tree = ft.make_cub(tmp_path)
    for path in (tmp_path, tree):  # the parent, or the folder with the index files
        df = read("cub", path)
        assert df.attrs["root"] == tree
        assert list(df.columns) == ["path", "label", "class_name", "is_valid"]
        assert ((~df.is_valid).sum(), df.is_valid.sum()) == (6, 3)
        assert classes(df) == {0: "001.Black_footed_Albatross", 1: "002.Laysan_Albatross", 2: "003.Sooty_Albatross"}
        assert valid_names(df) == {"Black_footed_Albatross_0002_792.jpg", "Laysan_Albatross_0005_795.jpg",
                                   "Sooty_Albatross_0008_798.jpg"}  # train_test_split.txt, not file order


def test_cub_archive_wrapped_twice(tmp_path):
    tree = ft.make_cub(tmp_path / "CUB_200_2011")  # CUB_200_2011/CUB_200_2011/images.txt
    assert read("cub", tmp_path).attrs["root"] == tree


def test_count_warning_names_found_and_official(tmp_path):
    ft.make_cub(tmp_path)
    with pytest.warns(CountMismatchWarning) as w:
        read_split("cub", tmp_path)
    msg = str(w[0].message)
    assert "6 train / 3 test images in 3 classes" in msg and "5994 / 5794 in 200" in msg


def test_aircraft(tmp_path):
    data = ft.make_aircraft(tmp_path)
    for path in (tmp_path, tmp_path / "fgvc-aircraft-2013b", data):
        df = read("aircraft", path)
        assert ((~df.is_valid).sum(), df.is_valid.sum()) == (5, 4)  # trainval / test, not train / val
        assert classes(df) == {0: "707-320", 1: "F-16A/B", 2: "Cessna 172"}  # variants.txt order
        assert valid_names(df) == {f"{i}.jpg" for i in ft.AIRCRAFT_TEST}
        assert df.set_index(df.path.map(lambda p: p.name)).label["1514522.jpg"] == 1


def test_aircraft_banner_is_cropped(tmp_path):
    ft.make_aircraft(tmp_path)
    img = PILImage.create(tmp_path / "fgvc-aircraft-2013b/data/images/0034309.jpg")
    cropped = CropBanner(20)(img)
    assert isinstance(cropped, PILImage) and (img.size, cropped.size) == ((16, 36), (16, 16))
    assert np.asarray(img)[-1, :, 2].min() > 200 and np.asarray(cropped)[..., 2].max() < 60
    with pytest.warns(CountMismatchWarning):
        dls = get_dls("aircraft", tmp_path, **SMALL)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats)
    for dl in (dls.valid, dls.train):
        x = dl.one_batch()[0] * std + mean
        assert x[:, 2].max() < 0.25 and x[:, 0].min() > 0.7  # no trace of the blue banner


def test_cars_devkit(tmp_path):
    tree = ft.make_cars_devkit(tmp_path)
    df = read("cars", tmp_path)
    assert df.attrs["root"] == tree
    assert ((~df.is_valid).sum(), df.is_valid.sum()) == (4, 3)
    assert classes(df) == dict(enumerate(ft.CARS_CLASSES))  # cars_meta.mat, 1-based class -> 0-based label
    by_path = df.set_index("path")
    # the same file name in both folders: the split decides which annotation applies
    assert by_path.loc[tree / "cars_train" / "00001.jpg", ["label", "is_valid"]].tolist() == [0, False]
    assert by_path.loc[tree / "cars_test" / "00001.jpg", ["label", "is_valid"]].tolist() == [1, True]


@pytest.mark.parametrize("split_folders", [True, False], ids=["fastai-archive", "car_ims"])
def test_cars_annos(tmp_path, split_folders):
    tree = ft.make_cars_annos(tmp_path, split_folders)
    df = read("cars", tmp_path)
    assert ((~df.is_valid).sum(), df.is_valid.sum()) == (4, 3)
    assert classes(df) == dict(enumerate(ft.CARS_CLASSES))
    assert valid_names(df) == {"000002.jpg", "000005.jpg", "000006.jpg"}  # the test flag
    image = tree / ("cars_test" if split_folders else "car_ims") / "000002.jpg"
    assert df.set_index("path").loc[image, ["label", "is_valid"]].tolist() == [0, True]


def test_dogs(tmp_path):
    tree = ft.make_dogs(tmp_path)
    df = read("dogs", tmp_path)
    assert df.attrs["root"] == tree
    assert ((~df.is_valid).sum(), df.is_valid.sum()) == (4, 2)
    assert classes(df) == {0: "Chihuahua", 1: "Japanese_spaniel", 2: "Maltese_dog"}
    assert valid_names(df) == {"n02085620_2650.jpg", "n02085782_1058.jpg"}


def test_nabirds_maps_only_classes_with_images(tmp_path):
    ft.make_nabirds(tmp_path)
    df = read("nabirds", tmp_path)
    assert ((~df.is_valid).sum(), df.is_valid.sum()) == (4, 2)
    assert df.attrs["classes"] == ["Bewick's Wren", "Black-capped Chickadee", "Red-winged Blackbird (Female/juvenile)"]
    assert classes(df) == {0: "Bewick's Wren", 1: "Black-capped Chickadee", 2: "Red-winged Blackbird (Female/juvenile)"}
    assert valid_names(df) == {"0000139e21dc4d0cbfe14cae3c85c829.jpg", "0001afd499a14a67b940d419413e23b3.jpg"}


@pytest.mark.parametrize("valid", ["valid", "val", "test"])
def test_folder(tmp_path, valid):
    tree = ft.make_folder(tmp_path, valid)
    with no_count_warning():
        df = read_split("folder", tree)
    assert ((~df.is_valid).sum(), df.is_valid.sum()) == (4, 2)
    assert classes(df) == {0: "egret", 1: "heron"}
    with pytest.raises(ValueError, match="needs path="):
        read_split("folder")


def test_fastai_archive_urls_are_fastais():
    """sources.py writes fastai's two archive URLs out, so that the data set names load without fastai."""
    from fastai.data.external import URLs
    assert (SOURCES["cub"].fastai_url, SOURCES["cars"].fastai_url) == (URLs.CUB_200_2011, URLs.CARS)
    assert [n for n, s in SOURCES.items() if s.fastai_url] == ["cub", "cars"]


@pytest.mark.parametrize("name, synthetic, message", [
    ("imagenet", None, "unknown data set 'imagenet'; valid names are 'cub', 'aircraft'"),
    ("cub", {"n_classes": 4}, "synthetic={'n_classes': 4} sets the generator of the 'synthetic' data set; it does "
                              "not apply to 'cub'."),
    ("folder", None, "dataset='folder' needs path= (the data_path parameter): the folder that holds train/ and valid/ "
                     "(or test/)."),
])
def test_a_data_set_request_is_checked_before_any_file_is_read(name, synthetic, message, monkeypatch):
    from apikit.data import readers
    from apikit.data.sources import check_source
    monkeypatch.setattr(readers, "locate", lambda *a: pytest.fail("looked for files"))
    for entry in (lambda: check_source(name, None, synthetic), lambda: read_split(name, synthetic=synthetic)):
        with pytest.raises(ValueError) as e:
            entry()
        assert message in str(e.value)


def read_folder(tree):
    with no_count_warning():
        return read_split("folder", tree)


def test_folder_nested_images_are_refused_not_made_a_class(tmp_path):
    tree = ft.make_folder(tmp_path)
    ft.jpeg(tree / "valid" / "heron" / "sub" / "1.jpg")
    ft.jpeg(tree / "valid" / "heron" / "sub" / "2.jpg")
    with pytest.raises(InvalidDataSet, match=r"valid/heron/sub \(2 image\(s\)\)") as e:
        read_folder(tree)
    assert "Move" in str(e.value)
    assert_no_chain(e.value)
    (tree / "valid" / "heron" / "sub" / "1.jpg").unlink()
    (tree / "valid" / "heron" / "sub" / "2.jpg").unlink()  # an empty subfolder (or one of notes) is harmless
    (tree / "valid" / "heron" / "sub" / "notes.txt").write_text("-")
    assert len(read_folder(tree)) == 6


def test_folder_images_outside_class_folders_are_refused(tmp_path):
    tree = ft.make_folder(tmp_path)
    ft.jpeg(tree / "train" / "stray.jpg")
    with pytest.raises(InvalidDataSet, match=r"no class folder: train/stray.jpg"):
        read_folder(tree)


@pytest.mark.parametrize("where", ["train/heron/loop", "train/loop"])
def test_folder_link_loop_is_refused(tmp_path, where):
    tree = ft.make_folder(tmp_path)
    os.symlink("..", tree / where)
    with pytest.raises(InvalidDataSet, match=f"loop.*: '{where}' -> '\\.\\.'"):
        read_folder(tree)


def test_folder_link_between_splits_is_refused(tmp_path):
    tree = ft.make_folder(tmp_path)
    os.symlink(tree / "train" / "heron" / "1.jpg", tree / "valid" / "heron" / "1.jpg")
    with pytest.raises(InvalidDataSet, match=r"both in train/ and valid/.*: valid/heron/1.jpg"):
        read_folder(tree)
    (tree / "valid" / "heron" / "1.jpg").unlink()
    os.symlink(tree / "train" / "heron", tree / "train" / "ibis")  # every heron also an ibis
    with pytest.raises(InvalidDataSet, match=r"2 image\(s\) are in two classes.*train/ibis/0.jpg"):
        read_folder(tree)


def test_folder_links_leaving_the_tree_are_named(tmp_path):
    tree = ft.make_folder(tmp_path)
    os.symlink(ft.jpeg(tmp_path / "elsewhere" / "x.jpg", seed=3), tree / "train" / "heron" / "x.jpg")
    ft.jpeg(tmp_path / "elsewhere" / "ibis" / "0.jpg", seed=4)
    ft.jpeg(tmp_path / "elsewhere" / "ibis" / "1.jpg", seed=5)
    os.symlink(tmp_path / "elsewhere" / "ibis", tree / "train" / "ibis")
    with pytest.warns(LayoutWarning, match=r"2 link\(s\) lead outside.*train/heron/x.jpg.*train/ibis"):
        df = read_split("folder", tree)
    assert len(df) == 9 and df.attrs["classes"] == ["egret", "heron", "ibis"]


def test_folder_class_only_in_valid_is_refused(tmp_path):
    tree = ft.make_folder(tmp_path)
    ft.jpeg(tree / "valid" / "Heron" / "0.jpg")  # a misspelt folder
    with pytest.raises(InvalidDataSet, match=r"only in valid/.*'Heron'"):
        read_folder(tree)


# ---------------------------------------------------------------- clear errors

def test_what_a_data_set_name_leaves_open_is_named_by_its_source():
    from apikit.data.sources import content_of
    assert content_of({"dataset": "cub", "data_path": "/x"}) == {}
    assert content_of({"dataset": "folder", "data_path": "/x"}) == {"data_path": "/x"}
    assert content_of({"dataset": "synthetic", "synthetic": {"n_classes": 6}}) == {"synthetic": {"n_classes": 6}}
    assert content_of({"dataset": "synthetic"}) == {"synthetic": None}  # the generator's defaults
    assert content_of({"dataset": ["not", "a", "name"]}) == {} == content_of({})


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'cub', 'aircraft', 'cars', 'dogs', 'nabirds', 'synthetic', 'folder'"):
        get_dls("imagenet")
    with pytest.raises(ValueError, match="synthetic="):
        read_split("cub", synthetic=dict(n_classes=4))


def test_missing_tree_gives_one_clear_error(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(DataSetNotFound) as e:
        get_dls("cub", where)
    msg, err = str(e.value), e.value
    assert isinstance(err, FileNotFoundError)
    assert_no_chain(err)
    assert str(where) in msg and str(where / "CUB_200_2011") in msg
    assert "images.txt" in msg and "train_test_split.txt" in msg
    assert f'get_dls("cub", path={str(where)!r}, download=True)' in msg and "CUB_200_2011.tgz" in msg


def test_missing_nabirds_says_where_to_get_it(data_root):
    with pytest.raises(DataSetNotFound, match="dl.allaboutbirds.org/nabirds") as e:
        read_split("nabirds", download=True)
    assert str(data_root / "nabirds") in str(e.value) and "terms of use" in str(e.value)


def test_partial_tree(tmp_path):
    tree = ft.make_cub(tmp_path)
    (tree / "train_test_split.txt").unlink()
    with pytest.raises(DataSetNotFound, match=f"missing in {tree}: train_test_split.txt"):
        read_split("cub", tmp_path)


def test_missing_image_files(tmp_path):
    tree = ft.make_cub(tmp_path)
    gone = tree / "images/002.Laysan_Albatross/Laysan_Albatross_0004_794.jpg"
    gone.unlink()
    with pytest.raises(DataSetNotFound, match="incomplete: 1 image") as e:
        read_split("cub", tmp_path)
    assert str(gone) in str(e.value)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../../../../etc/passwd", "001.Black_footed_Albatross/../../x.jpg"])
def test_index_paths_outside_the_tree_are_refused(tmp_path, rel):
    tree = ft.make_cub(tmp_path, extra={rel: 1})
    with pytest.raises(InvalidDataSet, match="outside") as e:
        read_split("cub", tmp_path)
    assert rel in str(e.value) and str(tree) in str(e.value)
    assert_no_chain(e.value)


def test_aircraft_index_paths_outside_the_tree_are_refused(tmp_path):
    data = ft.make_aircraft(tmp_path)
    with open(data / "images_variant_test.txt", "a") as f:
        f.write("../../../etc/hostname 707-320\n")
    with pytest.raises(InvalidDataSet, match="outside"):
        read_split("aircraft", tmp_path)


# ---------------------------------------------------------------- undecodable images

def test_bad_images_are_excluded_and_reported(tmp_path, caplog, monkeypatch):
    empty, cut = "001.Black_footed_Albatross/empty.jpg", "002.Laysan_Albatross/cut.jpg"
    tree = ft.make_cub(tmp_path, extra={empty: 1, cut: 2})
    (tree / "images" / empty).write_bytes(b"")
    ft.truncate(ft.jpeg(tree / "images" / cut, seed=50))
    with caplog.at_level(logging.WARNING, logger="apikit.data"), pytest.warns(CountMismatchWarning):
        dls = get_dls("cub", tmp_path, **SMALL)
    bad = {tree / "images" / empty, tree / "images" / cut}
    assert set(dls.bad_images) == bad
    assert set(dls.bad_images_file.read_text().splitlines()) == {str(p) for p in bad}
    assert "2 image(s) cannot be decoded" in caplog.text and str(dls.bad_images_file) in caplog.text
    assert len(dls.train_ds) == 6 and not bad & set(dls.split.path)  # excluded, not replaced

    decoded, verify_image = [], verify_mod.verify_image

    def counted(fn):
        decoded.append(fn)
        return verify_image(fn)
    monkeypatch.setattr(verify_mod, "verify_image", counted)
    with pytest.warns(CountMismatchWarning):
        assert set(get_dls("cub", tmp_path, **SMALL).bad_images) == bad
    # From the cache: only the 2 images it lists are decoded again (a list naming good images would drop them).
    assert len(decoded) == len(bad)
    monkeypatch.undo()
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "apikit-data"))
    ft.jpeg(tree / "images" / cut, seed=50)  # repaired: the cache key changes and it is checked again
    with pytest.warns(CountMismatchWarning):
        dls = get_dls("cub", tmp_path, **SMALL)
    assert dls.bad_images == [tree / "images" / empty] and len(dls.train_ds) == 7


def test_a_file_that_vanishes_is_not_called_undecodable(tmp_path, monkeypatch):
    """A read error (here: the file is gone once the check starts) is not a decoding error: no silent drop."""
    import pandas as pd
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "apikit-data"))
    good = [ft.jpeg(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    split = pd.DataFrame({"path": good})
    split.attrs.update(name="vanishing", root=str(tmp_path))
    fingerprint = verify_mod.fingerprint

    def then_vanish(paths):
        key = fingerprint(paths)
        good[1].unlink(missing_ok=True)
        return key
    monkeypatch.setattr(verify_mod, "fingerprint", then_vanish)
    with pytest.raises(DataSetNotFound, match="could not be read") as e:
        verify_mod.exclude_bad_images(split)
    assert str(good[1]) in str(e.value)


# ---------------------------------------------------------------- DataLoaders

def test_get_dls_batches(tmp_path):
    ft.make_cub(tmp_path)
    with pytest.warns(CountMismatchWarning):
        dls = get_dls("cub", tmp_path, **SMALL)
    assert isinstance(dls.train, ClassBalancedDL) and list(dls.vocab) == ft.CUB_CLASSES
    assert (len(dls.train_ds), len(dls.valid_ds)) == (6, 3)
    x, y = dls.train.one_batch()
    assert x.shape == (4, 3, 32, 32) and x.device.type == "cpu"
    assert sorted(np.bincount(y.numpy()).tolist())[-2:] == [2, 2]  # 2 classes x 2 images

    # validation: squish-resize to 40, centre 32 crop, ImageNet normalisation; the same on every pass
    xv, yv = dls.valid.one_batch()
    assert torch.equal(xv, dls.valid.one_batch()[0]) and yv.tolist() == [0, 1, 2]
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in imagenet_stats)
    expected = []
    for path in dls.valid_ds.items.path:
        im = Image.open(path).convert("RGB").resize((40, 40), Image.BILINEAR).crop((4, 4, 36, 36))
        expected.append((torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 - mean) / std)
    assert torch.allclose(xv, torch.stack(expected), atol=1e-5)


def test_get_dls_normalises_with_the_statistics_given(tmp_path):
    """A backbone's own statistics (here EfficientNet-Lite's mean = std = 0.5) replace ImageNet's."""
    ft.make_cub(tmp_path)
    with pytest.warns(CountMismatchWarning):
        imagenet = get_dls("cub", tmp_path, **SMALL)
    with pytest.warns(CountMismatchWarning):
        lite = get_dls("cub", tmp_path, **SMALL, stats=([0.5] * 3, [0.5] * 3))
    xi, xl = imagenet.valid.one_batch()[0], lite.valid.one_batch()[0]
    raw = xi * torch.tensor(imagenet_stats[1]).view(3, 1, 1) + torch.tensor(imagenet_stats[0]).view(3, 1, 1)
    assert torch.allclose(xl, (raw - 0.5) / 0.5, atol=1e-5)
    assert float(xl.min()) >= -1 - 1e-5 and float(xl.max()) <= 1 + 1e-5


def test_get_dls_checks_sizes(tmp_path):
    ft.make_cub(tmp_path)
    with pytest.raises(ValueError, match="must not exceed resize"):
        get_dls("cub", tmp_path, size=48, resize=40)


def test_synthetic_loads_through_the_cub_reader(tmp_path, data_root):
    params = dict(n_classes=4, n_train=4, n_test=2, size=48)
    with no_count_warning():
        dls = get_dls("synthetic", tmp_path / "syn", synthetic=params, **SMALL)
    assert (len(dls.train_ds), len(dls.valid_ds), len(dls.vocab)) == (16, 8, 4)
    assert dls.train.one_batch()[0].shape == (4, 3, 32, 32) and dls.bad_images == []
    cub = read("cub", tmp_path / "syn")  # the generated tree is a CUB tree
    assert cub[["path", "label", "class_name", "is_valid"]].equals(dls.split[["path", "label", "class_name", "is_valid"]])
    with no_count_warning():  # default location: under the data root, in a folder of its own for these settings
        df = read_split("synthetic", synthetic=params)
    assert df.attrs["root"].parent == data_root and df.attrs["root"].name.startswith("synthetic-") and len(df) == 24


# ---------------------------------------------------------------- downloads (no network here)

def _tar(tmp_path, tree, name):
    """A .tar.gz of `tree` (as its archive holds it) and the md5 of the whole file."""
    archive = tmp_path / name
    with tarfile.open(archive, "w:gz") as t:
        t.add(tree, arcname=tree.name)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def _left_behind(root):
    return sorted(p.name for p in root.glob(".partial-*")) if root.exists() else []


def test_download_without_network(data_root, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(download_mod, "_download", offline)
    with pytest.raises(DataSetNotFound) as e:
        read_split("aircraft", download=True)
    msg = str(e.value)
    assert "no network" in msg and SOURCES["aircraft"].archives[0].url in msg and str(data_root) in msg
    assert "variants.txt" in msg
    assert_no_chain(e.value)
    assert not (data_root / "fgvc-aircraft-2013b").exists() and _left_behind(data_root) == []


def test_download_through_fastai_without_network(data_root, monkeypatch):
    def offline(url, dest):
        raise ConnectionError("no network")
    monkeypatch.setattr(download_mod, "_download", offline)
    with pytest.raises(DataSetNotFound, match="CUB_200_2011.tgz") as e:
        read_split("cub", download=True)
    assert "no network" in str(e.value) and not (data_root / "CUB_200_2011").exists()


def test_download_checks_and_extracts(tmp_path, data_root, monkeypatch):
    archive, md5 = _tar(tmp_path, ft.make_aircraft(tmp_path / "src").parent, "fgvc-aircraft-2013b.tar.gz")
    url = "https://example.invalid/fgvc-aircraft-2013b.tar.gz"
    monkeypatch.setattr(download_mod, "_download", lambda u, dest: shutil.copy(archive, dest))
    src = SOURCES["aircraft"]
    monkeypatch.setitem(SOURCES, "aircraft", dataclasses.replace(src, archives=(Archive(url, "md5", "0" * 32),)))
    with pytest.raises(DataSetNotFound, match="failed its checksum"):
        read_split("aircraft", download=True)
    assert not (data_root / "fgvc-aircraft-2013b").exists() and not (data_root / "archives" / archive.name).exists()
    assert _left_behind(data_root) == []

    monkeypatch.setitem(SOURCES, "aircraft", dataclasses.replace(src, archives=(Archive(url, "md5", md5),)))
    df = read("aircraft", None, download=True)
    assert df.attrs["root"] == data_root / "fgvc-aircraft-2013b" / "data" and len(df) == 9
    assert (data_root / "fgvc-aircraft-2013b" / ".apikit-complete").is_file() and _left_behind(data_root) == []


def _serve(monkeypatch, archive, pins=None):
    """`_download` copies `archive`; fastai's pinned size and md5-of-the-first-MiB are `pins` (default: its own)."""
    monkeypatch.setattr(download_mod, "_download", lambda url, dest: shutil.copy(archive, dest))
    from fastdownload import path_stats
    urls = SOURCES["cub"].fastai_url, SOURCES["cars"].fastai_url
    monkeypatch.setattr(download_mod, "_fastai_pins",
                        lambda: {u: path_stats(archive) for u in urls} if pins is None else pins)


def test_download_through_fastai_checks_extracts_and_moves_into_place(tmp_path, data_root, monkeypatch):
    tgz, _ = _tar(tmp_path, ft.make_cub(tmp_path / "src"), "CUB_200_2011.tgz")
    _serve(monkeypatch, tgz, pins={SOURCES["cub"].fastai_url: (tgz.stat().st_size, "0" * 32)})
    with pytest.raises(DataSetNotFound, match="failed its checksum"):
        read_split("cub", download=True)
    assert not (data_root / "CUB_200_2011").exists() and _left_behind(data_root) == []
    _serve(monkeypatch, tgz)
    df = read("cub", None, download=True)
    assert df.attrs["root"] == data_root / "CUB_200_2011" and len(df) == 9
    assert (data_root / "CUB_200_2011" / ".apikit-complete").is_file() and _left_behind(data_root) == []


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/apikit-escaped.txt", "link"])
def test_download_refuses_members_outside_the_tree(tmp_path, data_root, monkeypatch, member):
    """A crafted archive (`..`, absolute or link members) is refused, through fastai's route as through apikit's."""
    tree = ft.make_cub(tmp_path / "src")
    tgz = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(tree, arcname=tree.name)
        info = tarfile.TarInfo(member if member != "link" else "CUB_200_2011/link")
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, str(tmp_path)
            t.addfile(info)
        else:
            info.size = 5
            t.addfile(info, __import__("io").BytesIO(b"owned"))
    _serve(monkeypatch, tgz)
    with pytest.raises(DataSetNotFound, match="outside") as e:
        read_split("cub", download=True)
    assert (member if member != "link" else "CUB_200_2011/link") in str(e.value)
    assert not (data_root / "escaped.txt").exists() and not os.path.exists("/tmp/apikit-escaped.txt")
    assert not (data_root / "CUB_200_2011").exists() and _left_behind(data_root) == []


def test_download_of_two_archives_into_one_folder(tmp_path, data_root, monkeypatch):
    """Stanford Dogs: images.tar (Images/) and lists.tar (*.mat) both extract into stanford-dogs/."""
    tree = ft.make_dogs(tmp_path / "src")
    archives = {}
    for name, members in (("images.tar", ["Images"]), ("lists.tar", ["train_list.mat", "test_list.mat"])):
        archives[name] = tmp_path / name
        with tarfile.open(archives[name], "w") as t:
            for m in members:
                t.add(tree / m, arcname=m)
    monkeypatch.setattr(download_mod, "_download", lambda u, dest: shutil.copy(archives[u.rsplit("/", 1)[1]], dest))
    pinned = tuple(Archive(f"https://example.invalid/{n}", "sha256", hashlib.sha256(f.read_bytes()).hexdigest(),
                           f.stat().st_size) for n, f in archives.items())
    monkeypatch.setitem(SOURCES, "dogs", dataclasses.replace(SOURCES["dogs"], archives=pinned))
    (data_root / "stanford-dogs").mkdir(parents=True)
    (data_root / "stanford-dogs" / "notes.txt").write_text("someone's own files")
    with pytest.raises(DataSetNotFound, match="apikit did not write it"):  # never replaced
        read_split("dogs", download=True)
    shutil.rmtree(data_root / "stanford-dogs")
    df = read("dogs", None, download=True)
    assert df.attrs["root"] == data_root / "stanford-dogs" and len(df) == 6


# ---------------------------------------------------------------- pixels, names, held-out folders, cache

def test_a_folder_with_valid_and_val_is_refused(tmp_path):
    tree = ft.make_folder(tmp_path, "valid")
    shutil.copytree(tree / "valid", tree / "val")
    with pytest.raises(InvalidDataSet, match="both valid/ and val/ are there.*move the other folder out"):
        read_split("folder", tree)


def test_images_8_bit_rgb_would_clip_are_refused_naming_them(tmp_path):
    """A 16-bit PNG converts to RGB almost white, a float TIFF black: excluded with a warning naming each."""
    from apikit.data.errors import UnsupportedImageWarning
    tree = ft.make_folder(tmp_path)
    deep, flt = tree / "train" / "heron" / "deep.png", tree / "train" / "egret" / "float.tif"
    Image.fromarray(np.full((16, 16), 30000, np.uint16)).save(deep)
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(flt)
    with no_count_warning(), pytest.warns(UnsupportedImageWarning) as caught:
        dls = get_dls("folder", tree, **SMALL)
    said = " ".join(str(w.message) for w in caught if w.category is UnsupportedImageWarning)
    assert f"{deep} (pixel mode I" in said and f"{flt} (pixel mode F)" in said and "2 image(s)" in said
    assert set(dls.bad_images) == {deep, flt} and not {deep, flt} & set(dls.split.path)
    assert set(dls.bad_images_file.read_text().splitlines()) == {str(deep), str(flt)}


def _png_claiming(path, width, height):
    """A valid 1 x 1 PNG whose header says `width` x `height`: PIL refuses it as it opens it, as a real one."""
    import io
    import struct
    import zlib
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", width, height)  # IHDR's width and height, then its checksum
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path.write_bytes(bytes(png))
    return path


def test_an_image_too_large_for_pil_is_called_too_large_not_undecodable(tmp_path, caplog):
    """More pixels than PIL's decompression-bomb limit: excluded, with a warning that says so and how to use it."""
    from apikit.data.errors import UnsupportedImageWarning
    tree = ft.make_folder(tmp_path)
    huge = _png_claiming(tree / "train" / "heron" / "huge.png", 20000, 10000)
    with no_count_warning(), caplog.at_level(logging.WARNING, logger="apikit.data"), \
            pytest.warns(UnsupportedImageWarning) as caught:
        dls = get_dls("folder", tree, **SMALL)
    said = [str(w.message) for w in caught if w.category is UnsupportedImageWarning]
    assert said == [f"folder: 1 image(s) are too large: more than twice PIL.Image.MAX_IMAGE_PIXELS "
                    f"({Image.MAX_IMAGE_PIXELS}) pixels, PIL's decompression-bomb limit, so neither this check nor the "
                    f"DataLoader opens them: {huge} (too large: 200000000 pixels). They are excluded (listed in "
                    f"{dls.bad_images_file}); shrink them to use them."]
    assert "cannot be decoded" not in caplog.text
    assert dls.bad_images == [huge] and huge not in set(dls.split.path)
    assert dls.bad_images_file.read_text() == f"{huge}\n"


def test_the_bad_images_file_has_one_line_per_image(tmp_path):
    """A line break in a file name is escaped: one line per excluded image."""
    tree = ft.make_folder(tmp_path)
    odd = tree / "train" / "heron" / "bad\nname.jpg"
    odd.write_bytes(b"not an image")
    with no_count_warning():
        dls = get_dls("folder", tree, **SMALL)
    assert dls.bad_images == [odd]
    assert dls.bad_images_file.read_text() == f"{tree / 'train' / 'heron'}/bad\\nname.jpg\n"


@pytest.mark.parametrize("saved", ["null", "[1]", "made-up"])
def test_a_malformed_verified_images_list_is_checked_again(tmp_path, data_root, saved):
    """The cached check is validated as a whole: a list naming good images would drop them silently."""
    import json
    from apikit.data.errors import CacheWarning
    tree = ft.make_folder(tmp_path)
    with no_count_warning():
        get_dls("folder", tree, **SMALL)
    cache = next((data_root / "verified").glob("folder-*.json"))
    good = str(tree / "train" / "heron" / "0.jpg")
    made_up = dict(json.loads(cache.read_text()), bad={good: "undecodable"})
    cache.write_text({"null": "null", "[1]": "[1]", "made-up": json.dumps(made_up)}[saved])
    with no_count_warning(), pytest.warns(CacheWarning, match=f"{cache} is not a list of unusable images"):
        dls = get_dls("folder", tree, **SMALL)
    assert dls.bad_images == [] and len(dls.split) == 6
    assert json.loads(cache.read_text())["bad"] == {}


def test_the_checks_cache_holds_the_code_version(tmp_path, monkeypatch):
    """A new version of the check never trusts an old result: every image is decoded again."""
    tree = ft.make_folder(tmp_path)
    with no_count_warning():
        get_dls("folder", tree, **SMALL)
    decoded, verify_image = [], verify_mod.verify_image

    def counted(fn):
        decoded.append(fn)
        return verify_image(fn)
    monkeypatch.setattr(verify_mod, "verify_image", counted)
    with no_count_warning():
        get_dls("folder", tree, **SMALL)
    assert decoded == []
    monkeypatch.setattr(verify_mod, "VERSION", verify_mod.VERSION + 1)
    with no_count_warning():
        get_dls("folder", tree, **SMALL)
    assert len(decoded) == 6


def test_a_data_root_apikit_cannot_write_is_one_line_naming_it_and_the_fix(tmp_path, image_root, monkeypatch):
    """Drawing the generated set, or checking a folder's images (whose result is kept in the data root): a
    read-only APIKIT_DATA is named with the fix before any write into it, not a raw OSError on some file."""
    import re
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permission bits: a file stands where the folder would be
        ro.chmod(0o700)
        ro.rmdir()
        ro.write_text("")
    monkeypatch.setenv("APIKIT_DATA", str(ro))
    for load in (lambda: read_split("synthetic", synthetic=dict(n_classes=2, n_train=1, n_test=1, size=16)),
                 lambda: get_dls("folder", image_root, size=16, resize=16, n_classes=2, n_images=2, device="cpu")):
        with pytest.raises(PermissionError) as e:
            load()
        assert re.fullmatch(rf"APIKIT_DATA={re.escape(str(ro))} is not writable \((Permission denied|Read-only file "
                            r"system|a file stands in its way)\): apikit draws the generated set and keeps its image "
                            r"caches there; set APIKIT_DATA to a writable folder\.", str(e.value)), str(e.value)
        assert e.value._render_traceback_() == [f"NotWritable: {e.value}"]  # a notebook shows this line alone
    ro.chmod(0o700)
