"""Settings and matching: which runs share a setting, which table row a run is, and how far a setting is
from the paper's.

A *setting* is `apikit.schema.SETTING_KEYS` (data set, backbone, weights, input statistics, size, epochs,
optimiser and schedule, precision), plus what the data set's name leaves open (`content_of`: a folder's path, the
generated set's settings), with the base batch (n_classes, n_images) inferred: of the batches found among its
runs, the one under which the most runs match a row of TABLES (ties: the paper's 30 x 4, then the larger
batch). A setting is *the paper's* for Tables 1-5 when every key equals Section 4's recipe on CUB with
ResNet-101, and for a cell of Tables 6-10 when every key equals `recipe(dataset)` with one of the paper's
backbones. Only there does the report put a paper figure beside ours.

An ablation row's configuration is the paper's method (api, mutual mlp, gate pair, rank_weight 1,
intra/inter similar) with the setting's batch, then the row's overrides (Table 5's via
`scale_class_sizes`). A run matches when it equals that on the ablated keys; for a Baseline row (api
false) the API-only keys are ignored.
"""
import json
import math
import numbers
from pathlib import Path

import numpy as np

from ..schema import PARAMS, SETTING_KEYS, keys_with
from ..data.sources import content_of
from ..choices import CHECKPOINT_SUFFIXES
from ..paper import (ABLATION_SETTING, METHOD, PAPER_ARCH, PAPER_ARCHS, PAPER_SOTA, PAPER_WEIGHTS, TABLES, recipe,
                     scale_class_sizes)
from .collect import countable

__all__ = ["ABLATED", "API_ONLY", "BATCH_KEYS", "GROUP_KEYS", "ABLATION_SETTING", "same", "expected_row",
           "matches_row", "is_method", "setting_key", "dataset_words", "key_words", "describe", "settings",
           "is_paper_setting", "differences", "run_marks", "plural"]

# The keys' roles come from the parameter schema (apikit.schema.ROLES).
ABLATED = keys_with("ablated")
API_ONLY = keys_with("api")  # meaningless for the Baseline (api false)
BATCH_KEYS = keys_with("batch")
GROUP_KEYS = tuple(k for k in SETTING_KEYS if k not in BATCH_KEYS)  # a setting before its base batch is inferred
_ABSENT = object()


def same(a, b):
    """Config equality that treats 1 and 1.0 alike, keeps True apart from 1, and an absent key apart."""
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)) and bool(a) == bool(b)
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _equal_on(cfg, want, keys):
    return all(same(cfg.get(k, _ABSENT), want.get(k, _ABSENT)) for k in keys)


def expected_row(setting, overrides):
    """The ablated keys of a row: the paper's method, the setting's batch, then the row's overrides."""
    want = {**METHOD, "n_classes": setting["n_classes"], "n_images": setting["n_images"]}
    if isinstance(setting["n_classes"], numbers.Real) and isinstance(setting["n_images"], numbers.Real):
        overrides = scale_class_sizes(overrides, setting["n_classes"], setting["n_images"])
    want.update(overrides)
    return want


def matches_row(cfg, want):
    """Whether a run's config equals `want` on the ablated keys (API-only keys skipped for a Baseline)."""
    return _equal_on(cfg, want, [k for k in ABLATED if not (want["api"] is False and k in API_ONLY)])


def is_method(cfg):
    """Whether a run's config is the paper's method (API-Net with every choice of Section 4)."""
    return _equal_on(cfg, METHOD, METHOD)


def setting_key(cfg, keys=GROUP_KEYS):
    """A hashable key of `cfg`'s values on `keys`, and of its data (`content_of`) where `keys` hold the data set."""
    key = tuple(json.dumps(cfg.get(k), sort_keys=True, default=str) for k in keys)
    if "dataset" not in keys:
        return key
    return key + (json.dumps(content_of(cfg), sort_keys=True, default=str),)


def plural(n, word):
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def shown_weights(w):
    """Weights as the report shows them: a checkpoint file by its name (no local folder), a weights name as is."""
    return Path(w).name if isinstance(w, str) and ("/" in w or w.endswith(CHECKPOINT_SUFFIXES)) else w


def _synthetic_words(settings):
    """The generated set's settings (`apikit.data.synthetic.make`) in words: '12 species, 40 training + 200 test
    images per species, 128 px, seed 0'. Its n_classes counts species, not a run's classes per batch."""
    s, parts = dict(settings), []
    if "n_classes" in s:
        parts.append(f"{s.pop('n_classes')} species")
    images = [f"{s.pop(k)} {word}" for k, word in (("n_train", "training"), ("n_test", "test")) if k in s]
    if images:
        parts.append(" + ".join(images) + " images per species")
    if "size" in s:
        parts.append(f"{s.pop('size')} px")
    if "seed" in s:
        parts.append(f"seed {s.pop('seed')}")
    return ", ".join(parts + [f"{k}={v}" for k, v in s.items()])


def dataset_words(cfg):
    """The data set's name, with what the name leaves open: 'folder ~/my_birds', 'synthetic (12 species, ...)'."""
    name, value = str(cfg.get("dataset")), next(iter(content_of(cfg).values()), None)
    if value is None or value == {}:
        return name
    if isinstance(value, dict):
        words = _synthetic_words(value) if name == "synthetic" else ", ".join(f"{k}={v}" for k, v in value.items())
        return f"{name} ({words})"
    return f"{name} {value}"


def key_words(key):
    """A setting key as the report names it: a batch key with its meaning from the schema ('n_classes (N_cl:
    classes per batch)'), so that it is not read as the data set's classes; any other key as it is."""
    if key not in BATCH_KEYS:
        return key
    return f"{key} ({next(p.help for p in PARAMS if p.name == key).split(' (the paper')[0]})"


