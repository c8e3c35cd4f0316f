"""ONNX ``LSTM``/``GRU`` operator inputs: ``W [D, G*H, in]``, ``R [D, G*H, H]``, ``B [D, 2*G*H]``
(input biases then recurrent ones), ``P [D, 3H]`` peepholes in i, o, f; LSTM gates i, o, f, c;
GRU z, r, h with ``linear_before_reset`` = 1 for the reset-after family, 0 for reset-before."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..index import CheckpointIndex
from .cell import Cell, Stack
from .gates import ORDERS, reorder
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write"]


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


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
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
        if len(w) != 3 or len(r) != 3 or r[2] == 0 or r[1] % r[2] or r[1] // r[2] not in (3, 4):
            continue
        kind = "lstm" if r[1] // r[2] == 4 else "gru"
        stored = index.metadata.get("__metadata__") or {}
        family = stored.get(f"onnx_linear_before_reset:{scope}", "1") if kind == "gru" else None

        def load(parts=parts, kind=kind, family=family) -> Stack:
            canon, order = ("ifgo" if kind == "lstm" else "rzn"), ORDERS[("onnx", kind)]
            W, R = index[parts["W"]].numpy(), index[parts["R"]].numpy()
            B = index[parts["B"]].numpy() if "B" in parts else None
            P = index[parts["P"]].numpy() if "P" in parts else None
            cells = []
            for d in range(W.shape[0]):
                b_ih = b_hh = None
                if B is not None:
                    b_in, b_rec = np.split(B[d], 2)
                    b_ih, b_hh = reorder(b_in, order, canon), reorder(b_rec, order, canon)
                peep = None if P is None else P[d].reshape(3, -1)[[0, 2, 1]]
                cells.append(Cell(kind, reorder(W[d], order, canon), reorder(R[d], order, canon), b_ih, b_hh,
                                  reset_after=str(family) != "0", peepholes=peep))
            return [cells]

        groups.append(RecurrentGroup(scope=scope, kind=kind, layout="onnx", variant=f"ONNX {kind.upper()}",
                                     input_size=w[2], hidden_size=r[2], directions=w[0], bias="two" if "B" in parts else "none",
                                     peepholes="P" in parts, reset_after=None if kind == "lstm" else str(family) != "0",
                                     members=list(parts.values()), load=load))
    return groups
