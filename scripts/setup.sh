#!/usr/bin/env bash
# Create .venv and install ckptsurgeon into it. `setup.sh` = core only; `setup.sh test` = with the
# test dependencies (torch pinned to the CPU build this machine ships, keras, onnx, pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3.11 python3 python; do command -v "$c" >/dev/null 2>&1 && py=$c && break; done
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ "${1:-}" = "test" ]; then
  # Exact pin: a looser torch requirement pulls a multi-GB CUDA build.
  "${pip[@]}" "torch==2.13.0"
  "${pip[@]}" -e '.[test]'
else
  "${pip[@]}" -e .
fi
