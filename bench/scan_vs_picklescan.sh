#!/usr/bin/env bash
# `ckptsurgeon scan` against picklescan on the same folder trees (issue 21, item 5):
#   bash bench/scan_vs_picklescan.sh [--runs 5]
# picklescan (with numpy and py7zr, which it needs for .npy/.npz and .7z) is installed into its own venv
# (PICKLESCAN_VENV, default /tmp/picklescan-venv), never into .venv. Two trees under SCAN_TREES (default
# /tmp/ckptsurgeon-scan-trees), built once:
#   all-formats: fixtures/ (every format: HDF5/Keras, TensorFlow, DCP, ONNX, PyTorch ...), the picklescan corpus
#                twice and 20 copies of a PyTorch checkpoint (849 files);
#   pickles:     only what picklescan reads: the corpus four times, the PyTorch fixtures and the 20 copies;
#   models:      what a model download folder holds (598 MiB, 12 files): three models of torch.save'd
#                pytorch_model.bin + model.safetensors + config.json, a Lightning checkpoint, an .npz and a
#                tf.keras .h5 (written by bench/make_models_tree.py with the real torch).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PICKLESCAN_VENV:-/tmp/picklescan-venv}
TREES=${SCAN_TREES:-/tmp/ckptsurgeon-scan-trees}
CORPUS=${CORPUS:-../shared/corpus/picklescan}
[ -d "$CORPUS" ] || { echo "error: $CORPUS: the picklescan corpus is missing; set CORPUS=" >&2; exit 1; }
if [ ! -x "$VENV/bin/picklescan" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "picklescan[7z]" numpy
fi
if [ ! -d "$TREES" ]; then
    mkdir -p "$TREES/all-formats/torch-copies" "$TREES/pickles/torch-copies"
    cp -r fixtures "$TREES/all-formats/fixtures"
    cp -r fixtures/torch "$TREES/pickles/torch"
    for i in 1 2; do cp -r "$CORPUS" "$TREES/all-formats/corpus-$i"; done
    for i in 1 2 3 4; do cp -r "$CORPUS" "$TREES/pickles/corpus-$i"; done
    for i in $(seq 1 20); do
        cp fixtures/torch/model.pt "$TREES/all-formats/torch-copies/model_$i.pt"
        cp fixtures/torch/model.pt "$TREES/pickles/torch-copies/model_$i.pt"
    done
fi
[ -d "$TREES/models" ] || .venv/bin/python bench/make_models_tree.py "$TREES/models"
# byte-compiled now: with PYTHONDONTWRITEBYTECODE set, a module edited since its .pyc was written is compiled again
# by every run (tens of ms of a 0.3 s scan); picklescan's venv was compiled when it was installed
.venv/bin/python -m compileall -q ckptsurgeon >/dev/null
echo "picklescan $("$VENV/bin/pip" show picklescan 2>/dev/null | sed -n 's/^Version: //p'); ckptsurgeon $(.venv/bin/ckptsurgeon --version)"
exec .venv/bin/python bench/scan_vs_picklescan.py "$VENV/bin/picklescan" "$TREES/all-formats" "$TREES/pickles" "$TREES/models" "$@"
