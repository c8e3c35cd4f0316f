#!/usr/bin/env bash
# A test-only environment with TensorFlow (.tfvenv): the tests have TensorFlow itself restore the
# checkpoints ckptsurgeon writes and grafts. Separate from .venv: TensorFlow pins its own numpy,
# protobuf and keras, and ckptsurgeon never imports it. About 2 GB; built once, then reused.
set -euo pipefail
exec bash "$(dirname "$0")/testenv.sh" .tfvenv "tensorflow tf_keras" "tensorflow-cpu==2.21.0" "tf-keras==2.21.0"