def describe(setting):
    """A setting in words, e.g. 'cub, resnet101, ImageNet-pretrained, 448 px from 512, 100 epochs (8 frozen),
    sgd lr 0.01 wd 0.0005, batch 30 classes x 4 images, fp32'; only the keys `setting` has."""
    s, parts = setting, [dataset_words(setting)] if "dataset" in setting else []
    if "arch" in s:
        parts.append(str(s["arch"]))
    if "pretrained" in s:
        w = s.get("weights")
        parts.append(("ImageNet-pretrained" if w is None else f"pretrained ({shown_weights(w)})") if s["pretrained"] is True
                     else "from scratch" if s["pretrained"] is False else f"pretrained {s['pretrained']!r}")
    if s.get("normalize") is not None:  # stated statistics only: None, the backbone's own, go with its weights
        parts.append(f"{s['normalize']} input statistics")
    if "size" in s:
        parts.append(f"{s['size']} px" + (f" from {s['resize']}" if "resize" in s else ""))
    if "epochs" in s:
        frozen = s.get("freeze_epochs")
        parts.append(plural(s["epochs"], "epoch") + (f" ({frozen} frozen)" if frozen else ""))
    if "opt" in s:
        parts.append(f"{s['opt']} lr {s.get('lr'):g} wd {s.get('wd'):g}" if all(
            isinstance(s.get(k), numbers.Real) for k in ("lr", "wd")) else f"{s['opt']} lr {s.get('lr')} wd {s.get('wd')}")
    if "n_classes" in s:
        parts.append(f"batch {s['n_classes']} classes x {s.get('n_images')} images")
    if "precision" in s:
        parts.append(str(s["precision"]))
    return ", ".join(parts)


def is_paper_setting(setting, sota=False):
    """Whether `setting` is the paper's: for Tables 1-5 (CUB, ResNet-101, Section 4), or with `sota` for
    its cell of Tables 6-10 (one of the paper's data sets and backbones, `recipe(dataset)`)."""
    if not sota:
        return _equal_on(setting, ABLATION_SETTING, SETTING_KEYS)
    d = setting.get("dataset")
    keys = [k for k in SETTING_KEYS if k != "arch"]  # the recipe is the same for every backbone
    return d in PAPER_SOTA and setting.get("arch") in PAPER_ARCHS and _equal_on(setting, recipe(d), keys)


def differences(setting):
    """(key, ours, the paper's) for every setting key where `setting` differs from the paper's recipe: its
    data set's (Tables 6-10) when the paper has that data set, else Tables 1-5's."""
    d = setting.get("dataset")
    ref = {**recipe(d), "arch": PAPER_ARCH} if d in PAPER_SOTA else ABLATION_SETTING
    out = []
    for k in SETTING_KEYS:
        if k == "arch" and d in PAPER_SOTA and setting.get(k) in PAPER_ARCHS:
            continue
        if not same(setting.get(k, _ABSENT), ref[k]):
            out.append((k, shown_weights(setting.get(k)) if k == "weights" else setting.get(k), ref[k]))
    return out


def run_marks(run):
    """What sets one run apart from the paper's training beyond its setting's label: other weights loaded than
    torchvision's IMAGENET1K_V1 where the config names none (`weights_loaded`), and a precision other than fp32.
    Weights the config names are in the setting's label (`describe`), once, not in every cell."""
    cfg, marks = run["config"], []
    if cfg.get("weights") is None and cfg.get("pretrained") is True and run.get("weights_recorded"):
        loaded = run.get("weights_loaded")
        if not (isinstance(loaded, str) and loaded.endswith("." + PAPER_WEIGHTS)):
            marks.append(f"loaded {loaded}" if isinstance(loaded, str) else "no weights loaded")
    if cfg.get("precision", "fp32") != "fp32":
        marks.append(str(cfg.get("precision")))
    return marks


def _size(v):
    return v if isinstance(v, numbers.Real) and not isinstance(v, bool) else -1


def settings(runs, base=None):
    """The settings found in `runs` (dicts of SETTING_KEYS, base batch inferred), the paper's first.

    `base` (a dict of any SETTING_KEYS) keeps the matching settings and pins the batch where it names it.
    """
    base = dict(base or {})
    unknown = set(base) - set(SETTING_KEYS)
    if unknown:
        raise ValueError(f"base has unknown keys {sorted(unknown)}; choose from {', '.join(SETTING_KEYS)}.")
    groups = {}
    for cfg in (countable(runs)["config"] if not runs.empty else []):
        groups.setdefault(setting_key(cfg), []).append(cfg)
    found = []
    for cfgs in groups.values():
        setting = {**{k: cfgs[0].get(k) for k in GROUP_KEYS}, **content_of(cfgs[0])}
        if not all(same(setting[k], v) for k, v in base.items() if k in GROUP_KEYS):
            continue
        batches = {setting_key(c, BATCH_KEYS): {k: c.get(k) for k in BATCH_KEYS} for c in cfgs}.values()

        def score(batch):
            s = {**setting, **batch}
            rows = [expected_row(s, o) for t in TABLES.values() for _, o in t]
            explained = sum(any(matches_row(c, w) for w in rows) for c in cfgs)
            paper = all(same(batch[k], ABLATION_SETTING[k]) for k in BATCH_KEYS)
            return explained, paper, _size(batch["n_classes"]) * _size(batch["n_images"]), _size(batch["n_classes"])

        batch = max(batches, key=score)
        batch.update({k: v for k, v in base.items() if k in BATCH_KEYS})
        found.append({**setting, **batch})
    return sorted(found, key=lambda s: (not is_paper_setting(s), describe(s)))
