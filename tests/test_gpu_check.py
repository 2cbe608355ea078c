"""`benchmarks/gpu_check.sh --dry-run`: every part of the GPU check on the CPU with tiny sizes, and the JSON it writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_DIR": str(tmp_path), "OUT": ""}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["missing"] == []
    assert {p: r["rc"] for p, r in report["parts"].items()} == dict.fromkeys(
        ["draw", "cuda_tests", "fastai_step", "plain_torch_step", "pipeline"], 0)
    tests = report["cuda_tests"]
    assert tests["failed"] == 0 and tests["passed"] >= 4, tests
    step = report["step"]
    for name in ("resnet18/bf16_cl", "resnet18/baseline_bf16_cl"):
        for who in ("fastai", "plain_torch"):
            assert step[name][who]["images_per_s"] > 0
        assert step[name]["fastai/plain_torch"] > 0
    assert report["ratios"]["fastai: resnet18/bf16_cl api_net/baseline"] > 0
    assert report["ratios"]["plain_torch: resnet18/bf16_cl api_net/baseline"] > 0
    assert step["resnet18/fp32_chunk5"]["fastai"]["images_per_s"] > 0
    pipe = report["pipeline"]
    for cache in ("cache_off", "cache_on"):
        assert min(pipe[cache]["loader_images_per_s"]) > 0
        assert pipe[cache]["step_images_per_s"] > 0 and min(pipe[cache]["train_images_per_s"]) > 0
        assert 0 <= pipe[cache]["loader_wait_share"] < 1
