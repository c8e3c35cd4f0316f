"""P6 anchor: the script a user writes by hand to turn an nn.LSTM's weights into Keras's (no verification).

    python lstm_to_keras.py SRC.pt OUT.safetensors PREFIX

torch.load (mmap, weights_only), then for each layer and direction: kernel = weight_ih.T, recurrent_kernel =
weight_hh.T, bias = bias_ih + bias_hh (PyTorch's gate order i, f, g, o is Keras's i, f, c, o), named as
ckptsurgeon names a stacked Keras Bidirectional; save_file.
"""
import re
import sys

import torch
from safetensors.torch import save_file

src, out_path, prefix = sys.argv[1:4]
state = torch.load(src, mmap=True, weights_only=True)
layers = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(re.escape(prefix) + r"weight_ih_l(\d+)", k))})
scope = prefix.rstrip(".").replace(".", "/")
out = {}
for k in layers:
    for suffix, half in (("", "forward_layer"), ("_reverse", "backward_layer")):
        name = f"{prefix}weight_ih_l{k}{suffix}"
        if name not in state:
            continue
        base = f"{scope}/layer_{k}/{half}/cell/" if len(layers) > 1 else f"{scope}/{half}/cell/"
        out[base + "kernel"] = state[name].T.contiguous()
        out[base + "recurrent_kernel"] = state[f"{prefix}weight_hh_l{k}{suffix}"].T.contiguous()
        out[base + "bias"] = state[f"{prefix}bias_ih_l{k}{suffix}"] + state[f"{prefix}bias_hh_l{k}{suffix}"]
save_file(out, out_path)
