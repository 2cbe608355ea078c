"""`apikit/schema.py`: one parameter schema, checked once, the same in train.ipynb, the CLI and the paper preset."""
import argparse
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import papermill as pm
import pytest

from apikit.schema import (DEFAULTS, NOTEBOOK_DEFAULTS, PARAMS, RUN_KEYS, SETTING_KEYS, Param, ParameterError,
                           add_arguments, check_against, check_params, keys_with, paper_params, parameters_cell,
                           parse_list)

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


def test_defaults_pass_unchanged_and_paths_become_strings():
    assert check_params() == DEFAULTS
    p = check_params(run_dir=Path("reports/runs/x"), data_path=Path("data"))
    assert (p["run_dir"], p["data_path"]) == ("reports/runs/x", "data")


def test_the_schema_imports_no_torch_and_no_fastai():
    """The parameters are checked (and a notebook's cell written) without the 5 s of importing fastai."""
    code = ("import sys, time; t = time.perf_counter(); import apikit.schema, apikit.data; apikit.data.NAMES; "
            "t = time.perf_counter() - t; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'timm', 'fastai'}); "
            "print(heavy, t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]", out
    assert float(out[1]) < 1.0  # about 0.05 s on 2 cores


def _feats():
    import torch
    return torch.randn(4, 2), torch.tensor([0, 0, 1, 1])


OWNERS = [  # (parameters, the owner's entry point refusing them later)
    (dict(mutual="individual", gate="single"),
     lambda: import_module("apikit.api").APIModule(8, mutual="individual", gate="single")),
    (dict(intra="random", inter="similar"), lambda: import_module("apikit.callback").APICallback(intra="random")),
    (dict(intra=None, inter=None), lambda: import_module("apikit.pairs").candidate_pairs(*_feats(), None, None)),
    (dict(mining="global", intra="random", inter="random"),
     lambda: import_module("apikit.distributed").global_pairs(*_feats(), "random", "random")),
    (dict(dataset="cub", synthetic={"n_classes": 4}),
     lambda: import_module("apikit.data").read_split("cub", synthetic={"n_classes": 4})),
    (dict(dataset="folder"), lambda: import_module("apikit.data").get_dls("folder")),
    (dict(pretrained=True, arch="resnet50", weights="IMAGENET1K_V9"),
     lambda: import_module("apikit.model").create_backbone("resnet50", True, "IMAGENET1K_V9")),
]


@pytest.mark.parametrize("params, owner", OWNERS, ids=[",".join(p) for p, _ in OWNERS])
def test_check_params_refuses_what_the_owners_refuse_with_their_message(params, owner):
    """Each combination an owner refuses later is refused by check_params first, in the owner's own words."""
    with pytest.raises(ValueError) as later:
        owner()
    with pytest.raises(ValueError) as first:
        check_params(**params)
    assert str(first.value) == str(later.value)


def test_roles_give_the_lists_of_names():
    from apikit.ablations import BASE_KEYS
    from apikit.report.match import ABLATED, API_ONLY, BATCH_KEYS, GROUP_KEYS
    assert BASE_KEYS == ("dataset", "data_path", "download", "synthetic", "arch", "pretrained", "weights",
                         "normalize", "size", "resize", "epochs", "freeze_epochs", "test_every", "opt", "lr", "wd",
                         "n_classes", "n_images", "precision", "channels_last", "chunk_size", "cache")
    # what export.build_network passes to api_learner to rebuild a trained run's network (the pairs only shape
    # training: intra/inter go to the callback, not into a module)
    assert keys_with("network") == ("arch", "size", "api", "mutual", "gate")
    # normalize changes what a run learns, so it is part of the setting
    assert SETTING_KEYS == ("dataset", "arch", "pretrained", "weights", "normalize", "size", "resize", "epochs",
                            "freeze_epochs", "opt", "lr", "wd", "n_classes", "n_images", "precision")
    assert set(ABLATED) == {"api", "mutual", "gate", "rank_weight", "intra", "inter", "n_classes", "n_images"}
    assert set(API_ONLY) == {"mutual", "gate", "rank_weight", "intra", "inter", "margin", "mining"}
    assert BATCH_KEYS == ("n_classes", "n_images") and GROUP_KEYS == SETTING_KEYS[:-3] + ("precision",)
    assert RUN_KEYS == tuple(k for k in DEFAULTS if k != "run_dir")
    with pytest.raises(ValueError, match="role='sttting' is not valid: choose one of 'setting', 'batch'"):
        keys_with("sttting")
    with pytest.raises(ValueError, match="Param 'x': unknown role"):
        Param("x", 0, int, "x", roles=("sttting",))


def test_choice_help_is_computed_from_the_owners_lists():
    from apikit.data.sources import NAMES
    from apikit.choices import MINING, MUTUALS, OPTIMIZERS, PAIRINGS, PRECISIONS
    by_name = {p.name: p for p in PARAMS}
    assert by_name["dataset"].help == " | ".join(NAMES) and by_name["dataset"].choices == NAMES
    for name, values in (("mutual", MUTUALS), ("opt", OPTIMIZERS), ("intra", PAIRINGS), ("inter", PAIRINGS),
                         ("precision", PRECISIONS), ("mining", MINING)):
        assert by_name[name].choices == values and " | ".join(map(str, values)) in by_name[name].help, name
    assert all(str(c) in p.help for p in PARAMS if p.choices for c in p.choices)


def test_train_notebook_parameters_equal_the_schema():
    """train.ipynb's parameters cell: the schema's names, defaults and help, in order, plus overwrite."""
    nb = pm.inspect_notebook(str(ROOT / "notebooks" / "train.ipynb"))
    names = [n for n in nb if n != "overwrite"]
    assert names == [p.name for p in PARAMS]
    for p in PARAMS:
        assert eval(nb[p.name]["default"]) == p.default, p.name
        assert nb[p.name]["help"] == p.help, p.name
    assert nb["overwrite"]["default"] == "False"
    assert {n: eval(v["default"]) for n, v in nb.items()} == NOTEBOOK_DEFAULTS  # what its check cell accepts


def test_ablations_notebook_parameters_are_the_schemas():
    """ablations.ipynb's parameters cell: the shared run parameters, the grid's knobs (GRID), the launcher's (LAUNCH),
    names, defaults, types and help, in order, and nothing else."""
    from apikit.ablations import BASE_KEYS
    from apikit.launch import GRID, LAUNCH
    nb = pm.inspect_notebook(str(ROOT / "notebooks" / "ablations.ipynb"))
    by_name = {p.name: p for p in PARAMS}
    schema = [by_name[k] for k in BASE_KEYS] + list(GRID) + list(LAUNCH)
    assert list(nb) == [p.name for p in schema]
    for p in schema:
        assert eval(nb[p.name]["default"]) == p.default and nb[p.name]["help"] == p.help, p.name
        assert nb[p.name]["inferred_type_name"] == p.annotation.strip('"'), p.name


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
    assert p["normalize"] is None  # the backbone's own statistics: torchvision's ImageNet ones, as the authors'


def test_cli_options_come_from_the_schema():
    ap = add_arguments(argparse.ArgumentParser())
    a = vars(ap.parse_args(["--lr", "0.1", "--no-api", "--intra", "None", "--chunk-size", "30"]))
    assert a["lr"] == 0.1 and a["api"] is False and a["intra"] is None and a["chunk_size"] == 30
    assert {k: v for k, v in a.items() if k not in ("lr", "api", "intra", "chunk_size")} == {
        k: v for k, v in DEFAULTS.items() if k not in ("lr", "api", "intra", "chunk_size")}
    given = vars(add_arguments(argparse.ArgumentParser(), suppress=True).parse_args(["--seed", "3"]))
    assert given == {"seed": 3}


def test_a_list_knob_takes_its_items_after_its_flag_and_a_command_its_own_defaults():
    from apikit.launch import GRID
    ap = add_arguments(argparse.ArgumentParser(), names=("tables", "seeds", "out_root"), params=GRID,
                       defaults={"out_root": "reports/runs/mine"})
    assert vars(ap.parse_args(["--seeds", "0", "1", "--tables", "table2", "table4"])) == dict(
        tables=["table2", "table4"], seeds=[0, 1], out_root="reports/runs/mine")
    assert "(default: 'reports/runs/mine')" in " ".join(ap.format_help().split())


SCHEMA = (Param("k", 5, int, "k", low=1), Param("p", [20], list, "p", item=float, low=0, high=100, strict=True),
          Param("mode", "a", str, "mode", ("a", "b")), Param("r", None, float, "r", optional=True, low=0, strict=True),
          Param("n", 2, int, "n", low=2, why="so that each has a partner"))


@pytest.mark.parametrize("given, said", [
    (dict(k=0), "parameter k=0 is not valid: must be >= 1."),
    (dict(k=True), "parameter k=True is not valid: expected int."),
    (dict(p=[50, 100]), "parameter p=[50, 100] is not valid: expected a non-empty list of numbers in (0, 100), e.g. "
                        "-p p '[20]' or -y 'p: [20]'."),
    (dict(p=[]), "parameter p=[] is not valid: expected a non-empty list of numbers in (0, 100)"),
    (dict(mode="c"), "parameter mode='c' is not valid: choose one of 'a', 'b'."),
    (dict(r=0), "parameter r=0.0 is not valid: expected None or a finite number > 0."),
    (dict(r=float("inf")), "parameter r=inf is not valid: expected None or a finite number > 0."),
    (dict(n=1), "parameter n=1 is not valid: must be >= 2, so that each has a partner."),
    (dict(mod=1), "unknown parameter(s) mod (did you mean mode?); valid ones: k, p, mode, r, n."),
])
def test_any_schema_is_checked_by_its_params(given, said):
    """One checker for every table of knobs: types, choices and ranges from the Params, one line each."""
    with pytest.raises(ValueError) as e:
        check_against(SCHEMA, given)
    assert str(e.value).startswith(said)


def test_any_schema_fills_its_defaults_and_raises_its_callers_kind():
    assert check_against(SCHEMA, dict(p="[50, 60.5]", r=1)) == dict(k=5, p=[50, 60.5], mode="a", r=1.0, n=2)
    with pytest.raises(ParameterError):
        check_against(SCHEMA, dict(k=0))
    with pytest.raises(LookupError, match="parameter k=0 is not valid"):  # visualize's is its Refused
        check_against(SCHEMA, dict(k=0), LookupError)


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


@pytest.mark.parametrize("params,message", [
    (dict(arch=""), "parameter arch='' is not valid: expected a model name"),
    (dict(arch="*"), "parameter arch='*' is not valid: expected a model name"),
    (dict(arch="resnet*"), "parameter arch='resnet*' is not valid: expected a model name"),
    (dict(seed=2**70), f"parameter seed={2**70} is not valid: must be in [0, 2**32 - 1]"),
    (dict(seed=-1), "parameter seed=-1 is not valid: must be in [0, 2**32 - 1]"),
    (dict(run_dir=""), "parameter run_dir='' is not valid: expected a folder for the run's files"),
    (dict(run_dir="  "), "parameter run_dir='  ' is not valid: expected a folder for the run's files"),
    (dict(run_dir="runs/a\x00b"), "parameter run_dir='runs/a\\x00b' is not valid: a NUL byte cannot be part"),
    (dict(data_path=""), "parameter data_path='' is not valid: expected a folder, or None"),
    (dict(data_path="\x00"), "parameter data_path='\\x00' is not valid: a NUL byte cannot be part"),
])
def test_names_paths_and_seeds_are_checked_up_front(params, message):
    """What would pass today and fail later (a wildcard arch, a seed numpy cannot take, a run written
    into the project root, a raw "embedded null byte")."""
    with pytest.raises(ValueError) as e:
        check_params(**params)
    assert message in str(e.value)
    assert check_params(seed=2**32 - 1)["seed"] == 2**32 - 1


def test_ablations_notebook_shares_the_launchers_table():
    """ablations.ipynb's launcher knobs are LAUNCH's, names, defaults and help, in order (papermill -p executor ...)."""
    from apikit.launch import LAUNCH
    nb = pm.inspect_notebook(str(ROOT / "notebooks" / "ablations.ipynb"))
    assert list(nb)[-len(LAUNCH):] == [p.name for p in LAUNCH]
    for p in LAUNCH:
        assert eval(nb[p.name]["default"]) == p.default and nb[p.name]["help"] == p.help, p.name


@pytest.mark.parametrize("synthetic, message", [
    ({"n_test": 0}, "n_test=0 holds out no image, and a run is evaluated on its held-out images; use n_test >= 1."),
    ({"n_train": 0}, "n_train=0 draws no training image; use n_train >= 1."),
    ({"n_classes": -3}, "n_classes must be an int >= 1, got -3."),
    ({"n_classes": 1}, "it draws 1 class, fewer than a batch holds (n_classes=8): set its n_classes to 8 or more."),
    ({"n_classes": 4}, "it draws 4 classes, fewer than a batch holds (n_classes=8): set its n_classes to 8 or more, "
                       "or the run's n_classes to between 2 and 4."),
    ({"n_clases": 12}, "unknown setting(s) n_clases; valid ones: n_classes, n_train, n_test, size, seed, held_out."),
])
def test_the_generated_sets_settings_are_checked_before_any_write(synthetic, message, tmp_path, monkeypatch):
    """A set a run cannot train and evaluate on is refused with the parameters, in one line that says what is valid:
    no record written, no image drawn (n_test=0 used to train every epoch, then fail on None.argmax)."""
    from apikit.experiment import train
    monkeypatch.setenv("APIKIT_DATA", str(tmp_path / "data"))
    with pytest.raises(ValueError) as e:
        check_params(dataset="synthetic", synthetic=synthetic)
    assert str(e.value) == f"parameter synthetic={synthetic!r} is not valid: {message}"
    with pytest.raises(ValueError, match="parameter synthetic="):
        train(dataset="synthetic", synthetic=synthetic, run_dir=str(tmp_path / "run"))
    assert list(tmp_path.iterdir()) == []
    assert check_params(dataset="synthetic", synthetic={"n_classes": 8, "n_test": 1})["synthetic"]["n_test"] == 1


@pytest.mark.parametrize("params, line", [
    (dict(lr=-1), "ParameterError: parameter lr=-1.0 is not valid: must be a finite number > 0."),
    (dict(lrr=0.1), f"UnknownParameter: unknown parameter(s) lrr (did you mean lr?); valid ones: {', '.join(DEFAULTS)}."),
    (dict(learning_rate=0.1, epoch=2), "UnknownParameter: unknown parameter(s) epoch (did you mean epochs?), "
                                       f"learning_rate (did you mean lr?); valid ones: {', '.join(DEFAULTS)}."),
    (dict(mutual="individual", gate="single"), "ParameterError: gate='single' is not valid: mutual='individual' has "
                                               "no mutual vector to share, so it needs gate='pair'."),
])
def test_a_parameter_error_is_one_line_in_a_notebook(params, line, monkeypatch):
    """The schema's own checks and the owners' rules alike: Jupyter and papermill show the line alone."""
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    with pytest.raises(ValueError) as e:
        check_params(**params)
    assert e.value._render_traceback_() == [line]


def test_debug_is_an_option_of_every_command_line_and_no_parameter(monkeypatch):
    """--debug: whole tracebacks, in this process and in the kernels it starts; never passed on as a parameter."""
    import os
    monkeypatch.setenv("APIKIT_DEBUG", "0")  # what the option sets is undone after the test
    ap = add_arguments(argparse.ArgumentParser(), suppress=True)
    assert vars(ap.parse_args(["--seed", "3"])) == {"seed": 3} and os.environ["APIKIT_DEBUG"] == "0"
    assert vars(ap.parse_args(["--debug", "--seed", "3"])) == {"seed": 3} and os.environ["APIKIT_DEBUG"] == "1"
    with pytest.raises(ValueError) as e:
        check_params(lr=-1)
    assert not hasattr(e.value, "_render_traceback_")  # IPython prints the whole traceback
