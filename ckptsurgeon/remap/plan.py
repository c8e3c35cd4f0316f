"""Plan, then apply: every source -> target with shapes and dtypes before and after, checked whole
before a byte is written. Collisions, unmatched required rules and misfits are errors listing every row."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import resolve_dtype
from ..errors import SelectionError
from ..index import CheckpointIndex, TensorRef
from .rules import Rule
from .transforms import Transform, normalize_axis

__all__ = ["PlanRow", "Plan", "Remap", "PlanError"]


class PlanError(SelectionError):
    """The plan is inconsistent; ``rows`` lists every offending row."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the remap plan, nothing written: " + "; ".join(problems))


@dataclass
class PlanRow:
    """One output tensor of a remap plan: its source path(s), the transforms applied, its new path, shape and dtype."""

    source: str
    target: str | None  # None = dropped
    src_shape: tuple[int, ...]
    src_dtype: str
    shape: tuple[int, ...]
    dtype: str
    transforms: list[str] = field(default_factory=list)
    rule: int | None = None  # 1-based; None = kept unchanged (no rule matched)
    others: list[str] = field(default_factory=list)
    _refs: list[TensorRef] = field(default_factory=list, repr=False)
    _ops: list[Transform] = field(default_factory=list, repr=False)
    _op_refs: list[list[TensorRef]] = field(default_factory=list, repr=False)  # each op's own extra tensors

    @property
    def action(self) -> str:
        return "drop" if self.target is None else ("keep" if self.rule is None else "map")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "action": self.action, "rule": self.rule,
                "src_shape": list(self.src_shape), "src_dtype": self.src_dtype, "shape": list(self.shape),
                "dtype": self.dtype, "transforms": self.transforms, "others": self.others}

    def value(self) -> np.ndarray:
        """Read the source tensor(s) and apply the transforms."""
        arr = self._refs[0].numpy()
        for k, op in enumerate(self._ops):
            rest = [r.numpy() for r in self._op_refs[k]] if k < len(self._op_refs) else []
            arr = op.apply(arr, rest)
        return arr


@dataclass
class Plan:
    """A remap plan: every output row, the source tensors dropped or unmatched, and problems (a plan with
    problems writes nothing); ``as_dict()`` is ``remap --json``."""

    rows: list[PlanRow]
    index: CheckpointIndex

    @property
    def mapped(self) -> list[PlanRow]:
        return [r for r in self.rows if r.target is not None]

    def apply(self) -> dict[str, np.ndarray]:
        """Target key -> array (each source read once, when its row is applied)."""
        return {r.target: r.value() for r in self.mapped}

    def lazy(self) -> Mapping[str, TensorRef]:
        """Target key -> TensorRef: untransformed rows are the source's own (a writer copies their bytes),
        the others compute their value when read, one at a time."""
        out: dict[str, TensorRef] = {}
        for r in self.mapped:
            ref = r._refs[0]
            if not r._ops and len(r._refs) == 1:
                out[r.target] = ref.with_path(r.target, r.target)
            else:
                out[r.target] = TensorRef(r.target, r.target, resolve_dtype(r.dtype), tuple(r.shape), ref.file,
                                          loader=r.value)
        return out

    def table(self) -> str:
        rows = [(r.source, r.target or "(dropped)", "x".join(map(str, r.src_shape)) or "scalar", r.src_dtype,
                 "x".join(map(str, r.shape)) or "scalar", r.dtype, ", ".join(r.transforms) or "-",
                 str(r.rule) if r.rule else "-") for r in self.rows]
        head = ("source", "target", "shape", "dtype", "-> shape", "dtype", "transforms", "rule")
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        return "\n".join(line.rstrip() for line in lines)

    def to_json(self) -> str:
        return json.dumps([r.as_dict() for r in self.rows], indent=2)


class Remap:
    """``Remap(rules).plan(index)`` -> a checked Plan; ``plan.apply()`` -> {target: array}."""

    def __init__(self, rules: Sequence[Rule], keep_unmatched: bool = True) -> None:
        self.rules = list(rules)
        self.keep_unmatched = keep_unmatched

    def plan(self, index: CheckpointIndex) -> Plan:
        rows: list[PlanRow] = []
        problems: list[str] = []
        used: set[int] = set()
        for path, ref in index.items():
            row = self._row(index, path, ref, used, problems)
            if row is not None:
                rows.append(row)
        for rule in self.rules:
            if rule.required and rule.index not in used:
                problems.append(f"required rule {rule.index + 1} ({rule.describe()}) matched nothing")
        seen: dict[str, str] = {}
        for row in rows:
            if row.target is None:
                continue
            if row.target in seen:
                problems.append(f"{seen[row.target]!r} and {row.source!r} both map to {row.target!r}")
            seen.setdefault(row.target, row.source)
        if problems:
            raise PlanError(problems)
        return Plan(rows, index)

    def _row(self, index, path, ref, used, problems) -> PlanRow | None:
        for rule in self.rules:
            match = rule.match(path)
            if match is None:
                continue
            used.add(rule.index)
            if rule.drop:
                return PlanRow(path, None, ref.shape, ref.dtype_name, ref.shape, ref.dtype_name, rule=rule.index + 1, _refs=[ref])
            return self._mapped(index, path, ref, rule, match, problems)
        if not self.keep_unmatched:
            return None
        return PlanRow(path, ref.key, ref.shape, ref.dtype_name, ref.shape, ref.dtype_name, _refs=[ref])

    def _mapped(self, index, path, ref, rule, match, problems) -> PlanRow | None:
        from .rules import render

        shape, dtype = ref.shape, ref.dtype
        refs, others, op_refs = [ref], [], []
        try:
            for op in rule.transforms:
                op_refs.append([])
                for template in op.others:
                    other_path = render(template, match.captures, [], [])
                    if other_path not in index:
                        raise SelectionError(f"concat source {other_path!r} is not in the checkpoint")
                    other = index[other_path]
                    refs.append(other)
                    op_refs[-1].append(other)
                    others.append(other_path)
                    ax = normalize_axis(op.args.get("axis", 0), len(shape))
                    if other.shape[:ax] + other.shape[ax + 1:] != shape[:ax] + shape[ax + 1:]:
                        raise SelectionError(f"concat {other_path!r} {list(other.shape)} does not fit {list(shape)}")
                    shape = shape[:ax] + (shape[ax] + other.shape[ax],) + shape[ax + 1:]
                    dtype = np.result_type(dtype, other.dtype)
                shape, dtype = op.shape(shape, dtype)
        except SelectionError as exc:
            problems.append(f"{path} (rule {rule.index + 1}): {exc}")
            return None
        return PlanRow(path, match.target, ref.shape, ref.dtype_name, tuple(shape), np.dtype(dtype).name,
                       [op.describe() for op in rule.transforms], rule.index + 1, others, refs, list(rule.transforms), op_refs)
