"""Pair the recurrent groups of two checkpoints and compare their outputs on the same random inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SelectionError
from ..index import CheckpointIndex
from .group import RecognizeOptions, RecurrentGroup
from .recognize import recognize
from .reference import run_stack

__all__ = ["GroupCheck", "verify"]


@dataclass
class GroupCheck:
    source: str
    converted: str
    kind: str
    max_abs_diff: float
    ok: bool

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _signature(g: RecurrentGroup) -> tuple:
    return (g.kind, g.input_size, g.hidden_size, g.num_layers, g.directions, g.proj_size)


def verify(a: CheckpointIndex, b: CheckpointIndex, *, atol: float = 1e-5, steps: int = 7, batch: int = 3,
           seed: int = 0, options_a: RecognizeOptions | None = None,
           options_b: RecognizeOptions | None = None) -> list[GroupCheck]:
    """One row per paired group; groups pair in order, and must agree in kind and sizes."""
    ga, gb = recognize(a, options_a), recognize(b, options_b)
    if not ga:
        raise SelectionError(f"{a.files[0]}: no recurrent group found to verify")
    if len(ga) != len(gb):
        raise SelectionError(f"{a.files[0]} has {len(ga)} recurrent group(s), {b.files[0]} has {len(gb)}; "
                             "narrow both with --scope")
    rng = np.random.default_rng(seed)
    rows = []
    for x_group, y_group in zip(ga, gb):
        if _signature(x_group) != _signature(y_group):
            raise SelectionError(f"groups {x_group.scope!r} and {y_group.scope!r} differ in kind or sizes: "
                                 f"{_signature(x_group)} vs {_signature(y_group)}")
        x = rng.standard_normal((steps, batch, x_group.input_size))
        diff = float(np.max(np.abs(run_stack(x_group.cells(), x) - run_stack(y_group.cells(), x))))
        rows.append(GroupCheck(x_group.scope, y_group.scope, x_group.kind, diff, diff <= atol))
    return rows
