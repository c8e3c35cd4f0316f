"""Numeric equivalence of recurrent groups: run both on the same random inputs with the reference cells.

- ``check_pair(a, b)``: two recognized groups (each with its own semantics: activations, family,
  forget_bias, topology, go_backwards);
- ``verify(index_a, index_b)``: every group of two checkpoints, paired by scope, else in order;
- ``read_back(converted)`` / ``verify_converted(converted)``: a conversion's tensors and self-description
  recognized again from memory and checked against what the source computes (what ``extract --to``,
  ``graft`` and ``load_into`` do before writing anything).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import CheckpointError, SelectionError
from ..index import CheckpointIndex, memory_index
from .cell import Stack
from .group import RecognizeOptions, RecurrentGroup
from .recognize import recognize
from .reference import run_stack

__all__ = ["PROVES", "GroupCheck", "source_facts", "check_pair", "check_stacks", "merged", "verify", "read_back", "verify_converted"]


# What a passing check proves, in the words the CLI and the README use.
PROVES = ("both sides, as ckptsurgeon reads them, compute the same outputs on the same random inputs: the "
          "conversion reproduces the source as read; whether the source was read as its framework runs it rests "
          "on the facts listed and where each came from")


@dataclass
class GroupCheck:
    """One verified pair: source and converted scope, kind, the largest output difference, whether it is within
    ``atol``, the source facts it ran on (each with where it came from) and, on a failure, the stated fact that differs."""

    source: str
    converted: str
    kind: str
    max_abs_diff: float
    ok: bool
    atol: float = 1e-5
    facts: dict[str, str] = field(default_factory=dict)  # fact -> "value (where it came from)", the source's
    reason: str = ""  # why the outputs differ, when a stated fact explains it

    def as_dict(self) -> dict:
        return asdict(self)


def source_facts(g: RecurrentGroup) -> dict[str, str]:
    """The facts that decide what ``g`` computes, each with where it came from (``rnn`` prints the same)."""
    described = g.describe()
    return {fact: f"{described.get(fact, getattr(g, fact, None))} ({where})" for fact, where in g.provenance.items()}


def _why(a: RecurrentGroup, b: RecurrentGroup) -> str:
    """The stated facts that make ``a`` and ``b`` compute different things, if any."""
    da, db = a.describe(), b.describe()
    diffs = [f"{k} {da.get(k)} vs {db.get(k)}" for k in
             ("activation", "recurrent_activation", "family", "go_backwards", "merge_mode", "forget_bias")
             if da.get(k) != db.get(k) and not (k == "family" and a.kind != "gru")]
    return "; ".join(diffs)


def _signature(g: RecurrentGroup) -> tuple:
    return (g.kind, g.input_size, g.hidden_size, g.num_layers, g.directions, g.proj_size)


def merged(y: np.ndarray, mode: str | None) -> np.ndarray:
    """A Keras Bidirectional's output from both directions' outputs (concatenated): sum, mul, ave; else as is."""
    if mode not in ("sum", "mul", "ave"):
        return y
    fw, bw = np.split(y, 2, axis=-1)
    return fw + bw if mode == "sum" else fw * bw if mode == "mul" else (fw + bw) / 2


def check_stacks(a: Stack, b: Stack, input_size: int, *, steps: int = 7, batch: int = 3, seed: int = 0,
                 merges: tuple[str | None, str | None] = (None, None)) -> float:
    """Largest output difference of two stacks on the same random input (float64 reference cells); ``merges``: each
    side's Keras Bidirectional merge_mode, applied to its output (a concat and a sum of the same weights differ)."""
    x = np.random.default_rng(seed).standard_normal((steps, batch, input_size))
    ya, yb = merged(run_stack(a, x), merges[0]), merged(run_stack(b, x), merges[1])
    if ya.shape != yb.shape:
        return float("inf")
    return float(np.max(np.abs(ya - yb)))


def check_pair(a: RecurrentGroup, b: RecurrentGroup, *, atol: float = 1e-5, steps: int = 7, batch: int = 3,
               seed: int = 0, a_stack: Stack | None = None) -> GroupCheck:
    """Run ``a`` (or ``a_stack``, what ``a`` is meant to compute) and ``b`` on the same inputs."""
    if _signature(a) != _signature(b):
        raise SelectionError(f"groups {a.scope!r} and {b.scope!r} differ in kind or sizes: {_signature(a)} vs {_signature(b)}")
    for g in ((a, b) if a_stack is None else (b,)):
        unsettled = g.unsettled()
        if unsettled:
            fact, source = next(iter(unsettled.items()))
            detail = source.split(":", 1)[-1].strip() if source.startswith("missing:") else f"its {fact} is not known ({source})"
            raise SelectionError(f"group {g.scope or '/'}: {detail}; it cannot be run")
    try:
        # two Keras Bidirectionals (verify A B): each computes its own merge of the directions; a conversion's check
        # (a_stack) compares directions as its refusals and --allow-concat-merge settled them
        both = a_stack is None and a.merge_mode is not None and b.merge_mode is not None
        diff = check_stacks(a.cells() if a_stack is None else a_stack, b.cells(), a.input_size,
                            steps=steps, batch=batch, seed=seed, merges=(a.merge_mode, b.merge_mode) if both else (None, None))
    except CheckpointError as exc:
        raise SelectionError(f"{a.scope or '/'} -> {b.scope or '/'}: {exc}") from None
    ok = diff <= atol
    return GroupCheck(a.scope, b.scope, a.kind, diff, ok, atol, source_facts(a), "" if ok else _why(a, b))


