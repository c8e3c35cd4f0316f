#!/usr/bin/env bash
# One command: set up .venv (with torch, to write the real checkpoints and run the anchors), build the
# benchmark files outside the repository, run P1-P5 and the growth curves, write bench/RESULTS.md.
#   bash bench/run.sh [--gb 4.3] [--data DIR] [--runs 5] [--only P6|P7|P8|P10]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python bench/run.py "$@"
