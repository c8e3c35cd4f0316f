"""ONNX ``LSTM``/``GRU`` nodes as recurrent groups, recognized from the graph (not from names).

A node states everything its computation depends on, so every fact comes from it or from the operator's
documented default (``onnx_facts``): a group found from a node has no assumed fact.

W/R/B/P come from ``NodeInput.value_with``: initializers, Constants, or constant chains folded with
``onnx.reference`` (torch's ``nn.LSTMCell`` inside an ``If``). The group's ``members`` are the real
tensors those values come from (so ``extract --scope`` and graft work on them), and its ``write_back``
turns converted W/R/B/P into new values of exactly those tensors (graft into an ONNX template).

Nodes whose ``Y`` feeds the next node's ``X`` through element moves that stack exactly (``links``) are one
group of several layers. Direction ``reverse``: the node runs last step first and returns ``Y`` aligned
with ``X``; Keras's ``go_backwards`` returns its outputs last step first. The group says go_backwards
(what the weights compute per step is the same) and notes the flip; reverse nodes are never stacked.
``RNN`` nodes (one ungated recurrence) and nodes with run-time weights are not groups: ``not_converted``
lists them with the reason (conversions refuse the RNN nodes' tensors: ``ungated``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError, FormatError, OutputError
from ..index import CheckpointIndex, TensorRef
from .group import RecognizeOptions, RecurrentGroup
from .onnx_facts import NodeFacts, input_notes, node_facts
from .onnx_layout import cells_from_onnx, is_model_file

__all__ = ["recognize", "ungated", "not_converted", "expand_scopes"]

_GATED = ("LSTM", "GRU")
_WEIGHTS = ("W", "R", "B", "P")


def _sources(inp) -> list[str]:
    if inp.origin in ("initializer", "constant"):
        return [inp.path]
    return [s.path for s in inp.sources] if inp.origin == "folded" else []


@dataclass
class _Layer:
    node: Any  # formats.onnx.graph.RecurrentNode
    members: list[str]
    shapes: dict[str, tuple[int, ...]]
    facts: NodeFacts

    @property
    def key(self) -> tuple:
        return (self.node.op_type, self.node.num_directions, self.shapes["R"][2], self.node.layout,
                "B" in self.shapes, "P" in self.shapes)


def _shape(inp, refs: Mapping[str, TensorRef]) -> tuple[int, ...]:
    if inp.origin in ("initializer", "constant"):
        return tuple(refs[inp.path].shape)
    return tuple(inp.value_with(refs).shape)


def _layer(index: CheckpointIndex, node) -> _Layer | None:
    roles = [r for r in _WEIGHTS if r in node.inputs]
    if _runtime_inputs(node):
        return None  # weights fed or computed at run time: not in the file (``not_converted`` says which)
    members: list[str] = []
    for role in roles:
        members += [m for m in _sources(node.inputs[role]) if m not in members]
    if not members or any(m not in index for m in members):
        return None
    refs = {m: index[m] for m in members}
    shapes = {r: _shape(node.inputs[r], refs) for r in roles if node.inputs[r].origin != "absent"}
    G, D = {"LSTM": 4, "GRU": 3}[node.op_type], node.num_directions
    w, r = shapes["W"], shapes["R"]
    H = r[2] if len(r) == 3 else -1
    want = {"W": (D, G * H, w[2] if len(w) == 3 else -1), "R": (D, G * H, H), "B": (D, 2 * G * H), "P": (D, 3 * H)}
    bad = [f"{k} {list(s)} (expected {list(want[k])})" for k, s in shapes.items() if s != want[k]]
    if node.hidden_size is not None and node.hidden_size != H:
        bad.append(f"hidden_size={node.hidden_size} but R is {list(r)}")
    if bad:
        raise FormatError(f"{index.files[0]}: {node.op_type} node {node.scope!r}: " + "; ".join(bad))
    facts = node_facts(node)
    facts.notes += input_notes(node)
    folded = [r for r in roles if node.inputs[r].origin == "folded"]
    if folded:
        ops = sorted({op for r in folded for op in node.inputs[r].ops})
        srcs = [s for r in folded for s in _sources(node.inputs[r])]
        facts.notes.append(f"node {node.scope}: {', '.join(folded)} folded from {', '.join(dict.fromkeys(srcs))} "
                           f"({', '.join(ops)})")
    return _Layer(node, members, shapes, facts)


def _runtime_inputs(node) -> list[str]:
    """The weight inputs of ``node`` that are fed or computed at run time (with the reason)."""
    out = []
    for role in (r for r in _WEIGHTS if r in node.inputs):
        inp = node.inputs[role]
        if inp.origin not in ("initializer", "constant", "folded", "absent") or (role in ("W", "R") and inp.origin == "absent"):
            out.append(f"{role} {inp.reason or inp.origin}")
    return out


def _value(inp, refs: Mapping[str, TensorRef]) -> np.ndarray | None:
    return None if inp is None or inp.origin == "absent" else np.asarray(inp.value_with(refs))


def _array_ref(path: str, arr: np.ndarray) -> TensorRef:
    return TensorRef(path=path, key=path, dtype=arr.dtype, shape=arr.shape, file="", loader=lambda: arr)


def _same_cell(a: _Layer, b: _Layer, refs: Mapping[str, TensorRef]) -> bool:
    """``b`` computes with exactly ``a``'s tensors, values and facts: one cell used by two nodes (torch's export
    of an ``nn.LSTMCell`` holds an LSTM node in each branch of an ``If``, both fed from the state-dict tensors)."""
    if set(a.members) != set(b.members) or a.key != b.key or a.shapes != b.shapes or a.facts.values != b.facts.values:
        return False
    for role in _WEIGHTS:
        va, vb = _value(a.node.inputs.get(role), refs), _value(b.node.inputs.get(role), refs)
        if (va is None) != (vb is None) or (va is not None and (va.dtype != vb.dtype or va.tobytes() != vb.tobytes())):
            return False
    return True


def _shared(layers: list[_Layer]) -> frozenset[str]:
    """The nodes (and their chains) that may change with the tensors of a cell used by several nodes."""
    if len(layers) < 2:
        return frozenset()
    return frozenset(p for layer in layers for inp in layer.node.inputs.values()
                     for p in (layer.node.scope, *inp.chain_nodes))


def _group(index: CheckpointIndex, layers: list[_Layer], uses: list[_Layer] = ()) -> RecurrentGroup:
    first = layers[0]
    node, v = first.node, first.facts.values
    kind = node.op_type.lower()
    members = list(dict.fromkeys(m for layer in layers for m in layer.members))
    prov = dict(first.facts.provenance)
    notes = [n for layer in layers for n in layer.facts.notes]
    shared = _shared([*layers, *uses])
    for use in uses:
        notes.append(f"node {use.node.scope} computes with the same tensors, values and facts (another use of this "
                     "cell): writing them back writes both nodes, each checked")
    for layer in (*layers, *uses):
        for role in _WEIGHTS:
            inp = layer.node.inputs.get(role)
            why = "" if inp is None or inp.origin == "absent" else inp.blocked(shared)
            if why:
                notes.append(f"node {layer.node.scope}: {role} cannot be written back ({why})")
    if len(layers) > 1:
        chain = ", ".join(layer.node.scope for layer in layers)
        prov["topology"] = (f"file: each node's Y feeds the next node's X ({chain}), every step's directions "
                            "concatenated: layer k reads both directions of layer k-1")
    variant = f"ONNX {node.op_type} node" if len(layers) == 1 else f"ONNX {node.op_type} nodes x{len(layers)} layers"
    group = RecurrentGroup(
        scope=node.scope, kind=kind, layout="onnx", variant=variant, input_size=first.shapes["W"][2],
        hidden_size=first.shapes["R"][2], num_layers=len(layers), directions=node.num_directions,
        bias="two" if "B" in first.shapes else "none", peepholes="P" in first.shapes,
        reset_after=v.get("reset_after"), activation=v["activation"], recurrent_activation=v["recurrent_activation"],
        go_backwards=v["go_backwards"], clip=v["clip"], input_forget=v.get("input_forget", False),
        provenance=prov, members=members, notes=notes, uses=[u.node.scope for u in uses])

    def refs() -> dict[str, TensorRef]:
        return {m: index[m] for m in members}

    def load() -> list:
        got = refs()
        return [cells_from_onnx(kind, *(_value(layer.node.inputs.get(r), got) for r in _WEIGHTS)) for layer in layers]

    def write_back(tensors: dict[str, Any]) -> dict[str, Any]:
        got, out, wanted = refs(), {}, {}
        for k, layer in enumerate(layers):
            base = "" if len(layers) == 1 else f"layer_{k}/"
            for role in _WEIGHTS:
                inp, new = layer.node.inputs.get(role), tensors.get(base + role)
                if inp is None or inp.origin == "absent":
                    if new is not None and np.any(np.asarray(new) != 0):
                        raise OutputError(f"{index.files[0]}: node {layer.node.scope} has no {role} input, and the "
                                          f"source's {role} is not zero; it cannot be dropped")
                    continue
                current = _value(inp, got)
                new = np.zeros_like(current) if new is None else np.asarray(new).astype(current.dtype)
                wanted[role] = new
                for path, arr in inp.write_back(new, shared).items():
                    if path in out and not np.array_equal(out[path], arr):
                        raise OutputError(f"{index.files[0]}: two inputs of node {layer.node.scope} ask different "
                                          f"values of {path!r}; it cannot be written back")
                    out[path] = arr
        _check_uses(index, first, uses, shared, {**got, **{p: _array_ref(p, a) for p, a in out.items()}}, wanted)
        return out

    group.load, group.write_back = load, write_back
    return group


def _check_uses(index: CheckpointIndex, first: _Layer, uses: Sequence[_Layer], shared: frozenset[str],
                new_refs: Mapping[str, TensorRef], wanted: Mapping[str, np.ndarray]) -> None:
    """Every other node using the cell computes, with the rewritten tensors, exactly the values written for the
    first one (its own chains folded again), else the write-back is refused."""
    for use in uses:
        for role in _WEIGHTS:
            inp = use.node.inputs.get(role)
            if inp is None or inp.origin == "absent":
                continue
            why = inp.blocked(shared)
            got = None if why else _value(inp, new_refs)
            want = wanted.get(role)
            if why or want is None or got.dtype != want.dtype or got.tobytes() != np.ascontiguousarray(want).tobytes():
                raise OutputError(
                    f"{index.files[0]}: node {use.node.scope} computes with the same tensors as {first.node.scope}, "
                    f"but its {role} " + (f"cannot be written back ({why})" if why else
                                          "would not get the values written for it") + "; refused")


def _stackable(a: _Layer, b: _Layer) -> bool:
    """``b`` can be layer k+1 above ``a``: same kind, sizes and every computation fact; reads a's width."""
    va, vb = a.facts.values, b.facts.values
    return (a.key == b.key and va == vb and not va["go_backwards"]
            and b.shapes["W"][2] == a.node.num_directions * a.shapes["R"][2]
            and not any(s.startswith("missing") for s in (*a.facts.provenance.values(), *b.facts.provenance.values())))


