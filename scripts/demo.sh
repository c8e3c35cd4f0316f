#!/usr/bin/env bash
# Set up (core dependencies only: no torch) and run the main job on the bundled example:
# check what its pickle would run, list a PyTorch checkpoint, show its scope tree, extract its encoder LSTM
# to safetensors, show its recurrent layers with where each fact comes from, and convert the LSTM to Keras's
# layout (verified against the source's own computation).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cs=.venv/bin/ckptsurgeon
mkdir -p demo-out
set -x
$cs scan fixtures/torch/model.pt
$cs ls fixtures/torch/model.pt
$cs tree fixtures/torch/lightning.ckpt --depth 2
$cs extract fixtures/torch/model.pt --scope 'encoder/*' -o demo-out/encoder.safetensors --force
$cs ls demo-out/encoder.safetensors
$cs rnn fixtures/torch/model.pt
$cs extract fixtures/torch/model.pt --scope 'encoder/*' --to keras -o demo-out/encoder_keras.safetensors --force
# the question this tool exists for: a TF1 user's hand-built LSTM cell, ready for tf.compat.v1 LSTMCell graphs
mkdir -p demo-out/tf1
$cs extract fixtures/tensorflow/tf1_lstmcell -s 'LSTMcell/*' --to tf1 --rename LSTMcell/= -o demo-out/tf1/model.ckpt --force
$cs ls demo-out/tf1/model.ckpt
