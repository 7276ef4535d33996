#!/usr/bin/env bash
# Issue 4's figures: full, PABEE, DeeBERT and FastBERT on real tasks with the embedded MiniLM, same budget.
# Usage: benchmarks/exits.sh [results_dir] [tasks...]   (default: results/exits mrpc rte)
# Resumable: finished stages come from the cache (DeeBERT's stage 1 is full's), finished knobs from records.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export GLUE_DIR=${GLUE_DIR:-../shared/glue}
out=${1:-results/exits}; shift || true
tasks=${*:-mrpc rte}
for task in $tasks; do
  for method in full deebert pabee fastbert; do  # deebert right after full: it reuses full as stage 1
    "${PY:-python}" -m dynbench method=$method task=$task model=minilm seed=1 results_dir="$out" progress=false \
      eval.throughput_examples=128
  done
done
