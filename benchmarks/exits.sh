#!/usr/bin/env bash
# Issue 4's and 5's figures: the exit family and DACT beside full, on real tasks with the embedded MiniLM,
# same budget. Usage: [METHODS="full deebert ..."] benchmarks/exits.sh [results_dir] [tasks...]
# (default: results/exits mrpc rte, methods full deebert pabee fastbert). Resumable: finished stages come
# from the cache (DeeBERT's and DACT's stage 1 is full's), finished knob points from the records.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export GLUE_DIR=${GLUE_DIR:-../shared/glue}
out=${1:-results/exits}; shift || true
tasks=${*:-mrpc rte}
for task in $tasks; do
  for method in ${METHODS:-full deebert pabee fastbert}; do  # deebert right after full: it reuses full as stage 1
    extra=()
    # DACT's tau trains one model per value (about 13 min each on MRPC): the default grid, spread-first, so
    # that an interrupted run has already covered the range
    [[ $method == dact ]] && extra=('method.knobs=[0.05,0.5,0.005,0.1,0.01,0.001,0.0]')
    "${PY:-python}" -m dynbench method=$method task=$task model=minilm seed=1 results_dir="$out" progress=false \
      eval.throughput_examples=128 "${extra[@]}"
  done
done
