#!/usr/bin/env bash
# One command: set up (with torch, to write the real checkpoints) and run the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python bench/run.py
