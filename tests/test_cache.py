"""`apikit/data/cache.py`: the pre-resized image cache gives the same inputs, made once."""
import os
from pathlib import Path
import time

import numpy as np
import pytest
import torch
from PIL import Image

import fake_trees as ft
from apikit.data import get_dls
from apikit.data.errors import CountMismatchWarning

SMALL = dict(size=16, resize=20, n_classes=2, n_images=2, num_workers=0, device="cpu")


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "data"))
    return tmp_path / "data" / "cache"


def smooth_folder(root):
    """train/valid class folders of smooth 40 x 30 gradients (JPEG re-encoding barely changes them)."""
    yy, xx = np.mgrid[0:30, 0:40] / 40.0
    for split in ("train", "valid"):
        for c in range(3):
            for i in range(3):
                d = root / split / f"class{c}"
                d.mkdir(parents=True, exist_ok=True)
                a = np.stack([xx + 0.1 * i, yy, np.full_like(xx, c / 3)], -1).clip(0, 1)
                Image.fromarray((a * 255).astype(np.uint8)).save(d / f"{i}.jpg", quality=95)
    return root


def test_cache_holds_squished_copies_made_once(tmp_path, cache_root):
    tree = smooth_folder(tmp_path / "mine")
    dls = get_dls("folder", tree, cache=True, **SMALL)
    paths = list(dls.split["path"])
    assert all(p.startswith(str(cache_root / "folder-20")) for p in paths)
    assert all(Image.open(p).size == (20, 20) for p in paths)
    assert sorted(map(str, dls.split["original"])) == sorted(str(p) for p in (tree).rglob("*.jpg"))
    mtimes = {p: os.stat(p).st_mtime_ns for p in paths}
    again = get_dls("folder", tree, cache=True, **SMALL)
    assert list(again.split["path"]) == paths and {p: os.stat(p).st_mtime_ns for p in paths} == mtimes
    # The test batch from the cache matches the one from the originals up to JPEG re-encoding.
    plain = get_dls("folder", tree, **SMALL)
    x_cached, y_cached = dls.valid.one_batch()
    x_plain, y_plain = plain.valid.one_batch()
    assert torch.equal(y_cached, y_plain)
    assert (x_cached - x_plain).abs().mean() < 0.05  # ImageNet-normalised units: about 1% of the pixel range


def test_cached_aircraft_has_no_banner(tmp_path, cache_root):
    ft.make_aircraft(tmp_path)
    with pytest.warns(CountMismatchWarning):
        dls = get_dls("aircraft", tmp_path, cache=True, **SMALL)
    for p in dls.split["path"]:
        a = np.asarray(Image.open(p))
        assert a.shape == (20, 20, 3) and a[..., 2].max() < 60  # the 20-px blue banner was cut before resizing


# ---------------------------------------------------------------- several processes on one fresh cache

def _load_in_process(data_root, tree, barrier, results):
    """One process's get_dls on the shared data root, started together with the others."""
    os.environ["APIKIT_DATA"] = str(data_root)
    rename = os.replace

    def slow_rename(src, dst):  # widen the window between writing a file and renaming it into place
        if str(dst).endswith((".json", ".txt")):
            time.sleep(0.2)
        rename(src, dst)
    os.replace = slow_rename  # this forked process only
    barrier.wait()
    try:
        dls = get_dls("folder", tree, cache=True, **SMALL)
        results.put((len(dls.split), [str(p) for p in dls.bad_images], dls.bad_images_file.read_text()))
    except BaseException as e:  # reported to the test, which names it
        results.put(repr(e))


