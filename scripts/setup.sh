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
# An editable install as a plain path entry (compat): setuptools' default installs an import hook that every
# Python start in .venv runs, 12 ms of each CLI call (a wheel, as users install, has none).
editable=(--config-settings editable_mode=compat -e)
if [ "${1:-}" = "test" ]; then
  # Exact pin: a looser torch requirement pulls a multi-GB CUDA build.
  "${pip[@]}" "torch==2.13.0"
  "${pip[@]}" "${editable[@]}" '.[test]'
else
  "${pip[@]}" "${editable[@]}" .
fi
# Compile the package's bytecode, as `pip install` of a wheel does and an editable install does not:
# where PYTHONDONTWRITEBYTECODE is set (this machine sets it), every run would otherwise compile about
# 40 modules from source, 40 ms of start-up. A stale .pyc is never used (Python checks the source's mtime).
.venv/bin/python -m compileall -q ckptsurgeon >/dev/null
