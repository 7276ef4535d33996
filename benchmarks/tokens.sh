#!/usr/bin/env bash
# Issue 6's figures: token gates and TR-BERT beside full on MRPC, RTE and SST-2 (a seeded 8,000-example
# training subset; SST2_SUBSET changes it). Usage: benchmarks/tokens.sh [results_dir] [tasks...]
out=${1:-results/tokens}; shift || true
METHODS=${METHODS:-full token_gates trbert} exec "$(dirname "$0")/exits.sh" "$out" "${@:-mrpc rte sst2}"
