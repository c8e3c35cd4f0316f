"""Find every recurrent parameter group in an index (each tensor belongs to at most one group)."""
from __future__ import annotations

import re
from dataclasses import replace

from ..index import CheckpointIndex
from . import keras_layout, onnx_layout, pergate_layout, tf1_layout, torch_layout
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "ADAPTERS"]

# Most specific naming first.
ADAPTERS = (torch_layout, tf1_layout, keras_layout, pergate_layout, onnx_layout)


def recognize(index: CheckpointIndex, options: RecognizeOptions | None = None) -> list[RecurrentGroup]:
    """Recurrent groups in ``index``, in the order their first tensor appears."""
    options = options or RecognizeOptions()
    claimed: set[str] = set()
    groups: list[RecurrentGroup] = []
    for adapter in ADAPTERS:
        for group in adapter.recognize(index, options):
            if claimed.isdisjoint(group.members):
                claimed.update(group.members)
                groups.append(group)
    pos = {p: i for i, p in enumerate(index)}
    groups = merge_layers(groups)
    groups.sort(key=lambda g: min(pos[m] for m in g.members))
    return groups


_LAYER = re.compile(r"^(.*)/layer_(\d+)$")


def merge_layers(groups: list[RecurrentGroup]) -> list[RecurrentGroup]:
    """``<scope>/layer_0``, ``layer_1`` ... (one layer per op in Keras and ONNX) -> one stacked group."""
    stacks: dict[str, dict[int, RecurrentGroup]] = {}
    for g in groups:
        m = _LAYER.match(g.scope)
        if m:
            stacks.setdefault(m.group(1), {})[int(m.group(2))] = g
    merged, used = [], set()
    for scope, layers in stacks.items():
        order = [layers[k] for k in sorted(layers)]
        first = order[0]
        width = first.directions * (first.proj_size or first.hidden_size)
        fits = sorted(layers) == list(range(len(order))) and len(order) > 1 and all(
            (g.kind, g.hidden_size, g.directions, g.reset_after, g.layout) ==
            (first.kind, first.hidden_size, first.directions, first.reset_after, first.layout)
            and g.input_size == width for g in order[1:])
        if not fits:
            continue
        group = replace(first, scope=scope, num_layers=len(order), members=[m for g in order for m in g.members],
                        notes=[n for g in order for n in g.notes], variant=f"{first.variant} x{len(order)} layers")
        group.load = lambda order=order: [g.cells()[0] for g in order]
        merged.append(group)
        used.update(id(g) for g in order)
    return [g for g in groups if id(g) not in used] + merged
