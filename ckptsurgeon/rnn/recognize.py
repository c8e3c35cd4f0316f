"""Find every recurrent parameter group in an index (each tensor belongs to at most one group)."""
from __future__ import annotations

import re
from dataclasses import replace

from ..index import CheckpointIndex
from ..formats.tflite import recurrent as tflite_graph
from . import flax_layout, gates_layout, keras_layout, onnx_graph, onnx_layout, pergate_layout, tf1_layout, torch_layout
from .facts import apply_flags, apply_stated, stated
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "ADAPTERS"]

# An ONNX model's graph first (its nodes state everything; their tensors are claimed before any name-based
# adapter sees them), then the most specific naming first.
ADAPTERS = (onnx_graph, tflite_graph, gates_layout, torch_layout, flax_layout, tf1_layout, keras_layout, pergate_layout, onnx_layout)


def recognize(index: CheckpointIndex, options: RecognizeOptions | None = None) -> list[RecurrentGroup]:
    """Recurrent groups in ``index``, in the order their first tensor appears.

    Each group's facts come from the file (names, shapes, config, ckptsurgeon's own ``rnn:<scope>``
    description), else a documented version default, else ``options`` (the user's flags); see ``facts``.
    """
    options = options or RecognizeOptions()
    if any(ref.optimizer for ref in index.values()):  # optimizer slots (Adam's m and v of an LSTM) are never layers
        index = index.select(include_optimizer=False)
    claimed: set[str] = set()
    groups: list[RecurrentGroup] = []
    for adapter in ADAPTERS:
        for group in adapter.recognize(index, options):
            if claimed.isdisjoint(group.members):
                claimed.update(group.members)
                groups.append(group)
    pos = {p: i for i, p in enumerate(index)}
    groups = merge_layers(groups, index)
    for group in groups:
        _account(group, index, claimed)
    in_graph = onnx_layout.is_model_file(index)
    for group in groups:
        apply_stated(group, index)
        apply_flags(group, options)
        if in_graph and group.layout != "onnx":  # torch's dynamo export of nn.LSTMCell: Gemm, Sigmoid, Tanh ...
            group.notes.append(f"recognized by its tensors' names ({group.variant}); no LSTM/GRU node of the graph "
                               "uses them: the ops computing with them are not checked against that layout")
    groups.sort(key=lambda g: min(pos[m] for m in g.members))
    return groups


# Layouts read by tensor names: their group's extent is its members' common scope, and every other tensor there
# must be explained. (ONNX graph groups are a node's inputs, wherever they are named.)
_NAMED = frozenset({"torch", "torch-cell", "tf1", "tf1-gru", "keras", "keras-cudnn", "keras1", "per-gate", "gates"})
_SHOWN = 6


def _common_scope(paths: list[str]) -> str:
    parts = [p.split("/")[:-1] for p in paths]
    common = parts[0]
    for segs in parts[1:]:
        n = 0
        while n < min(len(common), len(segs)) and common[n] == segs[n]:
            n += 1
        common = common[:n]
    return "/".join(common)


def _account(group: RecurrentGroup, index: CheckpointIndex, claimed: set[str]) -> None:
    """Every tensor inside the group's extent is one of its own (or another group's), else the group is refused:
    a LayerNorm LSTM cell holds nn.LSTMCell's names and more, and computes something else."""
    if group.layout not in _NAMED or not group.members:
        return
    scope = _common_scope(group.members)
    under = scope + "/" if scope else ""
    extra = [p for p in index if p.startswith(under) and p not in claimed]
    if extra:
        shown = ", ".join(extra[:_SHOWN]) + (f" and {len(extra) - _SHOWN} more" if len(extra) > _SHOWN else "")
        group.provenance["tensors"] = (
            f"missing: {len(extra)} tensor(s) in its scope {scope or '/'} that a {group.variant} does not have ({shown}): "
            "a variant that computes something else (layer norm, residual, attention ...); convert it only if they play "
            "no part, by leaving them out (--exclude)")


_LAYER = re.compile(r"^(?:(.*)/)?layer_(\d+)$")


def merge_layers(groups: list[RecurrentGroup], index: CheckpointIndex) -> list[RecurrentGroup]:
    """``<scope>/layer_0``, ``layer_1`` ... -> one stacked group, where the file states that stack: ckptsurgeon's own
    ``rnn:<scope>`` description of an N-layer group (``extract --to keras|onnx`` writes one layer per op). Names
    alone never stack layers: two parallel LSTMs named ``layer_0`` and ``layer_1`` are two groups (graft and
    verify pair a stack with such layers when asked, ``rnn.pairing``)."""
    stacks: dict[str, dict[int, RecurrentGroup]] = {}
    for g in groups:
        m = _LAYER.match(g.scope)
        if m:
            stacks.setdefault(m.group(1) or "", {})[int(m.group(2))] = g
    merged, used = [], set()
    for scope, layers in stacks.items():
        order = [layers[k] for k in sorted(layers)]
        first = order[0]
        width = first.directions * (first.proj_size or first.hidden_size)
        fits = sorted(layers) == list(range(len(order))) and len(order) > 1 and all(
            _same(g, first) and g.input_size == width for g in order[1:]) and not any(g.go_backwards for g in order)
        desc = stated(index, scope)
        if not fits or desc is None or desc.get("num_layers") != len(order):
            continue
        group = replace(first, scope=scope, num_layers=len(order), members=[m for g in order for m in g.members],
                        notes=[n for g in order for n in g.notes], variant=f"{first.variant} x{len(order)} layers",
                        provenance=dict(first.provenance))
        group.load = lambda order=order: [g.load()[0] for g in order]
        merged.append(group)
        used.update(id(g) for g in order)
    return [g for g in groups if id(g) not in used] + merged


def _same(g: RecurrentGroup, first: RecurrentGroup) -> bool:
    """Layers that can be one stacked group: same kind, sizes, layout and every computation fact."""
    keys = ("kind", "hidden_size", "directions", "reset_after", "layout", "activation", "recurrent_activation",
            "merge_mode", "proj_size", "bias", "clip", "input_forget")
    return all(getattr(g, k) == getattr(first, k) for k in keys)
