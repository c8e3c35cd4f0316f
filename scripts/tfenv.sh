#!/usr/bin/env bash
# A test-only environment with TensorFlow (.tfvenv): the tests have TensorFlow itself restore the
# checkpoints ckptsurgeon writes and grafts. Separate from .venv: TensorFlow pins its own numpy,
# protobuf and keras, and ckptsurgeon never imports it. About 2 GB; built once, then reused.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3.11 python3 python; do command -v "$c" >/dev/null 2>&1 && py=$c && break; done
fi
[ -L .tfvenv ] && [ ! -e .tfvenv ] && rm .tfvenv   # a link to a venv that is gone
if ! .tfvenv/bin/python -c "import tensorflow, tf_keras" >/dev/null 2>&1; then
  [ -x .tfvenv/bin/python ] || "$py" -m venv .tfvenv
  .tfvenv/bin/python -m pip install --quiet --disable-pip-version-check "tensorflow-cpu==2.21.0" "tf-keras==2.21.0"
fi
