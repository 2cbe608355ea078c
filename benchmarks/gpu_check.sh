#!/usr/bin/env bash
# The real kit on one H100/H200 in one command, in under 7 minutes (benchmarks/README.md, "GPU check"):
#   1. the CUDA tests (tests/test_cuda.py, `-m cuda`) through api_learner + learn.fit on the GPU;
#   2. the fastai training step (bench_fastai_gpu.py) and the plain-torch step (bench_gpu.py) for
#      ResNet-50/101 at 448 px, 30 x 4: images/s, peak memory, API-Net/Baseline and fastai/plain-torch ratios,
#      which ResNet-101 settings fit in 16 GB;
#   3. the data pipeline (bench_pipeline.py): the generated set drawn at 512 px, ResNet-50, 448 crops,
#      loader images/s apart from the step's, resize cache off and on.
# Each part runs under its own `timeout`, so a slow one cannot eat the others' time; each writes its file as
# it goes, and benchmarks/gpu_summary.py gathers them into one JSON, copied to $OUT when that is set.
#
#   make gpu-wheels                          # here, once: fastai's import chain for Python 3.12 -> benchmarks/wheels/
#   bash benchmarks/gpu_check.sh             # on the GPU machine (the run tool carries benchmarks/wheels)
#   bash benchmarks/gpu_check.sh --dry-run   # here: every part on the CPU with tiny sizes, the project's venv
#
# On the GPU machine the wheels the image lacks are installed with `pip install --no-index --no-deps --target`
# into a temporary folder put first on PYTHONPATH; wheels of packages the image has are skipped.
# Environment: PYTHON (default python3, or .venv/bin/python for --dry-run), GPU_CHECK_DIR (the parts' files;
# default reports/perf/gpu_check, or a temporary folder for --dry-run), OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
T0=$(date +%s)

if [ $DRY = 1 ]; then
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    DIR=${GPU_CHECK_DIR:-$(mktemp -d -t apikit-gpu-check.XXXXXX)}
    export APIKIT_CUDA_TESTS_ON_CPU=1 OMP_NUM_THREADS=1
    DRYARG=--dry-run
    # the time boxes, seconds: install, draw, tests, fastai step, plain-torch step, pipeline
    T_INSTALL=1 T_DRAW=60 T_TESTS=120 T_FASTAI=90 T_PLAIN=60 T_PIPE=90
else
    PY=${PYTHON:-python3}
    DIR=${GPU_CHECK_DIR:-$ROOT/reports/perf/gpu_check}
    DRYARG=
    T_INSTALL=40 T_DRAW=200 T_TESTS=100 T_FASTAI=95 T_PLAIN=85 T_PIPE=80
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
case $PY in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # the parts run from benchmarks/
mkdir -p "$DIR"
rm -f "$DIR"/parts.tsv "$DIR"/cuda_tests.xml "$DIR"/bench_*.json "$DIR"/gpu_check.json
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

part() {  # part NAME SECONDS COMMAND...: run under `timeout`, log to DIR/NAME.log, record status and seconds
    local name=$1 limit=$2 t=$SECONDS rc
    shift 2
    echo "== $name (at most $limit s)"
    timeout -k 5 "$limit" "$@" > "$DIR/$name.log" 2>&1
    rc=$?
    tail -n 25 "$DIR/$name.log"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t))" >> "$DIR/parts.tsv"
    echo "== $name: exit $rc in $((SECONDS - t)) s"
}

install_wheels() {  # the wheels under benchmarks/wheels whose distributions $PY lacks, into a temporary target
    local site=$1 missing
    missing=$("$PY" - benchmarks/wheels/*.whl <<'EOF'
import importlib.metadata as md, re, sys
for whl in sys.argv[1:]:
    name = re.sub(r"[-_.]+", "-", whl.rsplit("/", 1)[-1].split("-")[0]).lower()
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(whl)
EOF
)
    echo "installing: ${missing:-nothing (the image has them all)}" | tr '\n' ' '; echo
    [ -z "$missing" ] || "$PY" -m pip install -q --no-index --no-deps --target "$site" $missing
}

if [ $DRY = 0 ]; then
    SITE=$(mktemp -d -t apikit-wheels.XXXXXX)
    part install $T_INSTALL install_wheels "$SITE"
    export PYTHONPATH=$SITE:$PYTHONPATH
fi

# The data set is drawn on the CPU while the GPU runs the tests and the step benchmarks.
part_bg() { part draw $T_DRAW "$PY" benchmarks/bench_pipeline.py --root "$DIR/data" --draw-only $DRYARG; }
part_bg > "$DIR/draw.out" 2>&1 &
DRAW=$!

part cuda_tests $T_TESTS "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
    --junitxml="$DIR/cuda_tests.xml"
cd benchmarks
part fastai_step $T_FASTAI "$PY" bench_fastai_gpu.py $DRYARG --warmup 2 --steps 5 --out "$DIR/bench_fastai_gpu.json"
part plain_torch_step $T_PLAIN "$PY" bench_gpu.py $DRYARG --warmup 2 --steps 5 --out "$DIR/bench_gpu.json"
wait $DRAW
cat "$DIR/draw.out"
part pipeline $T_PIPE "$PY" bench_pipeline.py --root "$DIR/data" $DRYARG --out "$DIR/bench_pipeline.json"
cd "$ROOT"
"$PY" benchmarks/gpu_summary.py "$DIR" "$DIR/gpu_check.json"
echo "gpu_check: $(( $(date +%s) - T0 )) s in all"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    cp "$DIR/gpu_check.json" "$OUT/"
    cp "$DIR"/*.log "$DIR"/bench_*.json "$OUT/" 2>/dev/null || true
fi
