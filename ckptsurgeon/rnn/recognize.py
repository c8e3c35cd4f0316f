"""Find every recurrent parameter group in an index (each tensor belongs to at most one group)."""
from __future__ import annotations

import re
from dataclasses import replace

from ..index import CheckpointIndex
from . import gates_layout, keras_layout, onnx_graph, onnx_layout, pergate_layout, tf1_layout, torch_layout
from .facts import apply_flags, apply_stated, stated
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "ADAPTERS"]

# An ONNX model's graph first (its nodes state everything; their tensors are claimed before any name-based
# adapter sees them), then the most specific naming first.
ADAPTERS = (onnx_graph, gates_layout, torch_layout, tf1_layout, keras_layout, pergate_layout, onnx_layout)


def recognize(index: CheckpointIndex, options: RecognizeOptions | None = None) -> list[RecurrentGroup]:
    """Recurrent groups in ``index``, in the order their first tensor appears.

    Each group's facts come from the file (names, shapes, config, ckptsurgeon's own ``rnn:<scope>``
    description), else a documented version default, else ``options`` (the user's flags); see ``facts``.
    """
    options = options or RecognizeOptions()
    claimed: set[str] = set()
    groups: list[RecurrentGroup] = []
    for adapter in ADAPTERS:
        for group in adapter.recognize(index, options):
            if claimed.isdisjoint(group.members):
                claimed.update(group.members)
                groups.append(group)
    pos = {p: i for i, p in enumerate(index)}
    groups = merge_layers(groups, index)
    in_graph = onnx_layout.is_model_file(index)
    for group in groups:
        apply_stated(group, index)
        apply_flags(group, options)
        if in_graph and group.layout != "onnx":  # torch's dynamo export of nn.LSTMCell: Gemm, Sigmoid, Tanh ...
            group.notes.append(f"recognized by its tensors' names ({group.variant}); no LSTM/GRU node of the graph "
                               "uses them: the ops computing with them are not checked against that layout")
    groups.sort(key=lambda g: min(pos[m] for m in g.members))
    return groups


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
