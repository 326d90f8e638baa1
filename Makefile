# gazeprep - every target installs what it needs into .venv first.
# BIN=/path/to/env/bin (on the command line) uses an existing environment instead and installs nothing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out

.DEFAULT_GOAL := help
.PHONY: help setup setup-ml demo test sample-data bench clean datasets anatomy FORCE

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Ground-truth datasets (make datasets builds them all; REFLACX_ROOT, EGD_ROOT, MIMIC_ROOT, OUT=$(OUT)):"
	@for r in $(RECIPES); do \
	  f=pipelines/$$r.yaml; \
	  ds=$$(sed -n 's/^dataset:[[:space:]]*\([^[:space:]]*\).*/\1/p' $$f); \
	  paper=$$(sed -n 's/^paper:[[:space:]]*//p' $$f); \
	  printf '  make %-30s %-8s %s -> $(OUT)/%s/\n' "$$r" "$$ds" "$$paper" "$$r"; \
	done
	@$(if $(OTHER_RECIPES),echo "  (not built by make: $(foreach r,$(OTHER_RECIPES),$(r) [dataset: $(DS_$(r))]))")

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
	@echo 'next: source $(VENV)/bin/activate && gazeprep info $(OUT)/demo  (then: gazeprep rejects $(OUT)/demo; gazeprep preview --export $(OUT)/demo --html)'

test: setup-ml  ## Run the whole test suite
	$(BIN)/python -m pytest

sample-data: setup  ## Regenerate sample_data/ (deterministic synthetic releases)
	rm -rf sample_data/reflacx sample_data/egd-cxr sample_data/mimic-cxr
	$(BIN)/gazeprep synth --dataset mimic-cxr --out sample_data/mimic-cxr --cases 12 --seed 7
	$(BIN)/gazeprep synth --dataset reflacx --out sample_data/reflacx --cases 12 --seed 7 --mimic-root sample_data/mimic-cxr
	$(BIN)/gazeprep synth --dataset egd-cxr --out sample_data/egd-cxr --cases 8 --seed 7 --mimic-root sample_data/mimic-cxr

bench: setup-ml  ## Benchmarks: renderer vs naive reference, 3000-case build, labeler speed
	$(BIN)/python -m bench.run

clean:  ## Remove build outputs, datasets and their stamps (keeps .venv and hand-corrected anatomy masks)
	@if [ -n "$$(ls -A $(ANATOMY_DIR)/overrides 2>/dev/null)" ]; then \
	  keep=$$(mktemp -d "$$(cd $(OUT)/.. && pwd)/.gazeprep-overrides.XXXXXX") && \
	  mv $(ANATOMY_DIR)/overrides $$keep/ && rm -rf $(OUT) && mkdir -p $(ANATOMY_DIR) && \
	  mv $$keep/overrides $(ANATOMY_DIR)/ && rmdir $$keep && \
	  echo "clean: removed $(OUT)/ but kept the hand-corrected masks in $(ANATOMY_DIR)/overrides/"; \
	else rm -rf $(OUT); fi
	rm -rf bench/_data bench/_out .pytest_cache

