# Two commands on a fresh machine: `make demo` and `make test` (README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.apikit-installed

DATASET   ?= cub
ARCH      ?= resnet101
SEED      ?= 0
# The paper trained in fp32; PRECISION=bf16 (or fp16) is the fast path, recorded in metrics.json and marked in the report.
PRECISION ?= fp32

.PHONY: demo test install paper ablations report bench kernel lab clean-venv

# The stamp re-installs whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the generated data set, on CPU, with papermill -> reports/demo/
demo: $(STAMP)
	$(BIN)/python -m apikit.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The paper's configuration (apikit.paper.recipe) of one benchmark on a GPU -> reports/runs/paper/$(DATASET)-$(ARCH)/seed-$(SEED)
paper: $(STAMP)
	$(BIN)/python -m apikit.experiment --paper --dataset $(DATASET) --arch $(ARCH) --seed $(SEED) --precision $(PRECISION)

# Tables 1-5 at paper scale on a GPU (CUB, ResNet-101) -> reports/runs/ablations
ablations: $(STAMP)
	$(BIN)/python -m apikit.ablations --paper --precision $(PRECISION) --out-root reports/runs/ablations

# A Jupyter kernel named "apikit" that runs this venv, for a JupyterLab installed elsewhere
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name apikit --display-name "Python 3 (apikit)"

# JupyterLab from the venv, in the project root (work on copies under scratch/; the templates stay clean)
lab: $(STAMP)
	mkdir -p scratch
	$(BIN)/jupyter lab --notebook-dir .

# Every run under reports/runs -> reports/README.md and reports/report.html
report: $(STAMP)
	mkdir -p reports/runs
	$(BIN)/papermill notebooks/report.ipynb reports/report.ipynb -p runs_root reports/runs -p out_dir reports

# CPU benchmarks (benchmarks/README.md) -> reports/perf/*.json, a few minutes
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pairs.py
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_infer.py
	$(BIN)/python benchmarks/bench_data.py

clean-venv:
	rm -rf $(VENV)
