"""Gate orders and gate/variable names as data, and the pure block operations on stacked gates.

Canonical order (PyTorch's): LSTM ``i f g o`` (g = cell candidate), GRU ``r z n``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CANONICAL", "ORDERS", "GATE_WORDS", "VAR_WORDS", "GATE_LABELS", "reorder", "split_gates", "join_gates",
           "transposed", "c_order"]

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


_TILE = 16  # rows of a matrix transposed at a time: a cache line of each of 16 output rows (float32) is written whole
_SPAN = 1024  # ... and columns: the output rows a tile writes to stay within the TLB's reach (25% faster than whole rows)


def transposed(a: np.ndarray, src: str = "", dst: str = "", axis: int = 0) -> np.ndarray:
    """``reorder(a, src, dst, axis).T`` as a new C-order array (no orders: ``a.T``), in one pass: each gate block is
    copied in tiles of 16 rows x 1024 columns of ``a``, where numpy's own transposing copy writes across every output
    row per element read (4-6 times slower on a 33 MB matrix: 62 ms against 10-13 ms for 4096 x 2048 float32)."""
    if a.ndim != 2:
        return reorder(a, src, dst, axis).T.copy() if src else a.T.copy()
    n = len(src) or 1
    if a.shape[axis] % n:
        raise ValueError(f"axis {axis} of shape {a.shape} does not split into {n} gates")
    size = a.shape[axis] // n
    out = np.empty(a.shape[::-1], a.dtype)
    for j, g in enumerate(dst or "x"):
        i = src.index(g) if src else 0
        if axis == 0:
            _transpose_into(out[:, j * size:(j + 1) * size], a[i * size:(i + 1) * size])
        else:
            _transpose_into(out[j * size:(j + 1) * size], a[:, i * size:(i + 1) * size])
    return out


def _transpose_into(dst: np.ndarray, a: np.ndarray) -> None:
    """``dst[...] = a.T``, a tile of rows at a time when ``a``'s rows are contiguous (else numpy's copy is the fast one)."""
    if min(a.shape) < 2 * _TILE or a.strides[1] != a.itemsize:
        dst[...] = a.T
        return
    for r in range(0, a.shape[0], _TILE):
        for c in range(0, a.shape[1], _SPAN):
            dst[c:c + _SPAN, r:r + _TILE] = a[r:r + _TILE, c:c + _SPAN].T


def c_order(a: np.ndarray) -> np.ndarray:
    """``a`` in C order: ``a`` itself when it is; a transposed layout read back (Fortran order: Keras's and TF1's
    kernels) copied by ``transposed``; anything else by numpy."""
    if a.flags.c_contiguous:
        return a
    if a.ndim == 2 and a.flags.f_contiguous:
        return transposed(a.T)
    return np.ascontiguousarray(a)
