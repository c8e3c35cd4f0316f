"""Hand-built cells with one scope per gate (``LSTMcell/{input_gate,forget_gate,memory_cell,output_gate}/
{wx, wt, bi}``, the widely copied TF1 answer), and the canonical per-gate view ``--to gates``.

Gate and variable names come from tables (``gates.GATE_WORDS``/``VAR_WORDS``) plus user declarations.
Orientation: ``wx`` is ``(in, H)`` for ``x @ W`` code or ``(H, in)`` for ``W @ x``; the square recurrent
matrix gives H, so only input size == hidden size is ambiguous: then ``--orientation xw|wx`` must say
which (without it the group is listed, and every conversion of it refused, naming the flag).
Activations are the classic cell's (sigmoid gates, tanh) unless ``--activation``/``--recurrent-activation``
declare others. The canonical per-gate view that ``--to gates`` writes is ``gates_layout``.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..errors import FormatError
from ..index import CheckpointIndex
from .cell import Cell
from .gates import GATE_WORDS, VAR_WORDS
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize"]


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
    prov = {"activation": _CLASSIC, "recurrent_activation": _CLASSIC}
    if len(xshape) != 2 or hshape != (hidden, hidden):
        orient = None
    elif xshape[0] == xshape[1] == hidden:
        orient = options.orientation
        prov["orientation"] = (f"flag: --orientation {orient}" if orient else
                               f"missing: input size equals hidden size ({hidden}), so the shapes cannot tell "
                               "x @ W (in, H) from W @ x (H, in); pass --orientation xw or --orientation wx")
    else:
        orient = "xw" if xshape[1] == hidden else "wx"
        prov["orientation"] = f"file: shapes ({'x @ W: wx is (in, H)' if orient == 'xw' else 'W @ x: wx is (H, in)'})"
    n_in = (xshape[0] if orient == "xw" else xshape[1]) if len(xshape) == 2 else 0
    has_bias = all("b" in g for g in gates.values())
    group = RecurrentGroup(scope=scope, kind="lstm", layout="per-gate", variant="hand-built per-gate LSTM",
                           input_size=n_in, hidden_size=hidden, bias="one" if has_bias else "none", orientation=orient,
                           provenance=prov, members=[gates[g][v] for g in "ifgo" for v in ("x", "h", "b") if v in gates[g]])

    def load() -> list:
        if group.orientation not in ("xw", "wx"):
            raise FormatError(f"{scope}: the orientation of its square matrices is not known; pass --orientation xw|wx")

        def mat(path: str) -> np.ndarray:
            a = index[path].numpy()
            return a.T if group.orientation == "xw" else a

        w_ih = np.concatenate([mat(gates[g]["x"]) for g in "ifgo"])
        w_hh = np.concatenate([mat(gates[g]["h"]) for g in "ifgo"])
        b = np.concatenate([index[gates[g]["b"]].numpy().reshape(-1) for g in "ifgo"]) if has_bias else None
        return [[Cell("lstm", w_ih, w_hh, b, None if b is None else np.zeros_like(b))]]

    group.load = load
    return group


_CLASSIC = ("version default: hand-built per-gate cells compute sigmoid gates and tanh (the classic TF1 cell; "
            "--activation/--recurrent-activation declare others)")
