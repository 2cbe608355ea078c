"""Tests for apikit/pretrain.py: the cached backbone, its key, damage, and loading it as a user's checkpoint."""
import logging
import shutil
from dataclasses import asdict

import pytest
import torch

from apikit import pretrain as pt
from apikit.data import get_dls, synthetic
from apikit.learner import api_learner
from apikit.model import create_backbone

TINY_SET = dict(n_classes=4, n_train=4, n_test=2, size=40, seed=1)
TINY_RECIPE = dict(resize=40, size=32, epochs=1, bs=8)


def tiny(root, **kw):
    return pt.pretrain(root, set_params=TINY_SET, recipe=TINY_RECIPE, verbose=False, **kw)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A data root holding one tiny pretrained backbone (trained once for the module)."""
    root = tmp_path_factory.mktemp("data")
    return root, tiny(root)


@pytest.fixture
def root(cached, tmp_path):
    """A private copy of the cached data root, free to damage."""
    shutil.copytree(cached[0], tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def trainings(monkeypatch):
    """Counts the pretrainings that run."""
    calls = []
    real = pt._train
    monkeypatch.setattr(pt, "_train", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    return calls


def test_checkpoint_is_the_full_torchvision_state_dict_with_its_key(cached):
    root, file = cached
    assert file.parent == root / pt.FOLDER and file.suffix == ".pth"
    ckpt = torch.load(file, weights_only=True)
    assert set(ckpt["state_dict"]) == set(torchvision_resnet18(4).state_dict())
    meta = pt.read_meta(file)
    assert meta["key"] == dict(generator=synthetic.GENERATOR, generator_version=synthetic.VERSION,
                               recipe_version=pt.VERSION, set={**pt.SET, **TINY_SET},
                               recipe={**pt.RECIPE, **TINY_RECIPE})
    assert meta["n_train"] == 4 * 4 and meta["n_test"] == 4 * 2 and 0 <= meta["top1"] <= 100
    assert (root / pt.SET_FOLDER / synthetic.MARKER).is_file()  # the set lives beside it, in the data root


def torchvision_resnet18(n):
    import torchvision
    return torchvision.models.resnet18(num_classes=n)


def test_a_current_cache_is_reused(root, trainings):
    file = pt.checkpoint_path(root, TINY_SET, TINY_RECIPE)
    before = file.stat().st_mtime_ns
    assert tiny(root) == file
    assert trainings == [] and file.stat().st_mtime_ns == before


@pytest.mark.parametrize("module, name", [(pt, "VERSION"), (synthetic, "VERSION")])
def test_a_version_change_trains_a_new_backbone(root, trainings, monkeypatch, module, name):
    old = pt.checkpoint_path(root, TINY_SET, TINY_RECIPE)
    monkeypatch.setattr(module, name, getattr(module, name) + 1)
    new = tiny(root)
    assert new != old and trainings == [new]
    assert pt.read_meta(new)["key"][{pt: "recipe_version", synthetic: "generator_version"}[module]] == \
        getattr(module, name)


def test_a_stale_file_under_the_current_name_is_retrained(root, trainings, monkeypatch):
    old = pt.checkpoint_path(root, TINY_SET, TINY_RECIPE)
    monkeypatch.setattr(pt, "VERSION", pt.VERSION + 1)
    new = pt.checkpoint_path(root, TINY_SET, TINY_RECIPE)
    shutil.copy(old, new)  # e.g. renamed by hand: its own key says what it was trained with
    assert not pt.is_current(new, TINY_SET, TINY_RECIPE)
    assert tiny(root) == new and trainings == [new] and pt.is_current(new, TINY_SET, TINY_RECIPE)


def test_a_recipe_change_has_its_own_file(root, trainings):
    other = pt.pretrain(root, set_params=TINY_SET, recipe={**TINY_RECIPE, "lr": 1e-3}, verbose=False)
    assert other != pt.checkpoint_path(root, TINY_SET, TINY_RECIPE) and trainings == [other]


def test_a_damaged_checkpoint_is_rebuilt_with_a_warning(root, trainings, caplog):
    file = pt.checkpoint_path(root, TINY_SET, TINY_RECIPE)
    file.write_bytes(file.read_bytes()[:1000])  # truncated, as by a full disk or a killed copy
    with pytest.raises(ValueError, match="not a readable apikit pretraining checkpoint"):
        pt.read_meta(file)
    with caplog.at_level(logging.WARNING, logger="apikit.pretrain"):
        assert tiny(root) == file
    assert trainings == [file] and pt.is_current(file, TINY_SET, TINY_RECIPE)
    assert "damaged or was trained with other settings" in caplog.text
    assert not list(file.parent.glob(".*.tmp"))  # written beside it and renamed into place


def test_a_damaged_checkpoint_given_as_weights_is_a_clear_error(root):
    file = pt.checkpoint_path(root, TINY_SET, TINY_RECIPE)
    file.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="may be damaged"):
        create_backbone("resnet18", pretrained=True, weights=str(file), size=32)


def test_loads_as_a_users_checkpoint_through_api_learner(cached, tmp_path):
    _, file = cached
    state = torch.load(file, weights_only=True)["state_dict"]
    dls = get_dls("synthetic", tmp_path / "demo", synthetic=dict(n_classes=4, n_train=2, n_test=1, size=32, seed=0),
                  size=32, resize=32, n_classes=2, n_images=2, device="cpu")
    for api in (False, True):
        learn = api_learner(dls, arch="resnet18", pretrained=True, weights=str(file), api=api, size=32)
        assert learn.weights_loaded.startswith(f"file:{file.name}@sha256:")
        body = learn.model.body.state_dict()
        assert torch.equal(body["0.weight"], state["conv1.weight"])  # conv1 is the body's first module
        assert torch.equal(body["7.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
        assert learn.model.fc.out_features == 4  # the pretraining classifier is dropped, a new one fits the set
        assert not any(p.requires_grad for p in learn.model.body.parameters())  # pretrained: frozen first


def test_other_arch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="torchvision model"):
        pt.pretrain(tmp_path, recipe={"arch": "not_a_net"}, verbose=False)


def test_pretraining_species_are_not_the_demos():
    def look(s):
        return tuple((k, v) for k, v in asdict(s).items() if k not in ("name", "group"))
    demo = {look(s) for n in (8, 12, 16, 24) for s in synthetic.species(n, seed=0)}
    assert not demo & {look(s) for s in synthetic.species(pt.SET["n_classes"], pt.SET["seed"])}
    assert pt.SET["seed"] != 0 and pt.SET["n_classes"] > 24