def _model_nodes(index: CheckpointIndex) -> tuple[Any, list]:
    from ..formats.onnx.graph import describe_recurrent
    from ..formats.onnx.onnx_fmt import load_model

    model = load_model(index.files[0])
    return model, describe_recurrent(model)


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    if not is_model_file(index):
        return []
    from ..formats.onnx.links import layer_links

    model, nodes = _model_nodes(index)
    layers = [(n, _layer(index, n)) for n in nodes if n.op_type in _GATED]
    found = [(n, layer) for n, layer in layers if layer is not None]
    if not found:
        return []
    links = layer_links(model, [n for n, _ in found], [layer.shapes["R"][2] for _, layer in found])
    links = {k: j for k, j in links.items() if _stackable(found[j][1], found[k][1])}
    above = {j: k for k, j in links.items()}
    stacks: list[list[_Layer]] = []
    for k, (_, layer) in enumerate(found):
        if k in links:
            continue  # a layer above another: part of that stack
        stack = [layer]
        while k in above:
            k = above[k]
            stack.append(found[k][1])
        stacks.append(stack)
    uses: dict[int, list[_Layer]] = {}
    kept: list[list[_Layer]] = []
    for stack in stacks:
        owner = next((i for i, s in enumerate(kept) if len(s) == len(stack) == 1 and _same_cell(
            s[0], stack[0], {m: index[m] for m in stack[0].members})), None)
        if owner is None:
            kept.append(stack)
        else:
            uses.setdefault(owner, []).append(stack[0])
    return [_group(index, stack, uses.get(i, [])) for i, stack in enumerate(kept)]


