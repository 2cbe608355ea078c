"""Shared fixtures: tiny image folders and DataLoaders that go through the real fastai path."""
import os
import warnings

# Tiny models run fastest single-threaded, and OpenMP threads spin badly when several test processes
# (papermill kernels, subprocesses) share 2 cores. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")
import torch  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*load_learner.*")

pytest_plugins = ["slurm_first"]  # the SLURM tests first, on one process of `make test`


def make_image_folders(root, n_classes=4, n_train=12, n_valid=4, size=20, seed=0):
    """ImageNet-style train/valid class folders of small PNGs; class c is tinted in channel c % 3."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for c in range(n_classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
                a[:, :, c % 3] += np.uint8(110 + 60 * (c // 3))
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def tiny_dls(root, n_classes=2, n_images=4, size=16, seed=0):
    """fastai DataLoaders over `make_image_folders` output with the class-balanced training loader."""
    from fastai.vision.all import (CategoryBlock, DataBlock, GrandparentSplitter, ImageBlock, Resize,
                                   get_image_files, parent_label, set_seed)
    from apikit.sampler import ClassBalancedDL
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                       splitter=GrandparentSplitter(), item_tfms=Resize(size))
    set_seed(seed)
    return dblock.dataloaders(root, dl_type=ClassBalancedDL, n_classes=n_classes, n_images=n_images,
                              num_workers=0)


@pytest.fixture(scope="session")
def image_root(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Tiny finished Baseline and API-Net runs for the tests of apikit/viz (tests/viz_fixtures.py)."""
    from viz_fixtures import build_runs  # fastai and two Learners: only for the tests that use them
    return build_runs(tmp_path_factory.mktemp("viz"))


@pytest.fixture(scope="session")
def python3_kernel(tmp_path_factory):
    """A `python3` kernelspec, first on JUPYTER_PATH, that runs this interpreter: papermill needs no
    `ipykernel install`, and no other Python's kernel can be picked up."""
    import json
    import sys
    spec = tmp_path_factory.mktemp("jupyter") / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (apikit tests)", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(spec.parents[1]), old]))
    yield "python3"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A private one-node SLURM cluster with accounting (tests/slurm_cluster.py: MariaDB, slurmdbd, slurmctld,
    slurmd on free ports, under a tmp folder), for the whole session; stopped, jobs and all, at its end. Clients find
    it through `slurm.env` (SLURM_CONF): pass it to subprocesses, or monkeypatch.setenv it for submitit."""
    from slurm_cluster import missing, slurm_cluster
    if missing():
        pytest.skip("SLURM is not installed here: make ci-deps installs it (Debian packages slurmctld slurmd "
                    f"slurm-client slurmdbd mariadb-server; missing: {' '.join(missing())})")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster runs its daemons as root (slurmd starts jobs as their users): "
                    "run the tests as root, as CI does")
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
