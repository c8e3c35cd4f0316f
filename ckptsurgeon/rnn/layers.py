"""One N-layer stack seen as N one-layer groups, and N one-layer groups chained into one stack.

PyTorch (``num_layers=N``), TF1 (``MultiRNNCell``) and ONNX stacks hold N layers in one group; Keras spells
the same network as N ``LSTM``/``Bidirectional`` layers, each its own group. Layer k of an interleaved stack
reads every direction of layer k-1 concatenated, which is exactly what a Keras layer with
``merge_mode='concat'`` hands the next one, so the two are the same function layer for layer. What would
break that equality is refused: independent directional stacks (TF1 ``bidirectional_dynamic_rnn`` over
``MultiRNNCell``s), merges other than concatenation, ``go_backwards``, layers whose facts or sizes differ.
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import SelectionError
from .cell import Stack
from .group import RecurrentGroup

__all__ = ["split_layers", "join_layers", "chainable", "layer_scope"]

# Facts every layer of one stack shares (a stack group states them once).
_SHARED = ("kind", "layout", "hidden_size", "directions", "proj_size", "bias", "peepholes", "reset_after", "forget_bias",
           "activation", "recurrent_activation", "cell_clip", "proj_clip", "clip", "input_forget")


def layer_scope(group: RecurrentGroup, k: int) -> str:
    """How layer ``k`` of a stack is named in reports: ``rnn[layer 1]``."""
    return f"{group.scope or '/'}[layer {k}]"


def _why_not(group: RecurrentGroup) -> str | None:
    if group.go_backwards:
        return f"{group.scope or '/'} runs backwards (go_backwards=True), which no stack of layers computes"
    if group.directions == 2 and group.num_layers > 1 and group.topology == "independent":
        return (f"{group.scope or '/'} holds two independent directional stacks (layer k of fw reads only fw), while "
                "one-layer bidirectional layers each read both directions of the layer before")
    if group.directions == 2 and group.merge_mode not in (None, "concat"):
        return (f"{group.scope or '/'} merges its directions with merge_mode={group.merge_mode!r}, while a stack's next "
                "layer reads them concatenated")
    return None


def split_layers(group: RecurrentGroup) -> list[RecurrentGroup]:
    """The layers of ``group`` as one-layer groups, each computing what that layer computes in the stack."""
    why = _why_not(group)
    if why:
        raise SelectionError(f"cannot split {group.scope or '/'} into layers: {why}")
    out = []
    width = group.directions * (group.proj_size or group.hidden_size)
    for k in range(group.num_layers):
        def load(k: int = k) -> Stack:
            stack = group.cells()
            return Stack([stack[k]], stack.topology, stack.go_backwards)

        out.append(replace(group, scope=layer_scope(group, k), num_layers=1, input_size=group.input_size if k == 0 else width,
                           load=load, provenance=dict(group.provenance), notes=list(group.notes),
                           members=list(group.members)))
    return out


def chainable(groups: list[RecurrentGroup]) -> str | None:
    """Why ``groups`` (one layer each, in order) do not form one stack, or None when they do."""
    if len(groups) < 2:
        return "a stack needs two or more layers"
    first = groups[0]
    width = first.directions * (first.proj_size or first.hidden_size)
    for g in groups:
        why = _why_not(g)
        if why:
            return why
        if g.num_layers != 1:
            return f"{g.scope or '/'} has {g.num_layers} layers; name its layers one by one"
        differ = [f for f in _SHARED if f != "layout" and getattr(g, f) != getattr(first, f)]
        if differ:
            return (f"{g.scope or '/'} and {first.scope or '/'} differ in {', '.join(differ)}, so they are not the "
                    "layers of one stack")
    for prev, g in zip(groups, groups[1:]):
        if g.input_size != width:
            return f"{g.scope or '/'} reads {g.input_size} features but {prev.scope or '/'} gives {width}"
    return None


def join_layers(groups: list[RecurrentGroup], scope: str | None = None) -> RecurrentGroup:
    """One-layer groups chained in order as one stack group (the first group's facts and provenance)."""
    why = chainable(groups)
    if why:
        raise SelectionError(f"cannot chain {', '.join(g.scope or '/' for g in groups)} into one stack: {why}")

    def load() -> Stack:
        layers = [layer for g in groups for layer in g.cells()]
        return Stack(layers, "interleaved", False)

    first = groups[0]
    return replace(first, scope=scope if scope is not None else ",".join(g.scope or "/" for g in groups),
                   num_layers=len(groups), topology="interleaved", load=load, provenance=dict(first.provenance),
                   members=[m for g in groups for m in g.members], notes=[n for g in groups for n in g.notes])
