#!/usr/bin/env bash
# Issue 3's figures: `full` and `truncate` k=1..6 on real MRPC with the embedded MiniLM (3 epochs each).
# Resumable: finished stages come from the cache, finished knob values from the records.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export GLUE_DIR=${GLUE_DIR:-../shared/glue}
out=${1:-results/core_mrpc}
"${PY:-python}" -m dynbench method=full task=mrpc model=minilm seed=1 results_dir="$out" progress=false
"${PY:-python}" -m dynbench method=truncate task=mrpc model=minilm seed=1 results_dir="$out" progress=false
