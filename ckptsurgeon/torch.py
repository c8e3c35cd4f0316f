"""Load converted weights straight into a ``torch.nn.Module`` (needs torch).

>>> from ckptsurgeon.torch import load_into
>>> report = load_into(model, "pretrained.ckpt", scope=["LSTMcell"], map=["LSTMcell/*=encoder.cell/*"])
>>> report.missing, report.unexpected, report.mismatched
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import MissingDependencyError
from .index import CheckpointIndex, memory_index
from .scopes import as_patterns

__all__ = ["LoadReport", "load_into"]


@dataclass
class LoadReport:
    """What ``torch.load_into`` loaded: module keys replaced, left as they were, source tensors unused, checks."""

    loaded: list[str] = field(default_factory=list)  # module keys replaced
    missing: list[str] = field(default_factory=list)  # module keys the source did not provide
    unexpected: list[str] = field(default_factory=list)  # source tensors not used
    mismatched: list[str] = field(default_factory=list)  # per key: what did not fit
    groups: list[str] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)  # rnn.verify.GroupCheck per grafted recurrent group
    notes: list[str] = field(default_factory=list)


def load_into(module: Any, source: str | os.PathLike[str] | CheckpointIndex, *, scope: Sequence[str] = (),
              map: str | Sequence[str | tuple[str, str]] = (), rules: str | None = None, strict: bool = False,  # noqa: A002
              options: Any = None, verify_atol: float | None = 1e-5) -> LoadReport:
    """Convert ``source``'s tensors to ``module``'s layout and names, then load them.

    Unlike ``load_state_dict``, nothing is loaded when anything does not fit: every misfit is
    reported per key in ``mismatched``. ``strict`` also makes missing/unexpected keys errors.
    Every recurrent group is verified first: the module's group with the new values must compute what
    the source computes within ``verify_atol`` (``report.checks``; ``None`` skips it), else nothing loads.
    """
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch", "load_into") from None
    from .api import as_maps, open as open_
    from .formats.pytorch.torch_writer import to_torch
    from .graft import plan_graft
    from .remap import PlanError, load_rules, parse_map

    scope, map = as_patterns(scope, "scope"), as_maps(map)  # noqa: A001
    state = module.state_dict()
    template = memory_index(((k.replace(".", "/"), k, v.detach().cpu().numpy() if v.dtype != torch.bfloat16
                              else v.detach().cpu().view(torch.int16).numpy()) for k, v in state.items()),
                            format="module", file=f"<{type(module).__name__}>")
    from .rnn.onnx_graph import expand_scopes

    src = source if isinstance(source, CheckpointIndex) else open_(source)
    src = src.select(*expand_scopes(src, scope), include_optimizer=False)  # an ONNX node's scope: what it reads
    report = LoadReport()
    try:
        plan = plan_graft(src, template, parse_map(map) + (load_rules(rules) if rules else []), options,
                          verify_atol=verify_atol)
    except PlanError as exc:
        report.mismatched = exc.problems
        if strict:
            raise
        return report
    values = {template[r.target].key: r.value() for r in plan.replaced}
    report.loaded = sorted(values)
    report.missing = [template[p].key for p in plan.untouched]
    report.unexpected = plan.unused
    report.groups = plan.groups
    report.checks, report.notes = plan.checks, plan.notes
    if strict and (report.missing or report.unexpected):
        raise PlanError([f"missing: {report.missing}", f"unexpected: {report.unexpected}"])
    with torch.no_grad():
        for key, arr in values.items():
            state[key].copy_(to_torch(np.asarray(arr)).to(state[key].dtype))
    return report
