"""A trained run's network without pickle: `model.pth` (its weights and class names) beside fastai's `model.pkl`,
and the network rebuilt from the run's recorded config with those weights.

`model.pkl` is fastai's exported Learner, a pickle: loading it can run code, so it is for users, for runs they made;
apikit never loads it. `model.pth` holds tensors and plain containers only and is read with `weights_only=True`:
visualize and the explorer load a run through it (checked by `apikit.record.RunRecord.model`) and the architecture
in metrics.json; a run without it is refused.
"""
import torch

from .schema import keys_with
from .runs import CorruptRunFile, atomic_write
from .step import unwrap
from .tensorfile import load_tensors

__all__ = ["WEIGHTS", "export_weights", "read_weights", "build_network"]

WEIGHTS = "model.pth"
# The recorded parameters that shape the network (the rest only shape its training).
_SHAPE = keys_with("network")
_RETRAIN = "re-run the training of its run_dir (overwrite=True)."


def export_weights(learn, path):
    """Write the network's state dict and its class names (in label order) to `path` atomically; returns it."""
    state = dict(model=unwrap(learn.model).state_dict(), vocab=[str(v) for v in learn.dls.vocab])
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_weights(path):
    """(state dict, class names) from a `model.pth`, read with weights_only=True; CorruptRunFile if it is not one."""
    state = load_tensors(path, _RETRAIN, CorruptRunFile)
    ok = (isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("vocab"), list)
          and all(torch.is_tensor(v) for v in state["model"].values())
          and all(isinstance(v, str) for v in state["vocab"]))
    if not ok:
        raise CorruptRunFile(f"{path} is not a model.pth apikit wrote (a state dict under 'model' and the class "
                             f"names under 'vocab'); {_RETRAIN}")
    return state["model"], state["vocab"]


def build_network(dls, config, state, where="model.pth"):
    """A Learner on `dls` whose network is the one `config` (a run's recorded config) describes, holding `state`.

    Built from scratch (no weights are downloaded) in fp32, uncompiled, without gradient caching: the network
    the run trained, for inference. `where` names the weights in the errors.
    """
    from .learner import api_learner
    missing = [k for k in ("arch", "api", "size") if config.get(k) is None]
    if missing:
        raise ValueError(f"{where}: its run's metrics.json does not record {', '.join(missing)}, so the network "
                         "cannot be rebuilt; re-run the training of its run_dir (overwrite=True).")
    shape = {k: config[k] for k in _SHAPE if config.get(k) is not None}
    learn = api_learner(dls, **shape, pretrained=False)
    own = unwrap(learn.model).state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        said = [f"{len(v)} {what} ({', '.join(v[:2])}{', ...' if len(v) > 2 else ''})" for v, what in
                ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if v]
        raise ValueError(f"{where} does not fit the network its metrics.json describes (arch {config['arch']!r}, "
                         f"api {config['api']!r}): keys {'; '.join(said)}. Re-run the training of its run_dir "
                         "(overwrite=True).")
    unwrap(learn.model).load_state_dict(state)
    return learn
