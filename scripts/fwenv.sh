#!/usr/bin/env bash
# A test-only environment with JAX/Flax and PaddlePaddle (.fwvenv): the tests have those frameworks load the
# files ckptsurgeon writes for them (--to flax, --to paddle) and run their own forward passes. Separate from
# .venv (ckptsurgeon never imports them) and from .tfvenv (TensorFlow pins its own numpy and protobuf).
# About 1.5 GB, 30 s from a warm pip cache; built once, then reused.
set -euo pipefail
exec bash "$(dirname "$0")/testenv.sh" .fwvenv "flax jax paddle" "jax==0.10.2" "flax==0.12.8" "paddlepaddle==3.3.1"
