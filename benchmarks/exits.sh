#!/usr/bin/env bash
# The real-data benchmark runner behind issues 4-6: each method beside full, on real tasks with the embedded
# MiniLM, same budget. Usage: [METHODS="full deebert ..."] benchmarks/exits.sh [results_dir] [tasks...]
# (default: results/exits mrpc rte, methods full deebert pabee fastbert; dact.sh and tokens.sh set METHODS).
# Resumable: finished stages come from the cache (stage 1 of DeeBERT, DACT, TR-BERT and the token gates is
# full's plain fine-tune), finished knob points from the records (knob grids are not part of a run's identity).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export GLUE_DIR=${GLUE_DIR:-../shared/glue}
out=${1:-results/exits}; shift || true
tasks=${*:-mrpc rte}
for task in $tasks; do
  for method in ${METHODS:-full deebert pabee fastbert}; do  # deebert right after full: it reuses full as stage 1
    extra=()
    # training knobs train one model per value (DACT: 10-13 min each on MRPC): the default grid spread-first,
    # so that an interrupted run has already covered the range
    [[ $method == dact ]] && extra+=('method.knobs=[0.05,0.5,0.005,0.1,0.01,0.001,0.0]')
    [[ $method == token_gates ]] && extra+=('method.knobs=[0.03,0.0075,0.01,0.005,0.015,0.0]')
    [[ $method == trbert ]] && extra+=('method.knobs=[0.1,1.0,0.5,0.2,0.3,0.15]')
    # SST-2's 67k training examples take about an hour per epoch on 2 CPU cores: a seeded subset (README)
    [[ $task == sst2 ]] && extra+=("train.train_subset=${SST2_SUBSET:-8000}")
    "${PY:-python}" -m dynbench method=$method task=$task model=minilm seed=1 results_dir="$out" progress=false \
      eval.throughput_examples=128 "${extra[@]}"
  done
done
