"""`apikit/runs.py`: atomic writes, metrics.json, run locks, model fingerprints, project paths."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from apikit.runs import (CorruptRunFile, RunInUse, atomic_write, check_model, model_fingerprint, read_metrics,
                         resolve, run_lock, run_status, write_json)


def test_an_interrupted_write_leaves_the_old_metrics_intact(tmp_path, monkeypatch):
    f = tmp_path / "metrics.json"
    write_json(f, {"status": "finished", "metrics": {"top1": 50.0}})
    before = f.read_bytes()

    def crash(self, text, *a, **k):  # the disk fills up half way through the write
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise OSError("No space left on device")
    monkeypatch.setattr(Path, "write_text", crash)
    with pytest.raises(OSError):
        write_json(f, {"status": "finished", "metrics": {"top1": 99.0}, "history": list(range(1000))})
    assert f.read_bytes() == before and json.loads(before)["metrics"]["top1"] == 50.0



def test_write_json_cleans_non_finite_numbers(tmp_path):
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0), "d": (1, 2),
                                     "e": torch.tensor([1.0, float("nan")]), "f": np.arange(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, 1.5], "c": 2.0, "d": [1, 2],
                                                            "e": [1.0, None], "f": [0, 1]}


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path):
    def fail(tmp):
        Path(tmp).write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "checkpoint.pth", fail)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_metrics_is_one_clear_error(tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "fini')
    with pytest.raises(CorruptRunFile, match="metrics.json cannot be read.*overwrite=True"):
        read_metrics(tmp_path)
    assert read_metrics(tmp_path / "none") is None


def test_a_second_run_on_a_folder_is_refused_naming_the_holder(tmp_path):
    with run_lock(tmp_path) as me:
        with pytest.raises(RunInUse, match=f"in use by another run \\(pid {me['pid']} on .*started"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()
    with run_lock(tmp_path):  # released: taken again
        pass


def test_a_dead_holders_lock_blocks_nothing(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (tmp_path / ".lock").write_text(json.dumps(dict(pid=int(dead.stdout), host=socket.gethostname(), started="x")))
    write_json(tmp_path / "metrics.json", {"status": "running"})
    assert run_status(tmp_path, read_metrics(tmp_path)) == "interrupted"
    with run_lock(tmp_path) as me:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == me["pid"] == os.getpid()
        assert run_status(tmp_path, read_metrics(tmp_path)) == "running"


def test_check_model_refuses_a_model_of_another_run(tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"model A")
    write_json(tmp_path / "metrics.json", {"status": "finished", "model_sha256": model_fingerprint(tmp_path / "model.pkl")})
    assert check_model(tmp_path) == tmp_path / "model.pkl"
    (tmp_path / "model.pkl").write_bytes(b"model B, left by an earlier run")
    with pytest.raises(ValueError, match="is not the model of .*fingerprints differ"):
        check_model(tmp_path)
    write_json(tmp_path / "metrics.json", {"status": "finished"})
    with pytest.raises(ValueError, match="records no model fingerprint"):
        check_model(tmp_path)


def test_relative_paths_resolve_against_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("reports/runs") == Path(__file__).resolve().parents[1] / "reports" / "runs"
    assert resolve(tmp_path / "x") == tmp_path / "x"
