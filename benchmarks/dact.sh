#!/usr/bin/env bash
# Issue 5's figures: DACT over its ponder weight tau on real tasks with the embedded MiniLM, beside the exit
# family (same results folder as benchmarks/exits.sh, so the report draws them on one plot).
# Usage: benchmarks/dact.sh [results_dir] [tasks...]   (default: results/exits mrpc rte)
# tau is a training knob (one model per value, about 13 minutes each on MRPC with 2 cores). The grid is the
# default one, spread-first, so that an interrupted run has already covered the range; re-running resumes
# (finished models come from the stage cache, finished (tau, slack) points from the records).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export GLUE_DIR=${GLUE_DIR:-../shared/glue}
out=${1:-results/exits}; shift || true
tasks=${*:-mrpc rte}
for task in $tasks; do
  "${PY:-python}" -m dynbench method=dact task=$task model=minilm seed=1 results_dir="$out" progress=false \
    eval.throughput_examples=128 'method.knobs=[0.05,0.5,0.005,0.1,0.01,0.001,0.0]'
done
