"""Gate orders and gate/variable names as data, and the pure block operations on stacked gates.

Canonical order (PyTorch's): LSTM ``i f g o`` (g = cell candidate), GRU ``r z n``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CANONICAL", "ORDERS", "GATE_WORDS", "VAR_WORDS", "GATE_LABELS", "reorder", "split_gates", "join_gates"]

CANONICAL = {"lstm": "ifgo", "gru": "rzn"}

# How each layout stacks its gates, in canonical letters.
ORDERS: dict[tuple[str, str], str] = {
    ("torch", "lstm"): "ifgo",  # PyTorch i, f, g, o
    ("torch", "gru"): "rzn",  # PyTorch r, z, n
    ("keras", "lstm"): "ifgo",  # Keras i, f, c, o
    ("keras", "gru"): "zrn",  # Keras z, r, h
    ("tf1", "lstm"): "igfo",  # TF1 rnn_cell i, j, f, o
    ("tf1", "gru"): "rz",  # TF1 GRUCell gates = [r, u]; the candidate is a separate kernel
    ("onnx", "lstm"): "iofg",  # ONNX i, o, f, c
    ("onnx", "gru"): "zrn",  # ONNX z, r, h
}

# Hand-built per-gate cells: scope names of each gate (first match wins; extend with --gate-names).
GATE_WORDS: dict[str, tuple[str, ...]] = {
    "i": ("input_gate", "input", "in_gate", "i", "ig", "i_gate", "gate_i"),
    "f": ("forget_gate", "forget", "f", "fg", "f_gate", "gate_f"),
    "g": ("memory_cell", "cell", "candidate", "cell_gate", "new_input", "c", "g", "j", "memory", "c_gate", "gate_c"),
    "o": ("output_gate", "output", "out_gate", "o", "og", "o_gate", "gate_o"),
}
# ... and the variables inside each gate scope.
VAR_WORDS: dict[str, tuple[str, ...]] = {
    "x": ("wx", "w_x", "W", "w", "kernel", "weights", "Wx", "w_i", "input_weights"),
    "h": ("wt", "wh", "w_h", "U", "u", "uh", "Wh", "recurrent_kernel", "recurrent_weights"),
    "b": ("bi", "b", "bias", "biases"),
}
GATE_LABELS = {"i": "input", "f": "forget", "g": "cell", "o": "output", "r": "reset", "z": "update", "n": "new"}


def split_gates(a: np.ndarray, n: int, axis: int = 0) -> list[np.ndarray]:
    if a.shape[axis] % n:
        raise ValueError(f"axis {axis} of shape {a.shape} does not split into {n} gates")
    return np.split(a, n, axis=axis)


def join_gates(parts: list[np.ndarray], axis: int = 0) -> np.ndarray:
    return np.concatenate(parts, axis=axis)


def reorder(a: np.ndarray, src: str, dst: str, axis: int = 0) -> np.ndarray:
    """Re-stack gate blocks from order ``src`` to order ``dst`` (same letters). The same order returns ``a`` itself
    (checked like any other), not a copy: callers treat the result as read-only."""
    if src == dst:
        if a.shape[axis] % len(src):
            raise ValueError(f"axis {axis} of shape {a.shape} does not split into {len(src)} gates")
        return a
    parts = dict(zip(src, split_gates(a, len(src), axis)))
    return join_gates([parts[g] for g in dst], axis)
