"""The random state a checkpoint carries, so that a resumed run draws what the uninterrupted run would have drawn.

Python's, NumPy's and torch's generators (and a DataLoader's `random.Random`), as tensors and plain containers:
everything loads with `torch.load(weights_only=True)`, so a checkpoint cannot carry code.
"""
import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state(train_rng=None):
    """Python, NumPy and torch RNG states (and a DataLoader's `random.Random`), as tensors and plain containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(python=_py_state(random.getstate()), numpy=[kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                               has_gauss, gauss],
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                train_dl=_py_state(train_rng.getstate()) if train_rng is not None else None)


def _py_state(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def set_rng_state(s, train_rng=None):
    """Restore what `rng_state` saved."""
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    if train_rng is not None and s.get("train_dl") is not None:
        v, internal, gauss = s["train_dl"]
        train_rng.setstate((v, tuple(internal), gauss))