def _pairs(ga: list[RecurrentGroup], gb: list[RecurrentGroup]) -> list[tuple[RecurrentGroup, RecurrentGroup]]:
    by_scope = {g.scope: g for g in gb}
    if all(g.scope in by_scope for g in ga) and len(ga) == len(gb):
        return [(g, by_scope[g.scope]) for g in ga]
    return list(zip(ga, gb))


def verify(a: CheckpointIndex, b: CheckpointIndex, *, atol: float = 1e-5, steps: int = 7, batch: int = 3,
           seed: int = 0, options_a: RecognizeOptions | None = None,
           options_b: RecognizeOptions | None = None) -> list[GroupCheck]:
    """One row per paired group; groups pair by scope (else in order) and must agree in kind and sizes."""
    ga, gb = recognize(a, options_a), recognize(b, options_b)
    if not ga:
        raise SelectionError(f"{a.files[0]}: no recurrent group found to verify")
    if len(ga) != len(gb):
        joined = _stack_and_layers(ga, gb, b) or _stack_and_layers(gb, ga, a)[::-1]
        if not joined:
            raise SelectionError(f"{a.files[0]} has {len(ga)} recurrent group(s), {b.files[0]} has {len(gb)}; "
                                 "narrow both with --scope (a stack pairs with its layers only when they are all "
                                 "there is: one N-layer group and N one-layer groups that chain)")
        ga, gb = [joined[0]], [joined[1]]
    try:
        return [check_pair(x, y, atol=atol, steps=steps, batch=batch, seed=seed + i)
                for i, (x, y) in enumerate(_pairs(ga, gb))]
    except SelectionError as exc:  # name the files: a group's scope alone does not say which side it is
        raise SelectionError(f"{a.files[0]} vs {b.files[0]}: {exc}") from None


def _stack_and_layers(ga: list[RecurrentGroup], gb: list[RecurrentGroup], b: CheckpointIndex) -> list[RecurrentGroup]:
    """[the one stack of ``ga``, the one-layer groups of ``gb`` chained in the order ``b`` runs them], when that is
    what they are and the order is known (``pairing.ordered_layers``)."""
    from .layers import chainable, join_layers
    from .pairing import ordered_layers

    if len(ga) != 1 or ga[0].num_layers != len(gb) or len(gb) < 2 or any(g.num_layers != 1 for g in gb):
        return []
    if chainable(gb) is not None:
        return []
    ordered = ordered_layers(gb, ga[0].input_size, b)
    if ordered is None:
        raise SelectionError(f"{b.files[0]}: its {len(gb)} one-layer groups ({', '.join(g.scope for g in gb)}) could be "
                             f"the layers of {ga[0].scope or '/'}, but nothing in the file tells the order its model runs "
                             "them in; compare one layer at a time with --scope")
    return [ga[0], join_layers(ordered)]


def read_back(converted, options: RecognizeOptions | None = None) -> RecurrentGroup:
    """The converted group as a reader of the output would recognize it (tensors + self-description)."""
    scope = converted.group.scope
    tensors = converted.tensors if converted.complete is None else converted.complete
    rows = [((f"{scope}/{rel}" if scope else rel), rel, arr) for rel, arr in tensors.items()]
    index = memory_index(rows, format=converted.target, file=f"<{converted.target} output>", key_sep="/")
    index.metadata["__metadata__"] = converted.stated()
    groups = [g for g in recognize(index, options) if g.scope == scope]
    if len(groups) != 1:
        raise SelectionError(f"{scope or '/'}: the {converted.target} output does not read back as one group "
                             f"(found {[g.scope for g in groups]})")
    return groups[0]


def verify_converted(converted, *, atol: float = 1e-5, seed: int = 0) -> GroupCheck:
    """A conversion's output, read back, computes what the source computes (what it was meant to compute)."""
    back = read_back(converted)
    return check_pair(converted.group, back, atol=atol, seed=seed, a_stack=converted.reference)
