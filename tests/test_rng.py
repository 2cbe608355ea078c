"""`apikit/rng.py`: the random state a checkpoint carries."""
import random

import numpy as np
import torch

from apikit.rng import rng_state, set_rng_state


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    dl_rng = random.Random(5)
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    torch.save(rng_state(dl_rng), tmp_path / "rng.pth")
    want = (torch.rand(3), np.random.rand(3), random.random(), dl_rng.random())
    torch.manual_seed(9); np.random.seed(9); random.seed(9); dl_rng.seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True), dl_rng)
    got = (torch.rand(3), np.random.rand(3), random.random(), dl_rng.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2:] == got[2:]
