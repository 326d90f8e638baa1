# gazeprep - every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out

.DEFAULT_GOAL := help
.PHONY: help setup setup-ml demo test sample-data bench clean

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# torch is pinned to 2.13.0 (the CPU build); torchvision 0.28.0 pairs with it.
$(VENV)/.ml-installed: pyproject.toml $(VENV)/.core-installed
	$(BIN)/pip install -q -e ".[dev,ml]"
	touch $@

setup: $(VENV)/.core-installed  ## Create .venv with the core package and test tools

setup-ml: $(VENV)/.ml-installed  ## Add the [ml] extra (torch 2.13.0, segment-anything, timm, ...)

demo: setup  ## Build REFLACX heatmaps from the bundled sample data into out/demo
	$(BIN)/gazeprep build-heatmaps --dataset reflacx --out $(OUT)/demo

test: setup-ml  ## Run the whole test suite
	$(BIN)/python -m pytest

sample-data: setup  ## Regenerate sample_data/ (deterministic synthetic releases)
	rm -rf sample_data/reflacx sample_data/egd-cxr sample_data/mimic-cxr
	$(BIN)/gazeprep synth --dataset mimic-cxr --out sample_data/mimic-cxr --cases 12 --seed 7
	$(BIN)/gazeprep synth --dataset reflacx --out sample_data/reflacx --cases 12 --seed 7 --mimic-root sample_data/mimic-cxr
	$(BIN)/gazeprep synth --dataset egd-cxr --out sample_data/egd-cxr --cases 8 --seed 7 --mimic-root sample_data/mimic-cxr

bench: setup-ml  ## Benchmarks: renderer vs naive reference, 3000-case build, labeler speed
	$(BIN)/python -m bench.run

clean:  ## Remove build outputs (keeps .venv)
	rm -rf $(OUT) bench/_data bench/_out .pytest_cache
