# Two commands on a fresh machine: `make demo` and `make test` (README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.apikit-installed

SEED      ?= 0
# The paper trained in fp32; PRECISION=bf16 (or fp16) is the fast path, recorded in metrics.json and marked in the report.
PRECISION ?= fp32

.PHONY: demo test install git-filter paper ablations tables report bench kernel lab lab-user clean-venv ci-deps

# The stamp re-installs whenever pyproject.toml changes, and registers the git filter below in a git checkout. The
# venv's python3 kernelspec names apikit's IPC provisioner (apikit/jupyter.py): `papermill` and `jupyter lab` from
# the venv start kernels on local sockets, not TCP, so ipykernel does not warn "Kernel is running over TCP without
# encryption".
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m apikit.jupyter
	if git rev-parse --git-dir >/dev/null 2>&1; then $(MAKE) --no-print-directory git-filter; fi
	touch $(STAMP)

install: $(STAMP)

# notebooks/*.ipynb (.gitattributes) go into git through nbstripout, for this clone only: without outputs, execution
# counts, papermill's run records or the kernel's Python version, cell ids kept. A template run in Lab or by
# papermill keeps its outputs on disk; git diff shows only edits to its code or parameters, and so do commits.
NBSTRIPOUT := $(abspath $(BIN))/python -m nbstripout --keep-id
git-filter:
	git config filter.nbstripout.clean '$(NBSTRIPOUT)'
	git config filter.nbstripout.smudge cat
	git config filter.nbstripout.required true
	git config filter.nbstripout.extrakeys 'metadata.papermill cell.metadata.papermill metadata.language_info.version'
	git config diff.ipynb.textconv '$(NBSTRIPOUT) -t'

# The whole pipeline on the generated data set, on CPU, with papermill -> reports/demo/
demo: $(STAMP)
	$(BIN)/python -m apikit.demo
	$(BIN)/python -m apikit.demodoc

# The linter first (pyproject's [tool.ruff]: unused, shadowed and undefined names), then the suite on two processes
# (most tests are single-threaded; the SLURM tests stay on one of them, first and in order (tests/conftest.py's
# scheduler), so that while they wait for SLURM the other process goes through the rest: tests/test_slurm_grid.py)
test: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

# The Debian 12 packages of the tests that start services, as root, for CI (.ci/run calls it before `make test`):
# SLURM with accounting over MariaDB for the launcher's tests (tests/slurm_cluster.py), Chromium and its driver for a
# browser test. Nothing happens when their programs are all there; `make test` never installs system packages (the
# tests that need them skip, naming this target). Not root: says what to run with sudo, and fails.
CI_DEBS := slurmctld slurmd slurm-client slurmdbd mariadb-server chromium chromium-driver
CI_CMDS := slurmctld slurmd sacct slurmdbd mariadbd chromium chromedriver
ci-deps:
	@export PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"; missing=; \
	for c in $(CI_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make ci-deps: missing$$missing; as root: sudo make ci-deps, or sudo sh -c 'apt-get update &&" \
	    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(CI_DEBS)'" >&2; exit 1; fi; \
	echo "make ci-deps: missing$$missing: installing $(CI_DEBS)"; \
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(CI_DEBS)

# The paper's configuration (apikit.paper.recipe) of one benchmark on a GPU -> reports/runs/paper/<dataset>-<arch>/seed-$(SEED);
# DATASET and ARCH (e.g. DATASET=dogs ARCH=resnet50) where given, else --paper's: the paper's setting (apikit.paper)
paper: $(STAMP)
	$(BIN)/python -m apikit.experiment --paper $(if $(DATASET),--dataset $(DATASET)) $(if $(ARCH),--arch $(ARCH)) \
	  --seed $(SEED) --precision $(PRECISION)

# The launcher (apikit.launch) for the grids below: EXECUTOR=local (one run per visible GPU) or slurm; LAUNCH_ARGS
# for the rest, e.g. LAUNCH_ARGS="--partition gpu --gpus-per-run 1 --time 2-00:00:00 --no-wait" (docs/scale.md)
EXECUTOR    ?= local
LAUNCH_ARGS ?=

# Tables 1-5 at paper scale on GPUs (CUB, ResNet-101) -> reports/runs/ablations
ablations: $(STAMP)
	$(BIN)/python -m apikit.ablations --paper --precision $(PRECISION) --out-root reports/runs/ablations \
	  --executor $(EXECUTOR) $(LAUNCH_ARGS)

# Tables 6-10 at the paper's recipe on GPUs: every data set x backbone cell -> reports/runs/paper (as make paper)
tables: $(STAMP)
	$(BIN)/python -m apikit.tables --precision $(PRECISION) --executor $(EXECUTOR) $(LAUNCH_ARGS)

# A Jupyter kernel named "apikit" that runs this venv, for a JupyterLab installed elsewhere
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name apikit --display-name "Python 3 (apikit)"

# JupyterLab from the venv, in the project root; a saved notebook keeps its outputs (git stores notebooks/ without).
# LAB_ARGS go to `jupyter lab`, e.g. make lab LAB_ARGS="--no-browser --port 8890"; as root (a container, where
# JupyterLab refuses root unless told): make lab LAB_ARGS=--allow-root
LAB_ARGS ?=
lab: lab-user $(STAMP)
	mkdir -p scratch
	$(BIN)/jupyter lab --notebook-dir . $(LAB_ARGS)

# Before anything is installed or made: as root without --allow-root, JupyterLab would refuse after all that.
lab-user:
	@if [ "$$(id -u)" = 0 ] && ! echo "$(LAB_ARGS)" | grep -qi "allow.root"; then \
	  echo "make lab: you are root, and JupyterLab refuses to run as root unless told: make lab LAB_ARGS=--allow-root" >&2; \
	  exit 1; fi

# Every run under reports/runs -> reports/README.md and reports/report.html
report: $(STAMP)
	mkdir -p reports/runs
	$(BIN)/papermill --log-output --no-progress-bar notebooks/report.ipynb reports/report.ipynb -p runs_root reports/runs \
	  -p out_dir reports

# CPU benchmarks (benchmarks/README.md) -> reports/perf/*.json, a few minutes
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pairs.py
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_infer.py
	$(BIN)/python benchmarks/bench_data.py

# What a lent GPU machine (Python 3.12, PyTorch, timm, pandas, matplotlib, pytest; no fastai, no network) lacks to
# run benchmarks/gpu_check.sh: fastai's import chain, pinned, no deps (spacy and papermill are not needed) -> benchmarks/wheels
GPU_WHEELS := fastai==2.8.12 fastcore==2.2.41 fasttransform==0.0.5 fastprogress==1.1.6 fastdownload==0.0.8 \
	plum-dispatch==2.9.0 beartype==0.23.1 rich==15.0.0 python-fasthtml==0.14.14 starlette==1.10.0 \
	itsdangerous==2.2.0 python-multipart==0.0.34 requests==2.34.2 urllib3==2.8.0 certifi==2026.10.19.post1 \
	charset-normalizer==3.5.3 scipy==1.17.1 scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0 \
	narwhals==2.29.0 cloudpickle==3.1.3
gpu-wheels: $(STAMP)
	rm -rf benchmarks/wheels
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d benchmarks/wheels $(GPU_WHEELS)
	du -sh benchmarks/wheels

clean-venv:
	rm -rf $(VENV)
