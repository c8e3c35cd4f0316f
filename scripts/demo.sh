#!/usr/bin/env bash
# Set up (core dependencies only: no torch) and run the main job on the bundled example:
# list a PyTorch checkpoint, show its scope tree, extract its encoder LSTM to safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cs=.venv/bin/ckptsurgeon
mkdir -p demo-out
set -x
$cs ls fixtures/torch/model.pt
$cs tree fixtures/torch/lightning.ckpt --depth 2
$cs extract fixtures/torch/model.pt --scope 'encoder/*' -o demo-out/encoder.safetensors --force
$cs ls demo-out/encoder.safetensors