def not_converted(index: CheckpointIndex) -> list[tuple[str, str, list[str], str]]:
    """Recurrent nodes of an ONNX model that are no group: ``RNN`` nodes whose weights are in ``index`` (refused
    by conversions) and LSTM/GRU nodes whose weights are fed or computed at run time. (scope, op, tensors, why)."""
    if not is_model_file(index):
        return []
    try:
        _, nodes = _model_nodes(index)
    except CheckpointError:
        return []
    out = []
    for node in nodes:
        members = [m for r in _WEIGHTS if r in node.inputs for m in _sources(node.inputs[r])]
        runtime = _runtime_inputs(node)
        if node.op_type == "RNN" and members and all(m in index for m in members) and not runtime:
            acts = ", ".join(node.activations)
            out.append((node.scope, "RNN", members, f"it is an ONNX RNN node (one ungated recurrence, activations "
                                                    f"{acts}); ckptsurgeon converts gated layers (LSTM, GRU) only"))
        elif node.op_type in _GATED and runtime:
            out.append((node.scope, node.op_type, members, "its weights are not in the file: " + "; ".join(runtime)))
    from ..formats.onnx.graph import quantized_recurrent

    quantized = quantized_recurrent(index.files[0])
    by_key = {ref.key: path for path, ref in index.items()} if quantized else {}
    for scope, op, inputs, what in quantized:
        held = [by_key[name] for name in inputs if name in by_key]
        out.append((scope, op, held, f"a quantized LSTM ({what}): its tensors are listed and extracted exactly; "
                                     "converting quantized weights is not supported"))
    return out


