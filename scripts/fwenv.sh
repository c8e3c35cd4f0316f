#!/usr/bin/env bash
# A test-only environment with JAX/Flax and PaddlePaddle (.fwvenv): the tests have those frameworks load the
# files ckptsurgeon writes for them (--to flax, --to paddle) and run their own forward passes. Separate from
# .venv (ckptsurgeon never imports them) and from .tfvenv (TensorFlow pins its own numpy and protobuf).
# About 1.5 GB, 30 s from a warm pip cache; built once, then reused.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3.11 python3 python; do command -v "$c" >/dev/null 2>&1 && py=$c && break; done
fi
[ -L .fwvenv ] && [ ! -e .fwvenv ] && rm .fwvenv   # a link to a venv that is gone
if ! .fwvenv/bin/python -c "import flax, jax, paddle" >/dev/null 2>&1; then
  [ -x .fwvenv/bin/python ] || "$py" -m venv .fwvenv
  .fwvenv/bin/python -m pip install --quiet --disable-pip-version-check \
    "jax==0.10.2" "flax==0.12.8" "paddlepaddle==3.3.1"
fi
