"""Graft: write chosen source tensors into a downstream model's own checkpoint (the template).

Plan first: recurrent groups are paired (by ``--map``/rules on their scopes, else the unique match)
and converted to the template group's own layout; other tensors follow the rules. Every target must
exist in the template with the same shape; dtypes follow the template. Then the template is copied
with only those tensors' bytes replaced.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SelectionError
from .index import CheckpointIndex
from .remap import PlanError, Remap, Rule, load_rules, parse_map
from .rnn.convert import ConversionError, ConvertOptions, check_target, convert_stack
from .rnn.group import RecurrentGroup
from .rnn.recognize import recognize

__all__ = ["GraftReport", "GraftRow", "plan_graft", "graft"]

# template group layout -> the --to target that writes it
_TARGET_OF = {"torch": "torch", "torch-cell": "torch-cell", "keras": "keras", "tf1": "tf1", "tf1-gru": "tf1", "onnx": "onnx"}


@dataclass
class GraftRow:
    target: str  # template path
    source: str  # source path or "<group scope> (converted)"
    shape: tuple[int, ...]
    dtype: str
    cast_from: str | None = None
    value: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "source": self.source, "shape": list(self.shape), "dtype": self.dtype,
                "cast_from": self.cast_from}


@dataclass
class GraftReport:
    replaced: list[GraftRow]
    untouched: list[str]
    unused: list[str]
    groups: list[str]
    out: str | None = None
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "dry_run": self.dry_run, "groups": self.groups,
                "replaced": [r.as_dict() for r in self.replaced], "untouched": self.untouched, "unused": self.unused}


def _render_scope(scope: str, rules: Sequence[Rule]) -> str | None:
    """A group scope through the rules: ``LSTMcell/*=cell/*`` maps the scope ``LSTMcell`` to ``cell``."""
    for rule in rules:
        m = rule.match(scope)
        if m is not None:
            return None if rule.drop else m.target
        m = rule.match(scope + "/\0")
        if m is not None:
            return None if rule.drop else m.target.removesuffix("/\0").removesuffix("\0").rstrip("/")
    return None


def _signature(g: RecurrentGroup) -> tuple:
    return (g.kind, g.input_size, g.hidden_size, g.num_layers, g.directions, g.proj_size)


def _pair_groups(sg: list[RecurrentGroup], tg: list[RecurrentGroup], rules: Sequence[Rule]) -> list[tuple]:
    pairs = []
    by_scope = {g.scope: g for g in tg}
    if rules:
        for g in sg:
            target = _render_scope(g.scope, rules)
            if target is not None and target in by_scope:
                pairs.append((g, by_scope[target]))
        return pairs
    if len(sg) == 1 and len(tg) == 1:
        return [(sg[0], tg[0])]
    for g in sg:  # the same scope, else the only template group with the same kind and sizes
        same = [t for t in tg if t.scope == g.scope] or [t for t in tg if _signature(t) == _signature(g)]
        if len(same) == 1:
            pairs.append((g, same[0]))
    return pairs


def _member_for(tpl: RecurrentGroup, rel: str, template: CheckpointIndex) -> str | None:
    """Which template member a converted tensor (named the way our writer names it) replaces."""
    full = f"{tpl.scope}/{rel}" if tpl.scope else rel
    if full in template:
        return full
    key = full.replace("/", ".")
    for member in tpl.members:
        if template[member].key in (key, full):
            return member

    def sig(path: str) -> tuple:
        low = path.lower()
        direction = "b" if re.search(r"(^|/)(backward\w*|bw)(/|$)|_reverse", low) else "f"
        layer = re.search(r"(?:layer_|cell_|_l)(\d+)", low)
        return direction, int(layer.group(1)) if layer else 0, path.rsplit("/", 1)[-1].split(".")[-1]

    want = sig(rel)
    found = [m for m in tpl.members if sig(m[len(tpl.scope):]) == want]
    return found[0] if len(found) == 1 else None


def plan_graft(source: CheckpointIndex, template: CheckpointIndex, rules: Sequence[Rule] = (),
               options: ConvertOptions | None = None) -> GraftReport:
    """Every replacement, checked; raises PlanError listing every problem."""
    options = options or ConvertOptions()
    problems: list[str] = []
    rows: dict[str, GraftRow] = {}
    used: set[str] = set()
    groups_done: list[str] = []
    sg, tg = recognize(source, options), recognize(template, options)

    def add(target: str, src: str, value: Callable[[], np.ndarray], shape: tuple, dtype: np.dtype) -> None:
        ref = template[target]
        if target in rows:
            problems.append(f"{rows[target].source!r} and {src!r} both map to template {target!r}")
        elif tuple(shape) != ref.shape:
            problems.append(f"{src!r} has shape {list(shape)}, template {target!r} has {list(ref.shape)}")
        else:
            cast = None if np.dtype(dtype).name == ref.dtype_name else np.dtype(dtype).name
            rows[target] = GraftRow(target, src, ref.shape, ref.dtype_name, cast, value)

    for s, t in _pair_groups(sg, tg, rules):
        if _signature(s) != _signature(t):
            problems.append(f"group {s.scope!r} ({s.kind}, input {s.input_size}, hidden {s.hidden_size}, "
                            f"{s.num_layers}x{s.directions}) does not fit template group {t.scope!r} ({t.kind}, input "
                            f"{t.input_size}, hidden {t.hidden_size}, {t.num_layers}x{t.directions})")
            continue
        target = _TARGET_OF.get(t.layout)
        try:
            if target is None:
                raise ConversionError(f"template group {t.scope!r} is in layout {t.layout}, which graft cannot write")
            if s.kind == "gru" and bool(s.reset_after) != bool(t.reset_after):
                raise ConversionError(
                    f"cannot graft {s.scope!r} into {t.scope!r}: a {'reset-after' if s.reset_after else 'reset-before'} "
                    f"GRU cannot compute what a {'reset-after' if t.reset_after else 'reset-before'} GRU computes")
            check_target(s, target)
            conv = convert_stack(s, target, options)
        except ConversionError as exc:
            problems.append(str(exc))
            continue
        groups_done.append(f"{s.scope or '/'} ({s.variant}) -> {t.scope or '/'} ({t.variant})")
        for rel, arr in conv.tensors.items():
            member = _member_for(t, rel, template)
            if member is None:
                problems.append(f"converted {rel!r} of {s.scope!r} has no counterpart in template group {t.scope!r}")
                continue
            add(member, f"{s.scope} ({rel})", lambda a=arr: np.asarray(a), np.shape(arr), np.asarray(arr).dtype)
        used.update(s.members)

    if rules:
        remaining = CheckpointIndex([r for p, r in source.items() if p not in used], format=source.format,
                                    files=source.files, key_sep=source.key_sep)
        try:
            plan = Remap(rules, keep_unmatched=False).plan(remaining)
        except PlanError as exc:
            problems.extend(exc.problems)
            plan = None
        for row in plan.mapped if plan else []:
            target = row.target if row.target in template else row.target.replace(".", "/")
            if target not in template:
                problems.append(f"{row.source!r} maps to {row.target!r}, which the template does not have")
                continue
            add(target, row.source, row.value, row.shape, np.dtype(row.dtype) if row.dtype != "bfloat16" else template[target].dtype)
            used.add(row.source)
    if problems:
        raise PlanError(problems)
    untouched = [p for p in template if p not in rows]
    unused = [p for p in source if p not in used]
    return GraftReport(list(rows.values()), untouched, unused, groups_done)


def graft(source: str | os.PathLike[str] | CheckpointIndex, into: str | os.PathLike[str], out: str | None = None, *,
          scope: Sequence[str] = (), map: Sequence[str] = (), rules: str | None = None,  # noqa: A002
          strict: bool = False, dry_run: bool = False, force: bool = False,
          options: ConvertOptions | None = None,
          progress: Callable[[int, int], None] | None = None) -> GraftReport:
    """Write SOURCE's chosen tensors into a copy of TEMPLATE (``into``); see the module docstring.

    ``strict``: template tensors left untouched or source tensors left unused are errors.
    Nothing replaced is an error too. ``dry_run`` plans and reports without writing.
    Replacements are computed one at a time while the copy is written; ``progress(n, total)`` follows it.
    """
    from .api import open as open_
    from .formats.patch import patch_copy

    src = source if isinstance(source, CheckpointIndex) else open_(source)
    src = src.select(*scope, include_optimizer=False)
    tpl = open_(into)
    rule_list = parse_map(map) + (load_rules(rules) if rules else [])
    report = plan_graft(src, tpl, rule_list, options)
    if not report.replaced:
        raise SelectionError(f"{tpl.files[0]}: nothing to replace: no recurrent group paired and no rule matched "
                             f"(source groups: {[g.scope for g in recognize(src, options)]}, template groups: "
                             f"{[g.scope for g in recognize(tpl, options)]}); pass --map SRC=DST")
    if strict and (report.untouched or report.unused):
        raise SelectionError(f"--strict: {len(report.untouched)} template tensor(s) untouched "
                             f"({', '.join(report.untouched[:5])}) and {len(report.unused)} source tensor(s) unused "
                             f"({', '.join(report.unused[:5])})")
    report.dry_run = dry_run
    if not dry_run:
        if out is None:
            raise SelectionError("graft needs an output path (-o) unless --dry-run")
        report.out = patch_copy(tpl, os.fspath(out), {r.target: r.value for r in report.replaced}, force=force,
                                progress=progress)
    return report