def ungated(index: CheckpointIndex) -> list[tuple[str, list[str], str]]:
    """ONNX ``RNN`` nodes whose weights are in ``index``: (node scope, their tensors, why conversions refuse them)."""
    return [(scope, members, why) for scope, op, members, why in not_converted(index) if op == "RNN"]


def _escape(path: str, regex: bool) -> str:
    if regex:
        return re.escape(path)
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def expand_scopes(index: CheckpointIndex, patterns: tuple[str, ...], regex: bool = False, *,
                  always: bool = True) -> tuple[str, ...]:
    """Selection patterns with each recurrent node group they match (by its node scope) standing for its
    tensors: ``--scope rnn/LSTM`` selects the initializers (or folded sources) that node reads; a TFLite LSTM
    op's group (named by its output) the tensors it reads likewise. With ``always=False`` only patterns that
    select no tensor themselves are looked at (no recognition otherwise)."""
    if not patterns or not (index.format == "tflite" or is_model_file(index)):
        return patterns
    from ..scopes import compile_glob, compile_regex, matches

    compile_ = compile_regex if regex else compile_glob
    if not always and all(any(matches(compile_(p), path) for path in index) for p in patterns):
        return patterns
    try:
        if index.format == "tflite":
            from .recognize import recognize as recognize_any  # every adapter (here: the TFLite graph's)

            groups = recognize_any(index, RecognizeOptions())
        else:
            groups = recognize(index, RecognizeOptions())
    except CheckpointError:
        return patterns
    out: list[str] = []
    for pattern in patterns:
        rx = compile_(pattern)
        hits = [g for g in groups if any(matches(rx, s) for s in (g.scope, *g.uses))]
        if not hits or any(matches(rx, path) for path in index):
            out.append(pattern)  # it selects tensors itself (or nothing at all: select says so)
        out += [_escape(m, regex) for g in hits for m in g.members]
    return tuple(dict.fromkeys(out))
