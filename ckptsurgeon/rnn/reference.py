"""Reference recurrent cells in numpy (float64), on the canonical layout.

They define what "the same numbers" means for ``verify``; tests check them against real
``torch.nn.LSTM/GRU``, Keras layers and TensorFlow's recorded outputs.
"""
from __future__ import annotations

import numpy as np

from .cell import Cell, Stack

__all__ = ["ACTIVATIONS", "run_cell", "run_stack"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),  # Keras 1/2
    "hard_sigmoid_keras3": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,  # Keras 3: relu6(x+3)/6
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}


def _f64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


def run_cell(cell: Cell, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None,
             reverse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run over ``x`` (T, B, in); returns outputs (T, B, H or P), final h, final c (LSTM)."""
    sig, act = ACTIVATIONS[cell.recurrent_activation], ACTIVATIONS[cell.activation]
    w_ih, w_hh = _f64(cell.w_ih), _f64(cell.w_hh)
    b_ih, b_hh = (_f64(b) for b in cell.biases())
    H, T, B = cell.hidden, x.shape[0], x.shape[1]
    out_size = cell.proj or H
    h = np.zeros((B, out_size)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
    peep, w_hr = _f64(cell.peepholes), _f64(cell.w_hr)
    outs = np.zeros((T, B, out_size))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        xt = np.asarray(x[t], np.float64)
        gx = xt @ w_ih.T + b_ih
        if cell.kind == "lstm":
            gh = h @ w_hh.T + b_hh
            pi, pf, pg, po = np.split(gx + gh, 4, axis=1)
            if peep is not None:
                pi, pf = pi + peep[0] * c, pf + peep[1] * c
            c = sig(pf) * c + sig(pi) * act(pg)
            if peep is not None:
                po = po + peep[2] * c
            h = sig(po) * act(c)
            if w_hr is not None:
                h = h @ w_hr.T
        else:
            xr, xz, xn = np.split(gx, 3, axis=1)
            ur, uz, un = np.split(w_hh, 3, axis=0)
            br, bz, bn = np.split(b_hh, 3)
            r = sig(xr + h @ ur.T + br)
            z = sig(xz + h @ uz.T + bz)
            if cell.reset_after:
                n = act(xn + r * (h @ un.T + bn))
            else:
                n = act(xn + (r * h) @ un.T + bn)
            h = (1.0 - z) * n + z * h
        outs[t] = h
    return outs, h, (c if cell.kind == "lstm" else None)


def run_stack(stack: Stack, x: np.ndarray) -> np.ndarray:
    """Stacked (and bidirectional) layers: each layer's directions concatenated feed the next."""
    for layer in stack:
        outs = [run_cell(cell, x, reverse=d == 1)[0] for d, cell in enumerate(layer)]
        x = np.concatenate(outs, axis=-1)
    return x
