import os
import pickle

import pytest
import torch

from apikit.runs import CorruptRunFile
from apikit.tensorfile import load_tensors

MARK = "/tmp/apikit-tensorfile-payload-ran"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


def test_tensors_and_plain_containers_are_read_back(tmp_path):
    torch.save({"w": torch.arange(3.0), "names": ["a", "b"], "epoch": 2}, tmp_path / "ok.pth")
    state = load_tensors(tmp_path / "ok.pth", "unused")
    assert torch.equal(state["w"], torch.arange(3.0)) and state["names"] == ["a", "b"] and state["epoch"] == 2


@pytest.mark.parametrize("content, why", [
    (b"\x80\x02 truncated", "UnpicklingError"),
    (pickle.dumps(Payload(), protocol=2), "UnpicklingError"),
])
def test_a_file_that_is_not_tensors_is_one_message_with_the_callers_fix(tmp_path, content, why):
    if os.path.exists(MARK):
        os.unlink(MARK)
    (tmp_path / "bad.pth").write_bytes(content)
    with pytest.raises(CorruptRunFile) as e:
        load_tensors(tmp_path / "bad.pth", "delete it.", CorruptRunFile)
    assert str(e.value) == (f"{tmp_path / 'bad.pth'} cannot be read ({why}): it is truncated, or holds more than "
                            "tensors and plain containers (read with weights_only=True, so it cannot run code); "
                            "delete it.")
    assert not os.path.exists(MARK)
    with pytest.raises(ValueError, match="bad.pth cannot be read .*; replace it.$"):
        load_tensors(tmp_path / "bad.pth", "replace it.")
