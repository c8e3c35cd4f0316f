"""ONNX ``LSTM``/``GRU`` operator inputs: ``W [D, G*H, in]``, ``R [D, G*H, H]``, ``B [D, 2*G*H]``
(input biases then recurrent ones), ``P [D, 3H]`` peepholes in i, o, f; LSTM gates i, o, f, c;
GRU z, r, h with ``linear_before_reset`` = 1 for the reset-after family, 0 for reset-before.

The node attributes (``linear_before_reset``, ``activations`` with HardSigmoid's alpha/beta, ``direction``
``reverse`` for Keras go_backwards) are not tensors: ``node_attributes`` gives them, and the output's
``rnn:<scope>`` metadata carries them. Keras's go_backwards returns its outputs last step first;
ONNX ``reverse`` returns Y aligned with X (Y_h is the same): flip Y on the time axis to match Keras."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..index import CheckpointIndex
from .activations import onnx_activation
from .cell import Cell, Stack
from .facts import stored_metadata
from .gates import ORDERS, reorder
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write", "node_attributes", "cells_from_onnx", "is_model_file"]


def is_model_file(index: CheckpointIndex) -> bool:
    """A real ``.onnx`` model (its graph is read by ``onnx_graph``), not tensors named W/R/B in another file."""
    return index.format == "onnx" and "ir_version" in index.metadata


def cells_from_onnx(kind: str, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, P: np.ndarray | None) -> list[Cell]:
    """One canonical cell per direction from operator inputs ``W [D, G*H, in]``, ``R``, ``B [D, 2*G*H]``, ``P [D, 3H]``."""
    canon, order = ("ifgo" if kind == "lstm" else "rzn"), ORDERS[("onnx", kind)]
    cells = []
    for d in range(W.shape[0]):
        b_ih = b_hh = None
        if B is not None:
            b_in, b_rec = np.split(B[d], 2)
            b_ih, b_hh = reorder(b_in, order, canon), reorder(b_rec, order, canon)
        peep = None if P is None else P[d].reshape(3, -1)[[0, 2, 1]]  # i, o, f -> i, f, o
        cells.append(Cell(kind, reorder(W[d], order, canon), reorder(R[d], order, canon), b_ih, b_hh, peepholes=peep))
    return cells


def write(stack: Stack) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, layer in enumerate(stack):
        base = "" if len(stack) == 1 else f"layer_{k}/"
        kind = layer[0].kind
        canon, order = ("ifgo" if kind == "lstm" else "rzn"), ORDERS[("onnx", kind)]
        out[base + "W"] = np.stack([reorder(c.w_ih, canon, order) for c in layer])
        out[base + "R"] = np.stack([reorder(c.w_hh, canon, order) for c in layer])
        if layer[0].has_bias:
            out[base + "B"] = np.stack([np.concatenate([reorder(b, canon, order) for b in c.biases()]) for c in layer])
        if layer[0].peepholes is not None:
            out[base + "P"] = np.stack([c.peepholes[[0, 2, 1]].reshape(-1) for c in layer])  # i, o, f
    return out


_DEFAULTS = "version default: ONNX {} attribute default (the node's attributes are not in this file)"


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    if is_model_file(index):
        return []  # a real model: its nodes state everything (onnx_graph); names alone would guess
    scopes: dict[str, dict[str, str]] = defaultdict(dict)
    for path in index:
        parent, _, last = path.rpartition("/")
        if last in ("W", "R", "B", "P") and len(index[path].shape) in (2, 3):
            scopes[parent][last] = path
    groups = []
    for scope, parts in scopes.items():
        if "W" not in parts or "R" not in parts:
            continue
        w, r = index[parts["W"]].shape, index[parts["R"]].shape
        if len(w) != 3 or len(r) != 3 or r[2] == 0 or r[1] % r[2] or r[1] // r[2] not in (3, 4) or w[0] not in (1, 2):
            continue
        kind = "lstm" if r[1] // r[2] == 4 else "gru"
        prov = {"activation": _DEFAULTS.format("activations"), "recurrent_activation": _DEFAULTS.format("activations"),
                "go_backwards": _DEFAULTS.format("direction")}
        reset_after = None
        if kind == "gru":
            legacy = stored_metadata(index).get(f"onnx_linear_before_reset:{scope}")  # written by ckptsurgeon 0.1
            if legacy in ("0", "1"):
                reset_after, prov["reset_after"] = legacy == "1", f"file: metadata onnx_linear_before_reset:{scope}"
            else:
                prov["reset_after"] = ("missing: ONNX keeps the GRU family in the node's linear_before_reset attribute, "
                                       "which this file does not hold; pass --reset-after or --reset-before")

        def load(parts=parts, kind=kind) -> list:
            get = lambda role: index[parts[role]].numpy() if role in parts else None  # noqa: E731
            return [cells_from_onnx(kind, get("W"), get("R"), get("B"), get("P"))]

        groups.append(RecurrentGroup(scope=scope, kind=kind, layout="onnx", variant=f"ONNX {kind.upper()}",
                                     input_size=w[2], hidden_size=r[2], directions=w[0], bias="two" if "B" in parts else "none",
                                     peepholes="P" in parts, reset_after=reset_after, provenance=prov,
                                     members=list(parts.values()), load=load))
    return groups


def node_attributes(group: RecurrentGroup) -> dict[str, object]:
    """The ONNX LSTM/GRU node attributes that make this group's weights compute what the group computes."""
    attrs: dict[str, object] = {"hidden_size": group.hidden_size,
                                "direction": "bidirectional" if group.directions == 2 else
                                ("reverse" if group.go_backwards else "forward")}
    if group.kind == "gru":
        attrs["linear_before_reset"] = 1 if group.reset_after else 0
    entries = [onnx_activation(group.recurrent_activation), onnx_activation(group.activation)]
    if group.kind == "lstm":
        entries.append(entries[1])  # f, g, h
    if [e[0] for e in entries] != (["Sigmoid", "Tanh", "Tanh"] if group.kind == "lstm" else ["Sigmoid", "Tanh"]):
        entries = entries * group.directions
        attrs["activations"] = [e[0] for e in entries]
        alphas = [e[1] for e in entries if e[1] is not None]
        betas = [e[2] for e in entries if e[2] is not None]
        if alphas:  # only the activations that take parameters consume alpha/beta entries, in order
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    if group.clip is not None:
        attrs["clip"] = group.clip
    if group.input_forget:
        attrs["input_forget"] = 1
    return attrs
