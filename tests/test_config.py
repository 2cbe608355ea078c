"""`apikit/config.py`: one parameter schema, checked once, the same in train.ipynb, the CLI and the paper preset."""
import argparse
from pathlib import Path

import papermill as pm
import pytest

from apikit.config import DEFAULTS, PARAMS, add_arguments, check_params, paper_params, parameters_cell, parse_list

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("params,message", [
    (dict(mutual="foo"), "parameter mutual='foo' is not valid: choose one of 'mlp', 'sum'"),
    (dict(epochs=-1), "parameter epochs=-1 is not valid: must be >= 1"),
    (dict(epochs="3"), "parameter epochs='3' is not valid: expected int"),
    (dict(n_images=1), "parameter n_images=1 is not valid: must be >= 2"),
    (dict(dataset="imagenet"), "parameter dataset='imagenet' is not valid: choose one of 'cub'"),
    (dict(intra="random"), "Random construction takes intra='random' and inter='random' together"),
    (dict(size=100, resize=90), "parameter size=100 is not valid: the crop must not exceed resize=90"),
    (dict(precision="fp16"), "fp16 needs a CUDA GPU"),
    (dict(lr=float("nan")), "parameter lr=nan is not valid"),
    (dict(freeze_epochs=20, epochs=10), "parameter freeze_epochs=20 is not valid: must be in [0, epochs=10]"),
    (dict(learning_rate=0.1), "unknown parameter(s) learning_rate"),
    (dict(chunk_size=0), "parameter chunk_size=0 is not valid: expected None or an integer >= 1"),
])
def test_bad_parameters_are_one_clear_error(params, message):
    with pytest.raises(ValueError) as e:
        check_params(**params)
    assert message in str(e.value)


def test_defaults_are_valid_and_ints_pass_as_floats():
    p = check_params(lr=1)
    assert p["lr"] == 1.0 and isinstance(p["lr"], float) and set(p) == set(DEFAULTS)


def test_defaults_are_valid_and_ints_pass_as_floats():
    p = check_params(lr=1)
    assert p["lr"] == 1.0 and isinstance(p["lr"], float) and set(p) == set(DEFAULTS)


def test_train_notebook_parameters_equal_the_schema():
    """train.ipynb's parameters cell: the schema's names, defaults and help, in order, plus overwrite."""
    nb = pm.inspect_notebook(str(ROOT / "notebooks" / "train.ipynb"))
    names = [n for n in nb if n != "overwrite"]
    assert names == [p.name for p in PARAMS]
    for p in PARAMS:
        assert eval(nb[p.name]["default"]) == p.default, p.name
        assert nb[p.name]["help"] == p.help, p.name
    assert nb["overwrite"]["default"] == "False"


def test_ablations_notebook_shares_the_schema_for_its_base_parameters():
    from apikit.ablations import BASE_KEYS
    nb = pm.inspect_notebook(str(ROOT / "notebooks" / "ablations.ipynb"))
    by_name = {p.name: p for p in PARAMS}
    assert [n for n in nb if n in by_name] == list(BASE_KEYS)
    for name in BASE_KEYS:
        assert eval(nb[name]["default"]) == by_name[name].default and nb[name]["help"] == by_name[name].help


def test_parameters_cell_is_typed_literals_with_help():
    assert parameters_cell(["arch", "weights", "lr"]).splitlines() == [
        "arch: str = 'resnet18'  # " + next(p.help for p in PARAMS if p.name == "arch"),
        "weights: \"Optional[str]\" = None  # " + next(p.help for p in PARAMS if p.name == "weights"),
        "lr: float = 0.01  # " + next(p.help for p in PARAMS if p.name == "lr")]


def test_paper_preset_is_section_4():
    p = paper_params("cub", "resnet101")
    assert {k: p[k] for k in ("pretrained", "weights", "size", "resize", "epochs", "freeze_epochs", "opt", "lr", "wd",
                              "n_classes", "n_images", "precision")} == dict(
        pretrained=True, weights=None, size=448, resize=512, epochs=100, freeze_epochs=8, opt="sgd", lr=0.01,
        wd=5e-4, n_classes=30, n_images=4, precision="fp32")
    d = paper_params("dogs", "resnet50", seed=2)
    assert (d["epochs"], d["freeze_epochs"], d["lr"], d["run_dir"]) == (50, 12, 0.001, "reports/runs/paper/dogs-resnet50/seed-2")
    assert paper_params("cub", "resnet101", precision="bf16")["precision"] == "bf16"


def test_cli_options_come_from_the_schema():
    ap = add_arguments(argparse.ArgumentParser())
    a = vars(ap.parse_args(["--lr", "0.1", "--no-api", "--intra", "None", "--chunk-size", "30"]))
    assert a["lr"] == 0.1 and a["api"] is False and a["intra"] is None and a["chunk_size"] == 30
    assert {k: v for k, v in a.items() if k not in ("lr", "api", "intra", "chunk_size")} == {
        k: v for k, v in DEFAULTS.items() if k not in ("lr", "api", "intra", "chunk_size")}
    given = vars(add_arguments(argparse.ArgumentParser(), suppress=True).parse_args(["--seed", "3"]))
    assert given == {"seed": 3}


@pytest.mark.parametrize("value,expected", [([0, 1], [0, 1]), ("[0, 1]", [0, 1]), ("[3]", [3]), ((2,), [2])])
def test_list_parameters_accept_papermill_strings(value, expected):
    assert parse_list("seeds", value) == expected


@pytest.mark.parametrize("value", ["[0", "0", "[]", [], ["a"], [True], "__import__('os')"])
def test_bad_list_parameter_names_the_yaml_form(value):
    with pytest.raises(ValueError, match=r"seeds=.* is not valid: expected a non-empty list of ints.*-y 'seeds: \[0, 1\]'"):
        parse_list("seeds", value)


def test_arch_is_checked_before_any_data():
    with pytest.raises(ValueError, match="arch='not_a_net' is neither a torchvision backbone"):
        check_params(arch="not_a_net")
