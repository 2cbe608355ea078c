#!/usr/bin/env bash
# The GPU figures of issue 5 on one H100/H200 in under 5 minutes: images/s, peak memory and model FLOP
# utilisation of the API-Net step for ResNet-50/101 at 448 px, 30 x 4, in fp32, bf16 + channels_last
# and with the gradient cache, the API-Net/Baseline step ratio, and which ResNet-101 settings fit in 16 GB.
# Needs only PyTorch and torchvision (no fastai). Run from anywhere:
#   bash benchmarks/gpu_check.sh [extra bench_gpu.py arguments]
# Writes reports/perf/bench_gpu.json, and copies it to $OUT when that is set (the device tool's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 PYTHONPATH=. timeout 290 "$PY" benchmarks/bench_gpu.py "$@"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp reports/perf/bench_gpu.json "$OUT/"; fi
