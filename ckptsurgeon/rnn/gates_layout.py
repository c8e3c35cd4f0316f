"""The canonical per-gate view (``--to gates``), written and read back exactly.

Names under the group scope: ``[layer_k/][forward/|backward/]<gate>/{weight_ih (H, in), weight_hh (H, H or P),
bias_ih (H), bias_hh (H), peephole (H)}`` and ``[layer_k/][forward/|backward/]projection/weight_hr (P, H)``,
gates ``input forget cell output`` (LSTM) or ``reset update new`` (GRU). Matrices are PyTorch-oriented
(``y = x @ weight_ih.T``), both biases are kept (the GRU's ``bias_hh`` of ``new`` sits inside the reset
product), and TF1's forget_bias is already folded in. What the tensors cannot show (family,
activations, topology, go_backwards) is in the file's ``rnn:<scope>`` metadata, which the writer
produces (``facts.describe_output``) and recognition reads; without it those facts are missing.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from ..index import CheckpointIndex
from .cell import Cell, Stack
from .gates import GATE_LABELS
from .facts import stated_scopes
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write_gates", "LABELS"]

LABELS = {"lstm": ("input", "forget", "cell", "output"), "gru": ("reset", "update", "new")}
_LETTERS = {"lstm": "ifgo", "gru": "rzn"}
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "peephole")
_LAYER = re.compile(r"^layer_(\d+)$")
_MISSING = ("missing: the gates layout states it in its rnn:<scope> metadata, which this file lacks; "
            "re-extract with ckptsurgeon or pass {}")


def _prefix(base: str, k: int, d: int, layers: int, dirs: int) -> str:
    return base + ("" if layers == 1 else f"layer_{k}/") + ("" if dirs == 1 else ("forward/", "backward/")[d])


def write_gates(stack: Stack, gates: tuple[str, ...] | str | None = None) -> dict[str, np.ndarray]:
    """Canonical per-gate matrices; ``gates`` keeps some (labels or letters), default all."""
    out: dict[str, np.ndarray] = {}
    for k, layer in enumerate(stack):
        for d, cell in enumerate(layer):
            base = _prefix("", k, d, len(stack), len(layer))
            letters = _LETTERS[cell.kind]
            b_ih, b_hh = cell.biases()
            parts = [np.split(a, len(letters)) for a in (cell.w_ih, cell.w_hh, b_ih, b_hh)]
            for j, g in enumerate(letters):
                label = GATE_LABELS[g]
                if gates and label not in gates and g not in gates:
                    continue
                for name, arrs in zip(_NAMES, parts):
                    if name.startswith("bias") and not cell.has_bias:
                        continue
                    out[f"{base}{label}/{name}"] = arrs[j]
                if cell.peepholes is not None and g in "ifo":
                    out[f"{base}{label}/peephole"] = cell.peepholes["ifo".index(g)]
            if cell.w_hr is not None:
                out[f"{base}projection/weight_hr"] = cell.w_hr
    return out


def _split(path: str, stated: tuple[str, ...] = ()) -> tuple[str, int, int, str, str] | None:
    """``scope/[layer_k/][forward|backward/]<gate>/<name>`` -> (scope, k, d, gate, name).

    A scope the file's ``rnn:<scope>`` metadata states is taken whole (longest first), so a group a user
    named ``layer_0`` or ``backward`` is not read as layer 0 or a backward direction of its parent."""
    segs = path.split("/")
    if len(segs) < 2 or segs[-1] not in _NAMES + ("weight_hr",):
        return None
    gate, name = segs[-2], segs[-1]
    if (gate == "projection") != (name == "weight_hr"):
        return None
    scope = next((s for s in stated if path.startswith(s + "/")), None)
    head, d, k = (segs[len(scope.split("/")):-2] if scope else segs[:-2]), 0, 0
    if head and head[-1] in ("forward", "backward"):
        d = 1 if head.pop() == "backward" else 0
    if head and _LAYER.match(head[-1]):
        k = int(_LAYER.match(head.pop()).group(1))
    if scope is not None:
        return (scope, k, d, gate, name) if not head else None
    return "/".join(head), k, d, gate, name


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    found: dict[str, dict[tuple[int, int], dict[str, dict[str, str]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    stated = stated_scopes(index)
    for path in index:
        parsed = _split(path, stated)
        if parsed:
            scope, k, d, gate, name = parsed
            found[scope][(k, d)][gate][name] = path
    groups = []
    for scope, cells in found.items():
        group = _group(index, scope, cells)
        if group is not None:
            groups.append(group)
    return groups


def _group(index: CheckpointIndex, scope: str, cells: dict) -> RecurrentGroup | None:
    layers = sorted({k for k, _ in cells})
    dirs = sorted({d for _, d in cells})
    if layers != list(range(len(layers))) or dirs not in ([0], [0, 1]) or len(cells) != len(layers) * len(dirs):
        return None
    first = cells[(0, 0)]
    kind = next((kd for kd, labels in LABELS.items() if set(first) - {"projection"} == set(labels)), None)
    if kind is None:
        return None
    labels = LABELS[kind]
    bias = all("bias_ih" in cells[c][g] and "bias_hh" in cells[c][g] for c in cells for g in labels)
    peep = kind == "lstm" and all("peephole" in cells[c][g] for c in cells for g in ("input", "forget", "output"))
    proj = all("weight_hr" in cells[c].get("projection", {}) for c in cells)
    if any(set(cells[c]) - {"projection"} != set(labels) or not all({"weight_ih", "weight_hh"} <= set(cells[c][g])
           for g in labels) for c in cells):
        return None
    w_ih, w_hh = index[first[labels[0]]["weight_ih"]].shape, index[first[labels[0]]["weight_hh"]].shape
    if len(w_ih) != 2 or len(w_hh) != 2:
        return None
    hidden = w_hh[0]
    p = index[first["projection"]["weight_hr"]].shape[0] if proj else 0
    prov = {"activation": _MISSING.format("--activation"), "recurrent_activation": _MISSING.format("--recurrent-activation"),
            "go_backwards": _MISSING.format("--go-backwards or --no-go-backwards")}
    if kind == "gru":
        prov["reset_after"] = _MISSING.format("--reset-after or --reset-before")
    if len(layers) > 1 and len(dirs) == 2:
        prov["topology"] = _MISSING.format("nothing (no flag can say how the layers were wired)")
    members = [path for c in sorted(cells) for g in list(labels) + ["projection"] for path in cells[c].get(g, {}).values()]
    group = RecurrentGroup(scope=scope, kind=kind, layout="gates", variant=f"ckptsurgeon gates ({kind.upper()})",
                           input_size=w_ih[1], hidden_size=hidden, num_layers=len(layers), directions=len(dirs),
                           proj_size=p, bias="two" if bias else "none", peepholes=peep, reset_after=None,
                           activation=None, recurrent_activation=None, provenance=prov, members=members)

    def load() -> list:
        def get(c: tuple[int, int], g: str, name: str) -> np.ndarray:
            return index[cells[c][g][name]].numpy()

        stack = []
        for k in layers:
            row = []
            for d in dirs:
                c = (k, d)
                cat = lambda name: np.concatenate([get(c, g, name) for g in labels])  # noqa: E731
                peeps = np.stack([get(c, g, "peephole") for g in ("input", "forget", "output")]) if peep else None
                row.append(Cell(kind, cat("weight_ih"), cat("weight_hh"), cat("bias_ih") if bias else None,
                                cat("bias_hh") if bias else None, peepholes=peeps,
                                w_hr=get(c, "projection", "weight_hr") if proj else None))
            stack.append(row)
        return stack

    group.load = load
    return group