# ---------------------------------------------------------------------------------------------------
# Ground-truth datasets: one export per shipped recipe (pipelines/*.yaml) in $(OUT)/<recipe>/.
#
#   make datasets REFLACX_ROOT=/data/reflacx EGD_ROOT=/data/egd-cxr MIMIC_ROOT=/data/mimic-cxr-jpg
#
# Each export's manifest.json is the make target. It is rebuilt when its recipe file is newer, when
# the release it reads changed (REFLACX_ROOT or EGD_ROOT, plus MIMIC_ROOT's tables for EGD-CXR), when
# the rules/ files it uses or the package sources (pyproject.toml, gazeprep/**/*.py outside train/,
# evaluate/, synth/) changed, or (reflacx-anatomy) when the anatomy masks changed. A rebuild resumes:
# gazeprep recomputes only the cases whose inputs, recipe or masks changed. Rules and package sources
# are not part of gazeprep's per-case input hash, so after such a change the rebuild passes --force
# (every case recomputed); $(OUT)/.make/<recipe>.salt remembers what the export was built with.
#
# Release inputs are watched through stamp files (tools/stamp.py, run on every invocation), rewritten
# only when their digest changes: a listing (path, size, mtime of every file) of REFLACX_ROOT and
# EGD_ROOT, and of MIMIC_ROOT's top level only (its metadata/split/label tables): listing all 377k
# images costs about 13 s per run on the 2-core project machine, 0.3 s for the top level. Set
# MIMIC_STAMP_DEPTH= (empty) to list the whole tree. rules/ and the sources are stamped by content, so
# a touch or a checkout of the same revision rebuilds nothing.
#
# make -j is safe: one rule writes each output folder (and gazeprep locks --out). Give each build
# fewer workers then, e.g. make -j4 datasets WORKERS=2.
REFLACX_ROOT  ?= sample_data/reflacx
EGD_ROOT      ?= sample_data/egd-cxr
MIMIC_ROOT    ?= sample_data/mimic-cxr
GAZEPREP      := $(BIN)/gazeprep
PY            := $(BIN)/python
WORKERS       ?= 0
DEVICE        ?= auto
ANATOMY_DIR   ?= $(OUT)/anatomy
# the default model: tiny SAMed trained on the bundled EGD-CXR sample (a smoke test of the chain,
# not real masks); for real data train one with `gazeprep anatomy train` and pass ANATOMY_MODEL=DIR.
# 60 epochs of batch 2 (about 180 steps): held-out Dice 0.73 on the sample, and reflacx-anatomy maps
# for all 11 live sample cases; 2 to 10 epochs gave empty masks and 0 maps (the build then fails).
TINY_MODEL    := $(OUT)/anatomy-model-tiny
TINY_TRAIN_FLAGS ?= --epochs 60 --batch-size 2 --seed 0
ANATOMY_MODEL ?= $(TINY_MODEL)
MIMIC_STAMP_DEPTH ?= 1
EGD_FLAGS     ?= --images $(MIMIC_ROOT)
STAMPS        := $(OUT)/.make
BUILT_LOG     := $(STAMPS)/built.log
STAMP         := $(PY) tools/stamp.py

