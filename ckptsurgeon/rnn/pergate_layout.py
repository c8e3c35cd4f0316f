"""Hand-built cells with one scope per gate (``LSTMcell/{input_gate,forget_gate,memory_cell,output_gate}/
{wx, wt, bi}``, the widely copied TF1 answer), and the canonical per-gate view ``--to gates``.

Gate and variable names come from tables (``gates.GATE_WORDS``/``VAR_WORDS``) plus user declarations.
Orientation: ``wx`` is ``(in, H)`` for ``x @ W`` code or ``(H, in)`` for ``W @ x``; the square recurrent
matrix gives H, so only input size == hidden size is ambiguous: then the declared convention
(default ``x @ W``) decides and the group says so.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..index import CheckpointIndex
from .cell import Cell, Stack
from .gates import GATE_LABELS, GATE_WORDS, VAR_WORDS
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write_gates"]


def _lookup(words: dict[str, tuple[str, ...]], extra: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for letter, names in list(extra.items()) + list(words.items()):
        for name in names:
            out.setdefault(name, letter)
    return out


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    gate_of = _lookup(GATE_WORDS, options.gate_names)
    var_of = _lookup(VAR_WORDS, options.var_names)
    found: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for path in index:
        segs = path.split("/")
        if len(segs) < 3:
            continue
        scope, gate, var = "/".join(segs[:-2]), segs[-2], segs[-1]
        if gate in gate_of and var in var_of:
            found[scope][gate_of[gate]][var_of[var]] = path
    groups = []
    for scope, gates in found.items():
        if set(gates) == set("ifgo") and all(set(v) >= {"x", "h"} for v in gates.values()):
            groups.append(_group(index, scope, gates, options))
    return groups


def _group(index, scope, gates, options: RecognizeOptions) -> RecurrentGroup:
    hshape = index[gates["i"]["h"]].shape
    xshape = index[gates["i"]["x"]].shape
    hidden = hshape[0]
    notes = []
    if len(xshape) != 2 or hshape != (hidden, hidden):
        orient = None
    elif xshape[0] == xshape[1] == hidden:
        orient = options.orientation
        notes.append(f"input size equals hidden size ({hidden}): orientation taken as declared, "
                     f"{'x @ W (in, H)' if orient == 'xw' else 'W @ x (H, in)'} (--orientation xw|wx)")
    else:
        orient = "xw" if xshape[1] == hidden else "wx"
    n_in = xshape[0] if orient == "xw" else xshape[1]
    has_bias = all("b" in g for g in gates.values())

    def load() -> Stack:
        def mat(path: str) -> np.ndarray:
            a = index[path].numpy()
            return a.T if orient == "xw" else a

        w_ih = np.concatenate([mat(gates[g]["x"]) for g in "ifgo"])
        w_hh = np.concatenate([mat(gates[g]["h"]) for g in "ifgo"])
        b = np.concatenate([index[gates[g]["b"]].numpy().reshape(-1) for g in "ifgo"]) if has_bias else None
        return [[Cell("lstm", w_ih, w_hh, b, None if b is None else np.zeros_like(b))]]

    members = [gates[g][v] for g in "ifgo" for v in ("x", "h", "b") if v in gates[g]]
    return RecurrentGroup(scope=scope, kind="lstm", layout="per-gate", variant="hand-built per-gate LSTM",
                          input_size=n_in, hidden_size=hidden, bias="one" if has_bias else "none",
                          members=members, notes=notes, load=load)


def write_gates(stack: Stack, gates: str | None = None) -> dict[str, np.ndarray]:
    """Canonical per-gate matrices: ``[layer_k/][forward|backward/]<gate>/{weight_ih (H,in), weight_hh, bias_ih, bias_hh}``."""
    out: dict[str, np.ndarray] = {}
    for k, layer in enumerate(stack):
        for d, cell in enumerate(layer):
            base = ("" if len(stack) == 1 else f"layer_{k}/") + ("" if len(layer) == 1 else ("forward/", "backward/")[d])
            letters = "ifgo" if cell.kind == "lstm" else "rzn"
            b_ih, b_hh = cell.biases()
            parts = [np.split(a, len(letters)) for a in (cell.w_ih, cell.w_hh, b_ih, b_hh)]
            for j, g in enumerate(letters):
                label = GATE_LABELS[g]
                if gates and label not in gates and g not in gates:
                    continue
                for name, arrs in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), parts):
                    if name.startswith("bias") and not cell.has_bias:
                        continue
                    out[f"{base}{label}/{name}"] = arrs[j]
                if cell.peepholes is not None and g in "ifo":
                    out[f"{base}{label}/peephole"] = cell.peepholes["ifo".index(g)]
            if cell.w_hr is not None:
                out[f"{base}projection/weight_hr"] = cell.w_hr
    return out
