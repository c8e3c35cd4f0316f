"""Reference recurrent cells in numpy (float64), on the canonical layout.

They define what "the same numbers" means for ``verify``; tests check them against real
``torch.nn.LSTM/GRU``, Keras layers, ONNX runtimes and TensorFlow's recorded outputs. Everything a
``Stack`` states is honoured: activations by exact formula, GRU family, peepholes, projection, TF1 clips
(``cell_clip`` on the state, ``proj_clip`` on the projected output), topology (interleaved or independent
directions), ``go_backwards``, and the ONNX node attributes ``clip`` (applied to every gate's
pre-activation, peephole terms included, not to the cell state before the output activation: what
onnxruntime computes) and ``input_forget`` (f = 1 - i). A semantic that is not known (``None``) is
refused, never defaulted.
"""
from __future__ import annotations

import numpy as np

from ..errors import CheckpointError
from .activations import activation
from .cell import Cell, Stack

__all__ = ["run_cell", "run_stack"]


def _fn(name: str | None, what: str):
    if name is None:
        raise CheckpointError(f"the {what} is not known; the reference cells cannot run it")
    try:
        return activation(name).fn
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None


def _f64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


def run_cell(cell: Cell, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None,
             reverse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run over ``x`` (T, B, in); returns outputs (T, B, H or P), final h, final c (LSTM)."""
    sig, act = _fn(cell.recurrent_activation, "recurrent_activation"), _fn(cell.activation, "activation")
    if cell.kind == "gru" and cell.reset_after is None:
        raise CheckpointError("the GRU family (reset_after) is not known; the reference cells cannot run it")
    w_ih, w_hh = _f64(cell.w_ih), _f64(cell.w_hh)
    b_ih, b_hh = (_f64(b) for b in cell.biases())
    H, T, B = cell.hidden, x.shape[0], x.shape[1]
    out_size = cell.proj or H
    h = np.zeros((B, out_size)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
    peep, w_hr = _f64(cell.peepholes), _f64(cell.w_hr)
    bound = None if cell.clip is None else float(cell.clip)
    cl = (lambda v: v) if bound is None else (lambda v: np.clip(v, -bound, bound))  # noqa: E731
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
            i = sig(cl(pi))
            f = 1.0 - i if cell.input_forget else sig(cl(pf))
            c = f * c + i * act(cl(pg))
            if cell.cell_clip is not None:  # TF1 LSTMCell cell_clip: the state itself, before the output gate
                c = np.clip(c, -cell.cell_clip, cell.cell_clip)
            if peep is not None:
                po = po + peep[2] * c
            h = sig(cl(po)) * act(c)
            if w_hr is not None:
                h = h @ w_hr.T
                if cell.proj_clip is not None:
                    h = np.clip(h, -cell.proj_clip, cell.proj_clip)
        else:
            xr, xz, xn = np.split(gx, 3, axis=1)
            ur, uz, un = np.split(w_hh, 3, axis=0)
            br, bz, bn = np.split(b_hh, 3)
            r = sig(cl(xr + h @ ur.T + br))
            z = sig(cl(xz + h @ uz.T + bz))
            if cell.reset_after:
                n = act(cl(xn + r * (h @ un.T + bn)))
            else:
                n = act(cl(xn + (r * h) @ un.T + bn))
            h = (1.0 - z) * n + z * h
        outs[t] = h
    return outs, h, (c if cell.kind == "lstm" else None)


def run_stack(stack: Stack | list[list[Cell]], x: np.ndarray) -> np.ndarray:
    """Outputs (T, B, D*H) of a stack over ``x`` (T, B, in); directions concatenated, reverse aligned to x.

    interleaved: each layer's directions concatenated feed the next layer. independent: each
    direction runs its own stack and the tops are concatenated. go_backwards: the one direction runs
    from the last step and its outputs come back in that order (Keras).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # weights of 1e38 or inf: the limits, no warnings
        return _run_stack(stack, x)


def _run_stack(stack: Stack | list[list[Cell]], x: np.ndarray) -> np.ndarray:
    if not isinstance(stack, Stack):
        stack = Stack(list(stack))
    if stack.go_backwards:
        if len(stack[0]) != 1:
            raise CheckpointError("go_backwards on a bidirectional stack has no reference semantics here")
        for layer in stack:
            x = run_cell(layer[0], x, reverse=True)[0][::-1]
        return x
    if stack.topology == "independent" and len(stack[0]) == 2:
        tops = []
        for d in range(2):
            y = x
            for layer in stack:
                y = run_cell(layer[d], y, reverse=d == 1)[0]
            tops.append(y)
        return np.concatenate(tops, axis=-1)
    for layer in stack:
        outs = [run_cell(cell, x, reverse=d == 1)[0] for d, cell in enumerate(layer)]
        x = np.concatenate(outs, axis=-1)
    return x