# every recipe file for a dataset with a root variable (not the templates for declared datasets)
recipe_dataset = $(shell sed -n 's/^dataset:[[:space:]]*\([^[:space:]]*\).*/\1/p' pipelines/$(1).yaml)
ALL_RECIPES := $(sort $(basename $(notdir $(wildcard pipelines/*.yaml))))
$(foreach r,$(ALL_RECIPES),$(eval DS_$(r) := $(call recipe_dataset,$(r))))
RECIPES := $(foreach r,$(ALL_RECIPES),$(if $(filter reflacx egd-cxr,$(DS_$(r))),$(r)))
OTHER_RECIPES := $(filter-out $(RECIPES),$(ALL_RECIPES))
MANIFESTS := $(foreach r,$(RECIPES),$(OUT)/$(r)/manifest.json)
recipe_keywords = $(shell sed -n 's/^[[:space:]]*keywords:[[:space:]]*\([^[:space:]]*\).*/\1/p' pipelines/$(1).yaml)
recipe_samed = $(shell grep -q '^anatomy:' pipelines/$(1).yaml && ! grep -q '^[[:space:]]*masks:[[:space:]]*egd_masks' pipelines/$(1).yaml && echo yes)
KEYWORD_SETS :=

ifeq ($(BIN),$(VENV)/bin)
NEEDS_CORE := $(VENV)/.core-installed
NEEDS_ML   := $(VENV)/.ml-installed
endif

ROOT_reflacx := $(REFLACX_ROOT)
ROOT_egd-cxr := $(EGD_ROOT)
RELEASE_reflacx := $(STAMPS)/release-reflacx.stamp
RELEASE_egd-cxr := $(STAMPS)/release-egd-cxr.stamp $(STAMPS)/release-mimic.stamp
FLAGS_egd-cxr := $(EGD_FLAGS)

# per recipe: prerequisites and target-specific variables of $(OUT)/<recipe>/manifest.json
define recipe_rules
KEYWORD_SETS += $(3)
$(OUT)/$(1)/manifest.json: DATASET := $(2)
$(OUT)/$(1)/manifest.json: ROOT := $(ROOT_$(2))
$(OUT)/$(1)/manifest.json: SALT := $(STAMPS)/code.stamp $(STAMPS)/rules-labeler.stamp $(if $(3),$(STAMPS)/rules-kw-$(3).stamp)
$(OUT)/$(1)/manifest.json: BUILD_FLAGS := $(FLAGS_$(2)) $(if $(4),--anatomy-dir $(ANATOMY_DIR))
$(OUT)/$(1)/manifest.json: $(STAMPS)/code.stamp $(STAMPS)/rules-labeler.stamp $(if $(3),$(STAMPS)/rules-kw-$(3).stamp) $(RELEASE_$(2))
$(OUT)/$(1)/manifest.json: $(if $(4),$(ANATOMY_DIR)/.make-predicted $(STAMPS)/anatomy-overrides.stamp)
$(OUT)/$(1)/manifest.json: $(if $(wildcard $(STAMPS)/$(1).failed),FORCE) | $(if $(4),$(NEEDS_ML),$(NEEDS_CORE))
endef
$(foreach r,$(RECIPES),$(eval $(call recipe_rules,$(r),$(DS_$(r)),$(call recipe_keywords,$(r)),$(call recipe_samed,$(r)))))

.PRECIOUS: $(OUT)/%/manifest.json $(STAMPS)/%.stamp $(ANATOMY_DIR)/.make-predicted $(TINY_MODEL)/samed.pt
.PHONY: $(RECIPES)

datasets: $(MANIFESTS)  ## Build every recipe's export into OUT/<recipe>/ (only what changed; listed below)
	@n=$$(cat $(BUILT_LOG) 2>/dev/null | wc -l | tr -d ' '); \
	if [ "$$n" = 0 ]; then echo "datasets: all $(words $(RECIPES)) exports up to date in $(OUT)/"; \
	else echo "datasets: rebuilt $$n of $(words $(RECIPES)) exports in $(OUT)/: $$(echo $$(cat $(BUILT_LOG)))"; fi

$(RECIPES): %: $(OUT)/%/manifest.json
	@grep -qx '$@' $(BUILT_LOG) 2>/dev/null || echo "$@: up to date in $(OUT)/$@/"

# One export, built with this checkout's rules/ (GAZEPREP_RULES_DIR) and recipe file. The salt is
# what the export was built with: the code and rules stamps, the recipe file's checksum and the
# GAZEPREP command (another installation may be another version). A fresh
# folder records its salt first, so an interrupted first build resumes; an existing folder whose
# salt differs is rebuilt with --force (rules or sources changed: parts would be reused wrongly; the
# recipe was edited: gazeprep refuses to replace an export of other settings without it; or the
# folder was built outside make), and keeps getting --force until one build succeeds. A recipe only
# touched keeps its salt: gazeprep's resume then reuses every case. A failed build (an I/O fault, or more rejected cases
# than --max-reject-fraction allows, which still writes the export) leaves <recipe>.failed; while it
# exists the export depends on FORCE, so the next run tries again instead of calling the export up to
# date (not by comparing mtimes: a build that fails fast can give the export and the marker the same
# timestamp at the file system's clock granularity).
$(OUT)/%/manifest.json: pipelines/%.yaml
	@salt="$$(cat $(SALT) | tr -d '\n') $$(cksum < $<) $(GAZEPREP)"; saltf=$(STAMPS)/$*.salt; force=; \
	if [ ! -e $(OUT)/$* ]; then printf '%s\n' "$$salt" > $$saltf; \
	elif [ "$$(cat $$saltf 2>/dev/null)" != "$$salt" ]; then force=--force; \
	  echo "$*: rules/ or gazeprep sources differ from the last build of $(OUT)/$*: every case is recomputed (--force)"; fi; \
	echo "$*: building $(OUT)/$*/ from $(ROOT)"; \
	GAZEPREP_RULES_DIR=$(CURDIR)/rules $(GAZEPREP) build-heatmaps --dataset $(DATASET) --recipe $< --root $(ROOT) \
	  --out $(OUT)/$* --workers $(WORKERS) $(BUILD_FLAGS) $$force; \
	rc=$$?; if [ $$rc -ne 0 ]; then touch $(STAMPS)/$*.failed; echo "$*: build failed (exit $$rc); the next run tries again" >&2; exit $$rc; fi; \
	rm -f $(STAMPS)/$*.failed; printf '%s\n' "$$salt" > $$saltf; echo '$*' >> $(BUILT_LOG)

# ---- stamps (FORCE: recomputed on every run, rewritten only when their digest changes) -------------
# code.stamp is a prerequisite of every export, so it also starts this run's list of rebuilt exports.
$(STAMPS)/code.stamp: FORCE | $(NEEDS_CORE)
	@mkdir -p $(STAMPS) && : > $(BUILT_LOG)
	@$(STAMP) $@ pyproject.toml gazeprep --content --suffix .py --exclude __pycache__ \
	  --exclude train --exclude evaluate --exclude synth --what "gazeprep sources"
# the labeler's rules (every export has a mentions table): all of rules/, profiles included, except
# the READMEs and the keyword sets, which only the recipes naming them depend on
$(STAMPS)/rules-labeler.stamp: FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ rules --content --exclude README.md $(foreach k,$(sort $(KEYWORD_SETS)),--exclude $(k).yaml) --what "labeler rules"
$(STAMPS)/rules-kw-%.stamp: FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ rules/$*.yaml --content --what "keyword rules"
$(STAMPS)/release-reflacx.stamp: FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ $(REFLACX_ROOT) --what REFLACX_ROOT
$(STAMPS)/release-egd-cxr.stamp: FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ $(EGD_ROOT) --what EGD_ROOT
$(STAMPS)/release-mimic.stamp: FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ $(MIMIC_ROOT) $(if $(MIMIC_STAMP_DEPTH),--max-depth $(MIMIC_STAMP_DEPTH)) --what MIMIC_ROOT
$(STAMPS)/anatomy-model.stamp: $(ANATOMY_MODEL)/samed.pt FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ $(ANATOMY_MODEL)/samed.pt $(ANATOMY_MODEL)/config.json --what ANATOMY_MODEL
$(STAMPS)/anatomy-overrides.stamp: FORCE | $(NEEDS_CORE)
	@$(STAMP) $@ $(ANATOMY_DIR)/overrides --missing-ok --what "anatomy overrides"
FORCE:

# ---- anatomy masks for reflacx-anatomy (paper 000) -------------------------------------------------
anatomy: $(ANATOMY_DIR)/.make-predicted  ## SAMed masks for reflacx-anatomy into OUT/anatomy (ANATOMY_MODEL=DIR, default: tiny sample model)
	@echo "anatomy: masks in $(ANATOMY_DIR)/ from $(ANATOMY_MODEL)"

$(TINY_MODEL)/samed.pt: $(STAMPS)/code.stamp | $(NEEDS_ML)
	@echo "anatomy: training the tiny smoke-test SAMed model on the bundled EGD-CXR sample into $(TINY_MODEL)/"
	$(GAZEPREP) anatomy train --dataset egd-cxr --root sample_data/egd-cxr --images sample_data/mimic-cxr \
	  --preset tiny $(TINY_TRAIN_FLAGS) --device cpu --out $(TINY_MODEL)

ifneq ($(ANATOMY_MODEL),$(TINY_MODEL))
$(ANATOMY_MODEL)/samed.pt:
	@echo "error: ANATOMY_MODEL=$(ANATOMY_MODEL) holds no samed.pt; write one with gazeprep anatomy train --out $(ANATOMY_MODEL)" >&2; exit 1
endif

# Masks of another model cannot be resumed into (anatomy.json records the model's sha256): they are
# removed first; hand-corrected masks in $(ANATOMY_DIR)/overrides/ are kept.
$(ANATOMY_DIR)/.make-predicted: $(STAMPS)/anatomy-model.stamp $(STAMPS)/release-reflacx.stamp $(STAMPS)/release-mimic.stamp | $(NEEDS_ML)
	@if [ "$(ANATOMY_MODEL)" = "$(TINY_MODEL)" ] && [ "$(REFLACX_ROOT)" != sample_data/reflacx ]; then \
	  echo "anatomy: warning: ANATOMY_MODEL is the tiny model trained on sample data; its masks are not usable ground truth (pass ANATOMY_MODEL=DIR)" >&2; fi
	@if [ -f $(ANATOMY_DIR)/anatomy.json ] && ! $(PY) -c 'import hashlib,json,sys; m=json.load(open(sys.argv[1])).get("model_sha256"); f=open(sys.argv[2],"rb"); sys.exit(m != hashlib.file_digest(f,"sha256").hexdigest())' $(ANATOMY_DIR)/anatomy.json $(ANATOMY_MODEL)/samed.pt; then \
	  echo "anatomy: $(ANATOMY_DIR)/ holds masks of another model: predicting again (overrides/ kept)"; \
	  rm -rf $(ANATOMY_DIR)/masks.zarr $(ANATOMY_DIR)/masks.parquet $(ANATOMY_DIR)/anatomy.json $(ANATOMY_DIR)/rejects.parquet; fi
	$(GAZEPREP) anatomy predict --model $(ANATOMY_MODEL) --dataset reflacx --root $(REFLACX_ROOT) \
	  --images $(MIMIC_ROOT) --out $(ANATOMY_DIR) --device $(DEVICE)
	@touch $@
