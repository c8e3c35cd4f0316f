"""The explicit rule table: which conversions must be refused, and what the refusal must name.

Each case of the suite ends in an exact match or in a refusal; a refusal is expected only when a rule
here says so, from what the source really computes (``Truth``, known from how the suite built it,
never from what ckptsurgeon recognized). An unexpected refusal fails, and so does a conversion that
goes through where a rule expects a refusal.

Precedence (as ``refusals`` reports them): facts the file cannot settle come alone; then every
structural reason; activations the target cannot compute are named only when nothing else is wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Truth", "Rule", "RULES", "expected", "match_reasons", "ACTIVATION_FREE", "OVER_REFUSED"]


@dataclass(frozen=True)
class Truth:
    """What a source group computes, as the suite built it."""

    kind: str
    layers: int = 1
    directions: int = 1
    reset_after: bool = True
    peepholes: bool = False
    proj: int = 0
    go_backwards: bool = False  # one direction, Keras
    forward_backwards: bool = False  # Keras Bidirectional whose forward layer runs backwards
    merge_mode: str | None = None  # Keras Bidirectional
    activation: str | None = "tanh"  # formula names; None: no reference formula
    recurrent_activation: str | None = "sigmoid"
    topology: str = "interleaved"
    clip: bool = False  # TF1 cell_clip / proj_clip
    halves_differ: bool = False  # Keras Bidirectional whose two layers compute different things
    missing: tuple[str, ...] = ()  # facts nothing settles (flags not passed)
    widths_differ: bool = False  # TF1 MultiRNNCell of layers of different widths
    cells_differ: bool = False  # TF1 cells whose MetaGraph shows different run-time facts (forget_bias ...)
    allow_concat_merge: bool = False  # the user passed --allow-concat-merge
    unexplained: bool = False  # tensors its layout does not explain (a LayerNorm cell), or layers missing (0, 2)


@dataclass(frozen=True)
class Rule:
    name: str
    label: str  # the matrix's words
    tier: int  # 0: unsettled facts (reported alone), 1: structural, 2: activations (only when nothing else)
    pattern: str  # what the refusal reason must say (regex)
    applies: object  # (Truth, target) -> bool


# Targets that carry any activation with a reference formula. flax: linen LSTMCell/GRUCell take gate_fn= and
# activation_fn= (any jax function; the params store neither, like TF1's activation=).
ACTIVATION_FREE = {"keras", "gates", "flax"}
# What the target framework computes but ckptsurgeon refuses (the conformance campaign's findings, reported there):
# an over-refusal is no silent wrong result, so the suite expects it, and the matrix marks it; remove the entry
# when convert.py converts it (the suite then runs it in the real framework: cf_fw_side.py builds these models).
OVER_REFUSED: dict[tuple[str, str], str] = {
    ("paddle", "projection"): "paddle.nn.LSTM(proj_size=...) computes it; ckptsurgeon refuses (a paddle 3.3 "
                              "state-dict naming defect, per convert.py)",
}


def _over(target: str, name: str) -> bool:
    return (target, name) in OVER_REFUSED


_ONNX = {"sigmoid", "tanh", "hard_sigmoid_keras2", "hard_sigmoid_keras3", "relu", "linear", "softsign", "softplus"}


def _activations_fit(t: Truth, target: str) -> bool:
    pair = (t.recurrent_activation, t.activation)
    if target in ACTIVATION_FREE:
        return True
    if target == "onnx":
        return all(a in _ONNX for a in pair)
    if target == "tf1":  # TF1 cells: sigmoid gates, any activation= (the cells' constructor argument)
        return t.recurrent_activation == "sigmoid"
    return pair == ("sigmoid", "tanh")  # torch, torch-cell, paddle (paddle/nn/layer/rnn.py: F.sigmoid, paddle.tanh)


RULES: tuple[Rule, ...] = (
    Rule("missing", "a fact the file does not state and no flag declares", 0, r"pass --",
         lambda t, target: bool(t.missing)),
    Rule("unexplained", "tensors the layout does not explain, or missing layers", 0,
         r"(that a \S+ does not have|its layers are numbered)", lambda t, target: t.unexplained),
    Rule("halves", "Keras Bidirectional halves that differ", 0, r"(forward and backward layers differ|layers differ)",
         lambda t, target: t.halves_differ),
    Rule("widths", "TF1 layers of different widths", 0, r"different widths",
         lambda t, target: t.widths_differ),
    Rule("cells_differ", "TF1 cells whose MetaGraph facts differ", 0, r"its cells disagree",
         lambda t, target: t.cells_differ),
    Rule("reset_before", "reset-before GRU", 1, r"reset-before GRU",
         lambda t, target: t.kind == "gru" and not t.reset_after and target in ("torch", "torch-cell", "flax", "paddle")),
    Rule("reset_after", "reset-after GRU", 1, r"reset-after GRU",
         lambda t, target: t.kind == "gru" and t.reset_after and target == "tf1"),
    Rule("peepholes", "peepholes", 1, r"peephole",
         lambda t, target: t.peepholes and target in ("torch", "torch-cell", "keras", "flax", "paddle")),
    Rule("projection", "projection", 1, r"projection",
         lambda t, target: t.proj > 0 and (target in ("torch-cell", "keras", "onnx", "flax") or _over(target, "projection"))),
    Rule("one_cell", "a stack or two directions into one cell", 1, r"holds one",
         lambda t, target: target == "torch-cell" and (t.layers > 1 or t.directions > 1)),
    Rule("independent", "independent bidirectional stacks", 1, r"independent stacks",
         lambda t, target: t.topology == "independent" and t.layers > 1 and t.directions == 2
         and target not in ("tf1", "gates")),
    Rule("forward_backwards", "Bidirectional whose forward layer runs backwards", 1, r"forward layer has go_backwards",
         lambda t, target: t.forward_backwards),
    Rule("go_backwards", "go_backwards", 1, r"runs backwards",
         lambda t, target: t.go_backwards and not t.forward_backwards
         and (target in ("torch", "torch-cell", "tf1", "paddle") or _over(target, "go_backwards"))),
    Rule("no_formula", "an activation without a reference formula", 1, r"no reference formula",
         lambda t, target: t.activation is None or t.recurrent_activation is None),
    Rule("clip", "TF1 cell_clip / proj_clip", 1, r"it clips \(",
         lambda t, target: t.clip and target not in ("tf1", "gates")),
    Rule("merge", "Keras merge_mode sum / mul / ave", 1, r"--allow-concat-merge",
         lambda t, target: t.directions == 2 and t.merge_mode in ("sum", "mul", "ave") and not t.allow_concat_merge
         and (target in ("torch", "torch-cell", "tf1", "onnx", "paddle") or _over(target, "merge"))),
    Rule("activations", "activations the target's cells do not compute", 2, r"--allow-approx",
         lambda t, target: t.activation is not None and t.recurrent_activation is not None
         and (not _activations_fit(t, target)
              or (_over(target, "activations") and (t.recurrent_activation, t.activation) != ("sigmoid", "tanh")))),
)
_BY_NAME = {r.name: r for r in RULES}


def expected(truth: Truth, target: str) -> list[str]:
    """The rules that must refuse ``target`` for this source (empty: the conversion must be exact)."""
    hits = [r for r in RULES if r.applies(truth, target)]
    for tier in (0, 1, 2):
        found = [r.name for r in hits if r.tier == tier]
        if found:
            return found
    return []


def match_reasons(reasons: list[str]) -> list[str | None]:
    """The rule each refusal reason belongs to (None: a reason no rule names)."""
    out = []
    for reason in reasons:
        names = [r.name for r in RULES if re.search(r.pattern, reason)]
        # "missing" patterns ("pass --x") also appear inside other reasons: prefer the specific rule
        specific = [n for n in names if n != "missing"]
        out.append(specific[0] if specific else (names[0] if names else None))
    return out


def label(name: str) -> str:
    return _BY_NAME[name].label
