"""Pair the recurrent groups of two checkpoints by scope and meaning, never by file order.

Rounds, each only among groups still unpaired:
1. the same scope path;
2. the same normalized scope (lower case, container prefixes such as ``state_dict/`` or ``module/``
   dropped, segments joined with ``_``: ``encoder/rnn`` pairs with ``encoder_rnn``), when exactly
   one group on each side has it;
3. the same kind and sizes, when exactly one unpaired group on each side has them;
4. the only group left unpaired on each side (they differ in kind or sizes, and are reported so).
What is left is only in A or only in B. Every pair says how it was made.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GroupPair", "pair_groups", "normalize_scope", "SIGNATURE_FIELDS"]

# The fields that must agree for two groups to be the same computation's parameters.
SIGNATURE_FIELDS = ("kind", "input_size", "hidden_size", "proj_size", "num_layers", "directions")
# Leading scope segments that only say where the weights were kept, not what they are.
CONTAINERS = frozenset({"state_dict", "model_state_dict", "module", "model", "model_weights", "_orig_mod", "layers"})


@dataclass(frozen=True)
class GroupPair:
    a: int | None  # index into A's groups; None: only in B
    b: int | None
    how: str  # "scope", "normalized scope 'x'", "kind and sizes", "the only group left on each side", "only in A"/"B"


def normalize_scope(scope: str) -> str:
    segs = [s for s in re.split(r"[/.]", scope.lower()) if s]
    while len(segs) > 1 and segs[0] in CONTAINERS:
        segs.pop(0)
    return "_".join(segs)


def _signature(g: Any) -> tuple:
    get = g.get if isinstance(g, dict) else (lambda k: getattr(g, k, None))
    return tuple(get(k) or 0 if k == "proj_size" else get(k) for k in SIGNATURE_FIELDS)


def _scope(g: Any) -> str:
    return g["scope"] if isinstance(g, dict) else g.scope


def pair_groups(a: Sequence[Any], b: Sequence[Any]) -> list[GroupPair]:
    """Pairs (and leftovers) of groups given as RecurrentGroups or layout dicts (``scope`` + signature fields)."""
    free_a, free_b = list(range(len(a))), list(range(len(b)))
    pairs: list[GroupPair] = []

    def take(i: int, j: int, how: str) -> None:
        free_a.remove(i)
        free_b.remove(j)
        pairs.append(GroupPair(i, j, how))

    for i in list(free_a):
        same = [j for j in free_b if _scope(b[j]) == _scope(a[i])]
        if same:
            take(i, same[0], "scope")
    for key, how in ((lambda g: normalize_scope(_scope(g)), "normalized scope"), (_signature, "kind and sizes")):
        keys_a = {i: key(a[i]) for i in free_a}
        keys_b = {j: key(b[j]) for j in free_b}
        for i, k in keys_a.items():
            if k == "" and how == "normalized scope":
                continue  # the root scope pairs only by its exact scope
            js = [j for j, kb in keys_b.items() if kb == k]
            if list(keys_a.values()).count(k) == 1 and len(js) == 1:
                take(i, js[0], f"{how} {k!r}" if how == "normalized scope" else how)
    if len(free_a) == 1 and len(free_b) == 1:
        take(free_a[0], free_b[0], "the only group left on each side")
    pairs += [GroupPair(i, None, "only in A") for i in free_a]
    pairs += [GroupPair(None, j, "only in B") for j in free_b]
    return pairs
