#!/usr/bin/env bash
# Issue 5's figures: DACT over tau, into the exit family's results folder (one plot with PABEE, DeeBERT,
# FastBERT). Usage: benchmarks/dact.sh [results_dir] [tasks...]
METHODS=dact exec "$(dirname "$0")/exits.sh" "$@"
