"""Two runs opened for comparison, a Baseline and an API-Net of one setting, with the checks visualize.ipynb and the
explorer share: each model file matched to its run's metrics.json, one setting, one input normalisation, the data
set's classes, and maps large enough to say where a channel looks.

    opened = open_runs("reports/runs/demo/api-False/seed-0", "reports/runs/demo/api-net/seed-0")

Relative paths resolve against the project root (`apikit.runs.resolve`), wherever the kernel starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..notebook_errors import OneLineError
from ..schema import SETTING_KEYS
from ..data.sources import content_of
from ..record import RunRecord
from ..runs import resolve, shown

__all__ = ["Refused", "MIN_MAP", "Opened", "open_runs", "small_maps"]


class Refused(OneLineError, ValueError):
    """visualize refuses its parameters or runs before any work: one line says why and what to pass instead."""


def _crop(api: RunRecord, size, resize) -> tuple[int, int]:
    """(size, resize) as given, else as the API-Net run was trained (its recorded config)."""
    size = api.config.get("size") if size is None else size
    resize = api.config.get("resize") if resize is None else resize
    if size is None or resize is None:
        raise Refused(f"size/resize are None and {api.run_dir / 'metrics.json'} does not record them: pass both")
    if not 0 < size <= resize:
        raise Refused(f"need 0 < size <= resize, got size={size!r}, resize={resize!r}")
    return int(size), int(resize)


def _data(api: RunRecord, dataset, data_path, synthetic):
    """(dataset, data_path, synthetic) as given, else as the API-Net run was trained (its recorded config)."""
    if dataset is None:
        config = api.config
        if "dataset" not in config:
            raise Refused(f"dataset is None and {api.run_dir / 'metrics.json'} does not record it: pass dataset")
        dataset = config["dataset"]
        data_path = config.get("data_path") if data_path is None else data_path
        synthetic = config.get("synthetic") if synthetic is None else synthetic
    return dataset, data_path, (synthetic or None) if dataset == "synthetic" else None


MIN_MAP = 4  # a k x k map with k < 4: a random peak lands near a part so often that part hits say little


def _same_setting(baseline: RunRecord, api: RunRecord) -> None:
    """Refuse two runs whose recorded settings differ in more than `api` (the comparison would be of two things)."""
    configs = [baseline.config, api.config]
    keys = dict.fromkeys(SETTING_KEYS + tuple(content_of(configs[0])) + tuple(content_of(configs[1])))
    differ = [f"{k} {configs[0].get(k)!r} -> {configs[1].get(k)!r}" for k in keys
              if k in configs[0] and k in configs[1] and configs[0][k] != configs[1][k]]
    if differ:
        raise Refused(f"baseline_run and api_run were trained in other settings ({'; '.join(differ)}); "
                         "visualize compares a Baseline and an API-Net of one setting: pass two such runs "
                         "(e.g. the same seed of one ablation batch)")


def _normalization(records: dict) -> tuple:
    """(mean, std) both runs were trained with (their records, by parameter name), to feed and un-normalise images
    as in training."""
    found = {}
    for name, record in records.items():
        rec = record.normalization
        if "mean" not in rec or "std" not in rec:
            raise Refused(f"{name}={shown(record.run_dir)}: its metrics.json does not record the input statistics it "
                          "was trained with (normalization); pass a run that apikit's training wrote")
        found[name] = (tuple(rec["mean"]), tuple(rec["std"]))
    if found["baseline_run"] != found["api_run"]:
        raise Refused(f"the two runs were trained with other input statistics (baseline_run: mean/std "
                         f"{found['baseline_run']}, api_run: {found['api_run']}); compare runs of one backbone and "
                         "its weights")
    return found["api_run"]


def _load(name: str, record: RunRecord, model: Path, vocab: list[str], dataset: str, root: Path, dls):
    """The run's network on `dls`: its weights (`model`, as `record.model()` checked it; read with weights_only=True,
    so nothing is unpickled) in the network its recorded config describes; its classes must be the data set's."""
    from ..export import build_network, read_weights
    state, trained_on = read_weights(model)
    if trained_on != vocab:
        raise Refused(f"{name}={str(record.run_dir)!r} was trained on other classes than {dataset!r} at {root}")
    return build_network(dls, record.config, state, where=str(model))


def small_maps(hw, size, radius=1.0) -> str:
    """Why maps of `hw` cells at crop `size` say little about where a channel looks ("" when they are MIN_MAP or more)."""
    if min(hw) >= MIN_MAP:
        return ""
    return (f"the runs' last-stage feature maps are {hw[0]} x {hw[1]} at size={size}: a peak chosen at random lands "
            f"within radius {radius} of a part almost as often as a gate's does, so Fig. 3 and the part hits say "
            f"little; train at a crop that gives {MIN_MAP} x {MIN_MAP} or more (size >= 97 for stride-32 backbones)")


class Opened(NamedTuple):
    """Two loaded runs and the test split they are compared on."""
    baseline: object       # the Baseline's Learner, on dls' device, in eval mode
    api: object            # API-Net's (it has `model.api`)
    dls: object            # the data set's DataLoaders (test transforms and normalisation as in training)
    root: Path             # the data set's folder
    vocab: list            # class names
    dataset: str
    size: int
    resize: int
    baseline_run: Path     # absolute, without ".."
    api_run: Path
    fingerprints: dict     # {"baseline", "api"}: the model.pth fingerprints their metrics.json record


def open_runs(baseline_run, api_run, dataset=None, data_path=None, synthetic=None, size=None, resize=None,
              bs: int = 16) -> Opened:
    """Check and load a Baseline and an API-Net run of one setting (None: as `api_run` was trained); a `Refused`,
    `NoModel` or `NotItsModel` says in one line what to pass instead, before the data loads where it can."""
    from ..data import get_dls
    # runs.resolve: relative to the project root; then pathlib's, so that what is printed and recorded has no "..".
    baseline_run, api_run = (resolve(r).resolve() for r in (baseline_run, api_run))
    # Each metrics.json is read once; before the data loads, a missing model file, or one another run left, stops here.
    records, models = {}, {}
    for name, run in (("baseline_run", baseline_run), ("api_run", api_run)):
        records[name] = RunRecord.read(run)
        models[name] = records[name].model()
    size, resize = _crop(records["api_run"], size, resize)
    _same_setting(records["baseline_run"], records["api_run"])
    dataset, data_path, synthetic = _data(records["api_run"], dataset, data_path, synthetic)
    data_path = None if data_path is None else resolve(data_path).resolve()
    # Only the test split is used; the class-balanced training loader just has to be buildable (2 x 2).
    dls = get_dls(dataset, data_path, size=size, resize=resize, n_classes=2, n_images=2, bs=bs,
                  synthetic=synthetic, stats=_normalization(records))
    root = Path(dls.split.attrs["root"])
    vocab = [str(v) for v in dls.vocab]
    baseline, api = (_load(name, records[name], models[name], vocab, dataset, root, dls)
                     for name in ("baseline_run", "api_run"))
    if not hasattr(api.model, "api"):
        raise Refused(f"api_run={str(api_run)!r} holds a model without an API module: is it the Baseline?")
    for learn in (baseline, api):
        learn.model.to(dls.device).eval()
    fingerprints = {"baseline": records["baseline_run"].fingerprint, "api": records["api_run"].fingerprint}
    return Opened(baseline, api, dls, root, vocab, dataset, size, resize, baseline_run, api_run, fingerprints)
