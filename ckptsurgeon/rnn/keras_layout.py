"""Keras recurrent layers: Keras 2 / tf.keras / Keras 3 ``LSTM``/``GRU`` (both GRU families),
``Bidirectional``, tf.keras ``CuDNNLSTM``/``CuDNNGRU``, and Keras 1 per-gate weights (read only).

Keras stores ``kernel (in, G*H)``, ``recurrent_kernel (H, G*H)`` in gate order i,f,c,o / z,r,h; LSTM has
one bias (4H); GRU ``(2, 3H)`` when reset_after (input row, recurrent row) else ``(3H)``. CuDNN layers
keep each gate's input kernel as a raw cuDNN buffer (``reshape(H, in).T``), each recurrent kernel
transposed, and biases ``[input; recurrent]`` (checked against tf.keras's own conversion).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from ..index import CheckpointIndex
from .cell import Cell, Stack
from .gates import ORDERS, reorder
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write", "cell_to_keras"]

_CELL_SCOPES = {"cell", "lstm_cell", "gru_cell"}
_DIRECTION = re.compile(r"^(forward|backward)(_layer|_.+)$")


def _layer_of(scope: str) -> str:
    parent, _, last = scope.rpartition("/")
    return parent if last in _CELL_SCOPES and parent else scope


def _config(index: CheckpointIndex, layer_scope: str) -> dict[str, Any]:
    layers = index.metadata.get("layers") or {}
    segs = layer_scope.split("/")
    top = layers.get(segs[0]) or {}
    if len(segs) > 1 and _DIRECTION.match(segs[-1]) and top.get("class_name") == "Bidirectional":
        inner = top.get("backward_layer") if segs[-1].startswith("backward") and top.get("backward_layer") else top.get("layer")
        return inner or {}
    return layers.get(segs[-1]) or top


def _activations(index: CheckpointIndex, cfg: dict[str, Any], legacy_names: bool) -> tuple[str, str, str]:
    if "recurrent_activation" in cfg:
        return cfg.get("activation", "tanh"), cfg["recurrent_activation"], "file"
    version = str(index.metadata.get("keras_version", ""))
    if legacy_names or version.startswith(("1.", "2.0", "2.1", "2.2")):
        return "tanh", "hard_sigmoid", "assumed"  # Keras 1 / 2.2 default recurrent_activation
    return "tanh", "sigmoid", "default"


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    by_parent: dict[str, dict[str, str]] = defaultdict(dict)
    for path in index:
        parent, _, last = path.rpartition("/")
        if last in ("kernel", "recurrent_kernel", "bias"):
            by_parent[parent][last] = path
    singles: dict[str, RecurrentGroup] = {}
    for parent, parts in by_parent.items():
        if "kernel" in parts and "recurrent_kernel" in parts:
            group = _single(index, parent, parts)
            if group is not None:
                singles[group.scope] = group
    return _merge_bidirectional(singles) + _keras1(index)


def _single(index: CheckpointIndex, parent: str, parts: dict[str, str]) -> RecurrentGroup | None:
    k, r = index[parts["kernel"]].shape, index[parts["recurrent_kernel"]].shape
    if len(k) != 2 or len(r) != 2 or r[0] == 0 or r[1] % r[0] or k[1] != r[1]:
        return None
    hidden, gates = r[0], r[1] // r[0]
    if gates not in (3, 4):
        return None
    scope = _layer_of(parent)
    cfg = _config(index, scope)
    cls = str(cfg.get("class_name", ""))
    kind = "lstm" if gates == 4 else "gru"
    b = index[parts["bias"]].shape if "bias" in parts else None
    cudnn = cls.startswith("CuDNN") or (b is not None and b == (2 * gates * hidden,))
    reset_after = None
    if kind == "gru":
        # The stored bias shape decides: (2, 3H) is reset-after; CuDNNGRU is always reset-after.
        reset_after = True if cudnn else len(b) == 2 if b is not None else bool(cfg.get("reset_after", True))
    legacy_names = parent == scope and not cudnn  # Keras 2.2: lstm_1/kernel with no cell scope
    act, rec_act, source = _activations(index, cfg, legacy_names)
    if cudnn:
        act, rec_act, source = "tanh", "sigmoid", "file"
    variant = (f"Keras Cu{'DNN'}{kind.upper()}" if cudnn else f"Keras {kind.upper()}") + (
        "" if kind == "lstm" else f" (reset_after={reset_after})")
    group = RecurrentGroup(
        scope=scope, kind=kind, layout="keras-cudnn" if cudnn else "keras", variant=variant,
        input_size=k[0], hidden_size=hidden, bias="cudnn" if cudnn else ("one" if b else "none"),
        reset_after=reset_after, activation=act, recurrent_activation=rec_act, activation_source=source,
        members=[parts[n] for n in ("kernel", "recurrent_kernel", "bias") if n in parts],
    )
    if source == "assumed":
        group.notes.append(f"recurrent_activation not stored; assuming {rec_act} (the Keras 1/2.2 default)")
    group.load = lambda: [[_to_cell(index, parts, kind, hidden, reset_after, cudnn, act, rec_act)]]
    return group


def _to_cell(index, parts, kind, hidden, reset_after, cudnn, act, rec_act) -> Cell:
    order = ORDERS[("keras", kind)]
    canon = "ifgo" if kind == "lstm" else "rzn"
    kernel = index[parts["kernel"]].numpy()
    rec = index[parts["recurrent_kernel"]].numpy()
    bias = index[parts["bias"]].numpy() if "bias" in parts else None
    n_in, G = kernel.shape[0], kernel.shape[1] // hidden
    if cudnn:
        kernel = np.concatenate([kernel[:, g * hidden:(g + 1) * hidden].reshape(hidden, n_in).T for g in range(G)], 1)
        rec = np.concatenate([rec[:, g * hidden:(g + 1) * hidden].T for g in range(G)], 1)
    w_ih = reorder(kernel.T, order, canon)
    w_hh = reorder(rec.T, order, canon)
    b_ih = b_hh = None
    if bias is not None:
        if cudnn:
            b_in, b_rec = np.split(bias, 2)
        elif bias.ndim == 2:
            b_in, b_rec = bias[0], bias[1]
        else:
            b_in, b_rec = bias, np.zeros_like(bias)
        if cudnn and kind == "lstm":
            b_in, b_rec = b_in + b_rec, np.zeros_like(b_rec)  # as tf.keras converts CuDNNLSTM
        b_ih, b_hh = reorder(b_in, order, canon), reorder(b_rec, order, canon)
    return Cell(kind, w_ih, w_hh, b_ih, b_hh, reset_after=bool(reset_after) if kind == "gru" else True,
                recurrent_activation=rec_act, activation=act)


def _merge_bidirectional(singles: dict[str, RecurrentGroup]) -> list[RecurrentGroup]:
    out, used = [], set()
    for scope, group in singles.items():
        parent, _, last = scope.rpartition("/")
        m = _DIRECTION.match(last)
        if not m or m.group(1) != "forward" or scope in used:
            continue
        twin = next((s for s in singles if s.rpartition("/")[0] == parent
                     and s.rpartition("/")[2].startswith("backward") and _DIRECTION.match(s.rpartition("/")[2])), None)
        if twin is None:
            continue
        back = singles[twin]
        merged = RecurrentGroup(**{**group.__dict__, "scope": parent, "directions": 2,
                                   "variant": f"Bidirectional({group.variant})",
                                   "members": group.members + back.members, "notes": group.notes + back.notes})
        merged.load = lambda f=group, b=back: [[f.cells()[0][0], b.cells()[0][0]]]
        used.update((scope, twin))
        out.append(merged)
    return out + [g for s, g in singles.items() if s not in used]


_K1 = re.compile(r"^(?P<layer>.+)_(?P<m>[WUb])_(?P<g>[icfozrh])$")


def _keras1(index: CheckpointIndex) -> list[RecurrentGroup]:
    """Keras 1 per-gate weights: ``<layer>/<layer>_W_i``, ``_U_i``, ``_b_i`` (LSTM i,c,f,o; GRU z,r,h)."""
    found: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for path in index:
        parent, _, last = path.rpartition("/")
        m = _K1.match(last)
        if m:
            found[parent][(m.group("m"), m.group("g"))] = path
    groups = []
    for scope, parts in found.items():
        letters = {g for _, g in parts}
        kind = "lstm" if letters == set("icfo") else "gru" if letters == set("zrh") else None
        if kind is None or len(parts) != 3 * len(letters):
            continue
        keras_to_canon = {"i": "i", "c": "g", "f": "f", "o": "o", "z": "z", "r": "r", "h": "n"}
        canon = "ifgo" if kind == "lstm" else "rzn"
        inv = {v: k for k, v in keras_to_canon.items()}
        w0 = index[parts[("W", next(iter(letters)))]].shape

        def load(parts=parts, kind=kind, canon=canon, inv=inv) -> Stack:
            W = np.concatenate([index[parts[("W", inv[g])]].numpy().T for g in canon])
            U = np.concatenate([index[parts[("U", inv[g])]].numpy().T for g in canon])
            b = np.concatenate([index[parts[("b", inv[g])]].numpy() for g in canon])
            return [[Cell(kind, W, U, b, np.zeros_like(b), reset_after=False, recurrent_activation="hard_sigmoid")]]

        group = RecurrentGroup(scope=scope, kind=kind, layout="keras1", variant=f"Keras 1 {kind.upper()} (per-gate)",
                               input_size=w0[0], hidden_size=w0[1], bias="one", recurrent_activation="hard_sigmoid",
                               activation_source="assumed", reset_after=False if kind == "gru" else None,
                               members=list(parts.values()), load=load)
        group.notes.append("Keras 1 stores no activations; assuming recurrent_activation=hard_sigmoid (its default)")
        groups.append(group)
    return groups


def cell_to_keras(cell: Cell) -> dict[str, np.ndarray]:
    order = ORDERS[("keras", cell.kind)]
    canon = "ifgo" if cell.kind == "lstm" else "rzn"
    out = {"kernel": reorder(cell.w_ih, canon, order).T.copy(), "recurrent_kernel": reorder(cell.w_hh, canon, order).T.copy()}
    if cell.has_bias:
        b_ih, b_hh = cell.biases()
        b_ih, b_hh = reorder(b_ih, canon, order), reorder(b_hh, canon, order)
        if cell.kind == "gru" and cell.reset_after:
            out["bias"] = np.stack([b_ih, b_hh])
        else:
            out["bias"] = b_ih + b_hh
    return out


def write(stack: Stack) -> dict[str, np.ndarray]:
    """Keras 3 style names: ``cell/kernel``; Bidirectional ``forward_layer/cell/...``; layer k>0 ``layer_k/...``."""
    out: dict[str, np.ndarray] = {}
    for k, layer in enumerate(stack):
        base = "" if len(stack) == 1 else f"layer_{k}/"
        for d, cell in enumerate(layer):
            where = base + ("" if len(layer) == 1 else ("forward_layer/" if d == 0 else "backward_layer/"))
            for name, arr in cell_to_keras(cell).items():
                out[f"{where}cell/{name}"] = arr
    return out
