# Two commands on a fresh machine: `make demo` and `make test` (README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.apikit-installed

DATASET   ?= cub
ARCH      ?= resnet101
SEED      ?= 0
PRECISION ?= bf16

.PHONY: demo test install paper ablations report bench clean-venv

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

# The paper's configuration of one benchmark on a GPU -> reports/runs/paper/$(DATASET)-$(ARCH)/seed-$(SEED)
paper: $(STAMP)
	$(BIN)/python -m apikit.experiment --dataset $(DATASET) --arch $(ARCH) --seed $(SEED) --precision $(PRECISION)

# Tables 1-5 at paper scale on a GPU (CUB, ResNet-101) -> reports/runs/ablations
ablations: $(STAMP)
	$(BIN)/papermill notebooks/ablations.ipynb reports/ablations.ipynb -p dataset cub -p arch resnet101 \
	  -p pretrained True -p size 448 -p resize 512 -p epochs 100 -p freeze_epochs 8 -p lr 0.01 \
	  -p n_classes 30 -p n_images 4 -p precision $(PRECISION) -p out_root reports/runs/ablations

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