def test_processes_share_a_fresh_cache(tmp_path):
    """3 processes building the verified-images list and the resized cache at once all get every image."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")  # fastai is imported already: forked workers start in well under a second
    tree = tmp_path / "mine"
    for split, n in (("train", 8), ("valid", 4)):
        for c in range(3):
            for i in range(n):
                ft.jpeg(tree / split / f"class{c}" / f"{i}.jpg", seed=100 * c + i)
    n_images = 36
    for trial in range(2):  # a fresh data root each time
        root = tmp_path / f"data{trial}"
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_load_in_process, args=(root, tree, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == [(n_images, [], "")] * 3, got
        left = [p.name for p in root.rglob("*") if "tmp" in p.name]
        assert left == [], left  # no temporary file is left behind


# ---------------------------------------------------------------- checked, not trusted

def _cache_warnings(caught):
    from apikit.data.errors import CacheWarning
    return " ".join(str(w.message) for w in caught if w.category is CacheWarning)


def test_damaged_or_replaced_cached_images_are_rebuilt_naming_them(tmp_path, cache_root):
    """Truncated, replaced by another image, emptied, deleted: each is rebuilt from its original, with a warning."""
    from apikit.data.errors import CacheWarning
    tree = smooth_folder(tmp_path / "mine")
    paths = sorted(set(get_dls("folder", tree, cache=True, **SMALL).split["path"]))
    written = {p: open(p, "rb").read() for p in paths}
    cut, other, empty, gone = paths[:4]
    ft.truncate(Path(cut))
    Path(other).write_bytes(written[paths[5]])  # a valid image, of another original
    Path(empty).write_bytes(b"")
    os.unlink(gone)
    with pytest.warns(CacheWarning) as caught:
        again = get_dls("folder", tree, cache=True, **SMALL)
    said = _cache_warnings(caught)
    assert "4 cached image(s) are missing or differ from what was written" in said
    assert all(p in said for p in (cut, other, empty, gone)) and "rebuilt from their originals" in said
    assert sorted(set(again.split["path"])) == paths
    assert all(open(p, "rb").read() == written[p] for p in paths)  # the same bytes as first written
    again.valid.one_batch()


def test_a_malformed_cache_index_is_rebuilt(tmp_path, cache_root):
    import json
    from apikit.data import cache as cache_mod
    from apikit.data.errors import CacheWarning
    tree = smooth_folder(tmp_path / "mine")
    paths = set(get_dls("folder", tree, cache=True, **SMALL).split["path"])
    index = cache_root / "folder-20" / "index.json"
    for bad in ("null", '{"version": 2, "files": {"x.jpg": "abc"}}', "[" * 10_000):
        index.write_text(bad)
        with pytest.warns(CacheWarning) as caught:
            get_dls("folder", tree, cache=True, **SMALL)
        assert str(index) in _cache_warnings(caught) and "every cached image is rebuilt" in _cache_warnings(caught)
        saved = json.loads(index.read_text())
        assert saved["version"] == cache_mod.VERSION and set(saved["files"]) == {os.path.basename(p) for p in paths}


def test_cached_names_hold_the_code_version(tmp_path, monkeypatch):
    from apikit.data import cache as cache_mod
    img = ft.jpeg(tmp_path / "a.jpg")
    name = cache_mod.cached_name(img, 20)
    monkeypatch.setattr(cache_mod, "VERSION", cache_mod.VERSION + 1)
    assert cache_mod.cached_name(img, 20) != name
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "__version__", "0.0.0-other")
    assert cache_mod.cached_name(img, 20) != name


def test_what_killed_writers_left_is_removed(tmp_path, cache_root):
    """Temporary files of processes killed mid-write (caches are written under their lock) go on the next use."""
    tree = smooth_folder(tmp_path / "mine")
    get_dls("folder", tree, cache=True, **SMALL)
    stem = next((cache_root.parent / "verified").glob("folder-*.json")).stem
    left = [cache_root / "folder-20" / ".0123abcd.jpg.999-deadbeef.tmp",
            cache_root / "folder-20" / ".index.json.999-deadbeef.tmp",
            cache_root.parent / "verified" / f".{stem}.json.999-deadbeef.tmp",
            cache_root.parent / "verified" / f".{stem}.bad_images.txt.999-deadbeef.tmp"]
    for f in left:
        f.write_bytes(b"half")
    get_dls("folder", tree, cache=True, **SMALL)
    assert [f for f in left if f.exists()] == []
    assert [p.name for p in cache_root.parent.rglob("*") if "tmp" in p.name] == []


# ---------------------------------------------------------------- entries that are not files, indexes that are not this folder's

# One use of the cache in a process of its own, its memory capped once apikit is imported: a FIFO read would hang
# holding the cache's lock, a link to /dev/zero would fill the memory. Prints the CacheWarnings, one per line.
USE_CACHE = """
import resource, sys, warnings
import pandas as pd
from apikit.data.cache import cache_resized
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) << 10
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.RLIM_INFINITY))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cache_resized(pd.DataFrame({"path": sys.argv[2:]}), "folder", 20, root=sys.argv[1], n_workers=0)
print("\\n".join(str(w.message) for w in caught), file=sys.stderr)  # stdout: the progress lines
"""


def _use_cache_bounded(root, originals, timeout=120):
    import subprocess
    import sys
    from apikit.runs import project_root
    done = subprocess.run([sys.executable, "-c", USE_CACHE, str(root), *map(str, originals)], capture_output=True,
                          text=True, timeout=timeout, cwd=project_root())  # no hang: a hung use fails here
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()


def _fill(tmp_path):
    """A cache of the smooth folder's images under tmp_path/data: (originals, cache folder, {cached file: bytes})."""
    import pandas as pd
    from apikit.data.cache import cache_resized
    originals = sorted(smooth_folder(tmp_path / "mine").rglob("*.jpg"))
    out = cache_resized(pd.DataFrame({"path": originals}), "folder", 20, root=tmp_path / "data", n_workers=0)
    return originals, tmp_path / "data" / "cache" / "folder-20", {p: open(p, "rb").read() for p in out["path"]}


