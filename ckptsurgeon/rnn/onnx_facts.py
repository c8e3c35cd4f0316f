"""Facts of an ONNX ``LSTM``/``GRU`` node: every one from the node (``file: node ... states ...``) or from the
operator's documented default (``version default: ONNX opset N default ...``), never assumed.

``direction`` (``reverse`` = Keras go_backwards, with Y aligned to X: see ``onnx_graph``), ``activations`` with
``activation_alpha``/``activation_beta`` (consumed in order by the activations that take them, as onnxruntime
does; ``HardSigmoid(0.2, 0.5)`` is Keras 2's hard_sigmoid exactly), ``clip``, ``input_forget``,
``linear_before_reset`` (the GRU family) and ``layout`` (batch-major X/Y: data layout only). What a node
states that no formula here computes (an LSTM whose cell activation g differs from its output activation h,
directions with different activations, an alpha-taking activation without alpha and without a documented
default) is ``missing``: conversions refuse it, naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, OutputError
from .activations import ONNX_FORMULAS, from_onnx

__all__ = ["NodeFacts", "node_facts", "input_notes", "ONNX_DEFAULT", "PARAM_DEFAULTS"]

ONNX_DEFAULT = "version default: ONNX opset"  # provenance prefix of an operator default: binding, like the file
_PER_DIRECTION = {"LSTM": 3, "GRU": 2}  # activations per direction: f, g, h / f, g
# Defaults of alpha/beta for activations that take them, where the ONNX spec ("the same as the corresponding
# ONNX operators") and onnxruntime agree (checked by the tests). ThresholdedRelu (spec 1.0, onnxruntime 0),
# Affine and ScaledTanh (no operator of their own) have none: a node must state them.
PARAM_DEFAULTS = {"HardSigmoid": (0.2, 0.5), "LeakyRelu": (0.01, None), "Elu": (1.0, None)}


@dataclass
class NodeFacts:
    values: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _stated(node, attr: str, value: Any) -> str:
    return f"file: node {node.scope} states {attr}={value!r}"


def _default(node, attr: str, value: Any) -> str:
    return f"{ONNX_DEFAULT} {node.opset} default {attr}={value!r} (node {node.scope} does not state it)"


def _activations(node) -> tuple[str | None, str | None, str]:
    """(recurrent_activation, activation, provenance) of an LSTM/GRU node."""
    per, dirs = _PER_DIRECTION[node.op_type], node.num_directions
    acts = list(node.activations)
    if len(acts) != per * dirs:
        return None, None, (f"missing: node {node.scope} lists {len(acts)} activations; a {node.direction} "
                            f"{node.op_type} takes {per * dirs} ({per} per direction)")
    alphas, betas = list(node.activation_alpha), list(node.activation_beta)
    names, defaults = [], []
    canon = {k.lower(): k for k in ONNX_FORMULAS}
    for a in acts:
        op = canon.get(str(a).lower())
        if op is None:
            return None, None, f"missing: node {node.scope} uses activation {a!r}, which the ONNX spec does not define"
        takes_a, takes_b = ONNX_FORMULAS[op][:2]
        params = []
        for takes, pool, k in ((takes_a, alphas, 0), (takes_b, betas, 1)):
            value = pool.pop(0) if takes and pool else None
            if takes and value is None:
                value = PARAM_DEFAULTS.get(op, (None, None))[k]
                if value is None:
                    return None, None, (f"missing: node {node.scope} gives {op} no {('alpha', 'beta')[k]} and ONNX "
                                        "documents no default for it (runtimes disagree)")
                defaults.append(f"{op} {('alpha', 'beta')[k]} {value}")
            params.append(value)
        names.append(from_onnx(op, *params))
    if alphas or betas:
        return None, None, (f"missing: node {node.scope} gives {len(alphas)} alpha / {len(betas)} beta value(s) that no "
                            "activation takes; which activation each belongs to is not defined")
    by_dir = [names[d * per:(d + 1) * per] for d in range(dirs)]
    if any(d != by_dir[0] for d in by_dir):
        return None, None, f"missing: node {node.scope}'s directions use different activations ({by_dir}); no target holds that"
    if node.op_type == "LSTM" and by_dir[0][1] != by_dir[0][2]:
        return None, None, (f"missing: node {node.scope}'s LSTM cell activation g={by_dir[0][1]} differs from its output "
                            f"activation h={by_dir[0][2]}; no target here computes that")
    listed = {"activations": acts, "activation_alpha": list(node.activation_alpha),
              "activation_beta": list(node.activation_beta)}
    shown = ", ".join(f"{k}={v}" for k, v in listed.items() if v)
    if "activations" not in node.stated:
        prov = _default(node, "activations", acts)
    elif defaults:
        prov = (f"{ONNX_DEFAULT} {node.opset} default {', '.join(defaults)} (node {node.scope} states {shown} but not "
                "those parameters)")
    else:
        prov = f"file: node {node.scope} states {shown}"
    return by_dir[0][0], by_dir[0][1], prov


def node_facts(node) -> NodeFacts:
    out = NodeFacts()
    v, p = out.values, out.provenance

    def fact(name: str, attr: str, value: Any, shown: Any = None) -> None:
        v[name] = value
        shown = value if shown is None else shown
        p[name] = _stated(node, attr, shown) if attr in node.stated else _default(node, attr, shown)

    if node.direction not in ("forward", "reverse", "bidirectional"):
        p["go_backwards"] = f"missing: node {node.scope} states direction={node.direction!r}, which ONNX does not define"
        v["go_backwards"] = False
    else:
        fact("go_backwards", "direction", node.direction == "reverse", node.direction)
    if node.op_type == "GRU":
        fact("reset_after", "linear_before_reset", bool(node.linear_before_reset), node.linear_before_reset)
    rec, act, prov = _activations(node)
    v["recurrent_activation"], v["activation"] = rec, act
    p["recurrent_activation"] = p["activation"] = prov
    fact("clip", "clip", None if node.clip is None else float(np.float32(node.clip)))
    if node.op_type == "LSTM":
        fact("input_forget", "input_forget", bool(node.input_forget), node.input_forget)
    if node.layout not in (0, 1):
        p["layout"] = f"missing: node {node.scope} states layout={node.layout}, which ONNX does not define"
    if node.layout == 1:
        out.notes.append(f"node {node.scope} has layout=1: X and Y are batch-major (torch batch_first=True); "
                         "the weights are the same")
    if node.direction == "reverse":
        out.notes.append(f"node {node.scope} has direction='reverse': it runs last step first and returns Y aligned with "
                         "X; Keras's go_backwards returns its outputs last step first (flip them on the time axis to "
                         "compare; the final state is the same)")
    return out


def input_notes(node) -> list[str]:
    notes = []
    for role in ("initial_h", "initial_c"):
        inp = node.inputs.get(role)
        if inp is None or inp.origin not in ("initializer", "constant", "folded"):
            continue
        try:
            nonzero = bool(np.any(inp.value() != 0))
        except (MissingDependencyError, OutputError):
            continue
        if nonzero:
            where = inp.path or ", ".join(s.path for s in inp.sources)
            notes.append(f"node {node.scope} starts from a constant non-zero {role} ({where}); converted weights start "
                         "from the state you pass (zeros by default): pass that tensor to reproduce the model")
    if node.inputs.get("sequence_lens") is not None and node.inputs["sequence_lens"].origin != "absent":
        notes.append(f"node {node.scope} takes sequence_lens: padded steps are skipped (torch: packed sequences, Keras: "
                     "masking); the weights compute the same per step")
    return notes
