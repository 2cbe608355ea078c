"""`apikit/export.py`: a run's network as its weights alone (model.pth), rebuilt from the run's recorded config."""
import os
import pickle

import pytest
import torch

from apikit.export import build_network, export_weights, read_weights
from apikit.runs import CorruptRunFile

CONFIG = dict(arch="resnet18", api=True, size=64, mutual="mlp", gate="pair", intra="similar", inter="similar")
MARK = "/tmp/apikit-export-payload-ran"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


def test_the_network_comes_back_from_its_weights_and_config(runs, tmp_path):
    learn, dls = runs["api"], runs["dls"]
    export_weights(learn, tmp_path / "model.pth")
    state, vocab = read_weights(tmp_path / "model.pth")
    assert vocab == [str(v) for v in dls.vocab] and [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    rebuilt = build_network(dls, CONFIG, state)
    want = learn.model.state_dict()
    assert set(rebuilt.model.state_dict()) == set(want) and any(k.startswith("api.") for k in want)
    assert all(torch.equal(v, want[k]) for k, v in rebuilt.model.state_dict().items())
    x = dls.valid.one_batch()[0][:2].cpu()
    with torch.no_grad():
        assert torch.equal(rebuilt.model.eval()(x), learn.model.eval().cpu()(x))


@pytest.mark.parametrize("content, message", [
    (Payload(), "cannot be read \\(UnpicklingError\\).*weights_only=True, so it cannot run code"),
    ({"model": {"w": torch.zeros(1)}}, "is not a model.pth apikit wrote"),
    ({"model": {"w": "x"}, "vocab": ["a"]}, "is not a model.pth apikit wrote"),
])
def test_a_model_pth_that_is_not_one_is_refused_unrun(tmp_path, content, message):
    os.unlink(MARK) if os.path.exists(MARK) else None
    (tmp_path / "model.pth").write_bytes(pickle.dumps(content)) if isinstance(content, Payload) else \
        torch.save(content, tmp_path / "model.pth")
    with pytest.raises(CorruptRunFile, match=message):
        read_weights(tmp_path / "model.pth")
    assert not os.path.exists(MARK)


def test_weights_that_do_not_fit_the_recorded_network_are_one_clear_error(runs, tmp_path):
    export_weights(runs["baseline"], tmp_path / "model.pth")
    state, _ = read_weights(tmp_path / "model.pth")
    with pytest.raises(ValueError, match=r"does not fit the network its metrics.json describes \(arch 'resnet18', "
                                         r"api True\): keys \d+ missing \(api\."):
        build_network(runs["dls"], CONFIG, state)
    with pytest.raises(ValueError, match="does not record arch, size, so the network cannot be rebuilt"):
        build_network(runs["dls"], {"api": False}, state)