@pytest.mark.parametrize("kind", ["a FIFO", "a link", "a folder"])
def test_a_cached_image_that_is_not_a_file_is_refused_and_rebuilt_without_hanging(tmp_path, kind):
    """Replaced by a FIFO, a link to /dev/zero or a folder: named as not a file, removed and rebuilt, at once."""
    originals, folder, written = _fill(tmp_path)
    victim = sorted(written)[2]
    os.unlink(victim)
    if kind == "a FIFO":
        os.mkfifo(victim)
    elif kind == "a link":
        os.symlink("/dev/zero", victim)
    else:
        os.mkdir(victim)
        (Path(victim) / "inside.jpg").write_bytes(b"x")
    said = _use_cache_bounded(tmp_path / "data", originals)
    assert said == [f"1 cached image(s) are not files ({victim} is {kind}): they are removed and rebuilt from their "
                    "originals."]
    assert {p: open(p, "rb").read() for p in written} == written  # a regular file again, as first written


@pytest.mark.parametrize("how", ["deleted", "emptied", "another folder's"])
def test_an_index_that_is_not_this_folders_own_is_named_and_every_image_rebuilt(tmp_path, how):
    """index.json deleted, replaced by a valid index listing nothing, or by another cache folder's: it vouches for
    none of the images beside it, so all are rebuilt, with a warning, as for a damaged index."""
    import json
    import pandas as pd
    from apikit.data.cache import VERSION, cache_resized
    originals, folder, written = _fill(tmp_path)
    index = folder / "index.json"
    (folder / "z-unlisted.jpg").write_bytes(b"an image no index vouches for")  # removed, not trusted
    if how == "deleted":
        index.unlink()
    elif how == "emptied":
        index.write_text(json.dumps({"version": VERSION, "files": {}}))
    else:
        cache_resized(pd.DataFrame({"path": originals}), "folder", 24, root=tmp_path / "data", n_workers=0)
        index.write_bytes((folder.parent / "folder-24" / "index.json").read_bytes())
    said = _use_cache_bounded(tmp_path / "data", originals)
    was = f"{index} is missing" if how == "deleted" else f"{index} does not list them (replaced by another index?)"
    first = ", ".join(sorted(Path(p).name for p in written)[:3])
    assert said == [f"19 cached image(s) are in {folder} but {was}, e.g. {first} ... (19 in all): every cached image "
                    "is rebuilt."]
    assert {p: open(p, "rb").read() for p in written} == written and not (folder / "z-unlisted.jpg").exists()
    assert set(json.loads(index.read_text())["files"]) == {Path(p).name for p in written}
    assert _use_cache_bounded(tmp_path / "data", originals) == []  # and vouches for them again


def test_images_a_killed_fill_was_writing_are_rebuilt_without_a_warning(tmp_path):
    """A fill names the images it is about to write (pending) in the index first: those it leaves unlisted when
    killed are its own, rebuilt quietly."""
    import json
    originals, folder, written = _fill(tmp_path)
    index = json.loads((folder / "index.json").read_text())
    unlisted = sorted(written)[:3]
    for p in unlisted:
        del index["files"][Path(p).name]
    index["pending"] = [Path(p).name for p in unlisted]
    (folder / "index.json").write_text(json.dumps(index))
    assert _use_cache_bounded(tmp_path / "data", originals) == []
    assert {p: open(p, "rb").read() for p in written} == written
    assert set(json.loads((folder / "index.json").read_text())["files"]) == {Path(p).name for p in written}


def test_data_preparation_shows_its_counts_in_a_few_lines(tmp_path, cache_root, capsys):
    """Before the first epoch: the images are checked once, resized into the cache once, and the cache checked on
    every use; each a bar of a few lines with its count (fastprogress redraws a few times a second at most)."""
    import re
    tree = smooth_folder(tmp_path / "mine")
    get_dls("folder", tree, cache=True, **SMALL)
    first = capsys.readouterr().out.splitlines()
    for what in ("checking that the images decode", "caching the images resized to 20 px"):
        bar = [line for line in first if line.startswith(f"{what}: ")]
        assert 2 <= len(bar) <= 11 and bar[0] == f"{what}: 0/18 images", first
        assert re.fullmatch(rf"{what}: 18/18 images \(100%\) in \d\d:\d\d", bar[-1]), first
    get_dls("folder", tree, cache=True, **SMALL)
    again = capsys.readouterr().out.splitlines()  # the check of the images is cached; the cache is checked
    assert not any(line.startswith(("checking that the images decode", "caching")) for line in again)
    assert again[0] == "checking the cached images: 0/18 images" and again[-1].startswith(
        "checking the cached images: 18/18 images (100%) in ")
