"""TFLite ``UNIDIRECTIONAL_SEQUENCE_LSTM`` ops as recurrent groups, recognized from the graph (an ``rnn`` adapter).

The reader hands each recurrent op over in the index's metadata (``recurrent_ops``: the op's inputs by position,
its options), so nothing is parsed twice. The op states its computation: per-gate weights ``(H, in)`` and
``(H, H)`` (``W @ x``, gates i f c o: PyTorch's order), four gate biases, the cell activation
(``fused_activation_function``) and ``cell_clip``; the gates are sigmoid (TFLite's LSTM kernels). Proven against
the TFLite interpreter's forward pass (tests/test_tflite.py, fixtures/tflite/lstm*.forward.npz).

Not read as groups (their facts are listed, every conversion refused, naming why): peepholes, projection, layer
norm and CIFG (no input gate) variants, which no recorded fixture proves yet; int8 weights convert only with
``--allow-approx`` (dequantized: scale * (q - zero_point), not the stored values).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...index import CheckpointIndex
from ...rnn.cell import Cell
from ...rnn.group import RecognizeOptions, RecurrentGroup
from .schema import LSTM_INPUTS

__all__ = ["recognize"]

_GATES = ("input", "forget", "cell", "output")  # TFLite's names of PyTorch's i f g o
_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "none": "linear"}  # fused_activation_function -> activations name
_UNPROVEN = {  # optional inputs -> the variant they make
    ("cell_to_input_weights", "cell_to_forget_weights", "cell_to_output_weights"): "peepholes",
    ("projection_weights", "projection_bias"): "a projection",
    tuple(f"{g}_layer_norm_coefficients" for g in _GATES): "layer normalization",
}


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    if index.format != "tflite":
        return []
    groups = []
    for op in index.metadata.get("recurrent_ops") or ():
        if isinstance(op, dict) and op.get("op") == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            group = _group(index, op, options)
            if group is not None:
                groups.append(group)
    return groups


def _group(index: CheckpointIndex, op: dict[str, Any], options: RecognizeOptions) -> RecurrentGroup | None:
    inputs = dict(zip(LSTM_INPUTS, op.get("inputs") or ()))
    needed = [f"input_to_{g}_weights" for g in _GATES[1:]] + [f"recurrent_to_{g}_weights" for g in _GATES[1:]]
    stated = [p for r in LSTM_INPUTS[1:18] + LSTM_INPUTS[20:] if (p := inputs.get(r)) is not None]
    if any(inputs.get(r) is None for r in needed) or any(p not in index for p in stated):
        return None  # not all selected, or weights fed at run time: no group of stored tensors
    opts = op.get("options") or {}
    where = f"op {op.get('index')} of subgraph {op.get('subgraph')}"
    prov: dict[str, str] = {"recurrent_activation": "file: layout (TFLite LSTM kernels compute sigmoid gates)",
                            "go_backwards": "file: layout (UNIDIRECTIONAL_SEQUENCE_LSTM runs forward)"}
    act = _ACTIVATIONS.get(str(opts.get("fused_activation_function")))
    prov["activation"] = (f"file: op options (fused_activation_function {opts.get('fused_activation_function')})"
                          if act else f"missing: fused_activation_function {opts.get('fused_activation_function')} has "
                          "no formula here; pass --activation")
    cifg = inputs.get("input_to_input_weights") is None
    if cifg:
        prov["variant"] = ("missing: a CIFG LSTM (no input gate: i = 1 - f), which no target holds and no recorded "
                           "fixture proves")
    for roles, what in _UNPROVEN.items():
        if any(inputs.get(r) is not None for r in roles):
            prov["variant"] = f"missing: a TFLite LSTM with {what}, not yet read (no recorded fixture proves its layout)"
    members = stated
    quant = index.metadata.get("quantization") or {}
    quantized = [m for m in members if m in quant]
    if quantized:
        prov["weights"] = ("flag: --allow-approx (int8 weights dequantized, scale * (q - zero_point))"
                           if getattr(options, "allow_approx", False) else
                           f"missing: {len(quantized)} quantized tensor(s) ({', '.join(quantized[:3])}): a conversion "
                           "would dequantize them (scale * (q - zero_point)), not copy them; pass --allow-approx")
    w_f, u_f = index[inputs["input_to_forget_weights"]], index[inputs["recurrent_to_forget_weights"]]
    if len(w_f.shape) != 2 or len(u_f.shape) != 2:
        return None
    hidden, n_in = w_f.shape
    clip = float(opts.get("cell_clip") or 0.0)
    if clip:
        prov["cell_clip"] = f"file: op options (cell_clip {clip:g})"
    group = RecurrentGroup(
        scope=(op.get("outputs") or [f"lstm_op_{op.get('index')}"])[0], kind="lstm", layout="tflite",
        variant="TFLite UNIDIRECTIONAL_SEQUENCE_LSTM" + (" (int8 weights)" if quantized else ""),
        input_size=n_in, hidden_size=hidden, bias="two", activation=act, cell_clip=clip or None,
        provenance=prov, members=members, notes=[f"{where} of the model graph"])
    if not cifg:
        group.load = lambda: [[_cell(index, inputs, hidden)]]
    return group


def _value(index: CheckpointIndex, path: str) -> np.ndarray:
    """The tensor as float32, dequantized when the file gives it scales (real = scale * (q - zero_point))."""
    arr = index[path].numpy()
    q = (index.metadata.get("quantization") or {}).get(path)
    if q is None:
        return arr.astype(np.float32)
    scale, zero = np.asarray(q["scale"], np.float64), np.asarray(q["zero_point"], np.float64)
    if len(scale) > 1:
        shape = [-1 if d == q["quantized_dimension"] else 1 for d in range(arr.ndim)]
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((arr.astype(np.float64) - zero) * scale).astype(np.float32)


def _cell(index: CheckpointIndex, inputs: dict[str, str | None], hidden: int) -> Cell:
    def gates(fmt: str) -> np.ndarray:
        return np.concatenate([_value(index, str(inputs[fmt.format(g)])) for g in _GATES])

    w_ih, w_hh = gates("input_to_{}_weights"), gates("recurrent_to_{}_weights")
    b = gates("{}_gate_bias") if all(inputs.get(f"{g}_gate_bias") for g in _GATES) else np.zeros(4 * hidden, np.float32)
    return Cell("lstm", w_ih, w_hh, b, np.zeros_like(b))
