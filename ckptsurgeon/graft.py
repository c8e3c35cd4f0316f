"""Graft: write chosen source tensors into a downstream model's own checkpoint (the template).

Plan first: recurrent groups are paired (by ``--map``/rules on their scopes, else the unique match)
and converted to the template group's own layout, with the template group's own run-time constants
(TF1 forget_bias of *its* cell class) and activations; other tensors follow the rules. Every target
must exist in the template with the same shape; dtypes follow the template. Then (by default) each
template group, with its new values and read with its own facts, is run against the source group:
nothing is written above the tolerance. Then the template is copied with only those bytes replaced.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import resolve_dtype
from .errors import CheckpointError, SelectionError
from .index import CheckpointIndex, TensorRef
from .remap import PlanError, Remap, Rule, load_rules, parse_map
from .rnn.convert import ConversionError, ConvertOptions, convert_group
from .rnn.cell import Stack
from .rnn.group import RecognizeOptions, RecurrentGroup, origin
from .rnn.layers import join_layers
from .rnn.pairing import pair_groups, render_scope, signature
from .rnn.recognize import recognize
from .rnn.verify import GroupCheck, check_pair, check_stacks
from .scopes import as_patterns

__all__ = ["GraftReport", "GraftRow", "plan_graft", "graft", "render_scope", "template_options"]  # render_scope: rnn.pairing

# template group layout -> the --to target that writes it
_TARGET_OF = {"torch": "torch", "torch-cell": "torch-cell", "keras": "keras", "tf1": "tf1", "tf1-gru": "tf1", "onnx": "onnx",
              "gates": "gates", "flax": "flax"}


@dataclass
class GraftRow:
    """One template tensor graft replaces: its path, the source it came from (a tensor, or a group's converted part), shape and dtype."""

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
    """What ``graft`` did: tensors replaced, template tensors left untouched, source tensors unused, groups
    paired, each group's verification (``checks``) and notes; ``as_dict()`` is ``graft --json``."""

    replaced: list[GraftRow]
    untouched: list[str]
    unused: list[str]
    groups: list[str]
    out: str | None = None
    dry_run: bool = False
    checks: list[GroupCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aliased: list[dict[str, Any]] = field(default_factory=list)  # template tensors changed through shared storage

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "dry_run": self.dry_run, "groups": self.groups,
                "replaced": [r.as_dict() for r in self.replaced], "untouched": self.untouched, "unused": self.unused,
                "checks": [c.as_dict() for c in self.checks], "notes": self.notes, "aliased": self.aliased}


def template_options(options: RecognizeOptions) -> RecognizeOptions:
    """How to read the template: the same structural declarations, none of the source's declared facts."""
    return RecognizeOptions(gate_names=options.gate_names, var_names=options.var_names, orientation=options.orientation)


# Names of the same role across layouts (TF 1.0 weights/biases, TF 0.x Linear/Matrix ...).
_BIAS = re.compile(r"(^|_)bias|^biases$|^[bB]$")  # a template member that is a bias, by its last name
_ROLE = {"weights": "kernel", "matrix": "kernel", "w_0": "kernel", "biases": "bias", "b": "bias"}


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
        segs = low.replace(".", "/").split("/")
        role = _ROLE.get(segs[-1], segs[-1])
        part = next((p for p in ("gates", "candidate", "projection") if p in segs[-3:-1]), "")
        return direction, int(layer.group(1)) if layer else 0, part, role

    want = sig(rel)
    found = [m for m in tpl.members if sig(m[len(tpl.scope):]) == want]
    return found[0] if len(found) == 1 else None


def _place(s: RecurrentGroup, t: RecurrentGroup, tensors: dict[str, np.ndarray],
           template: CheckpointIndex) -> list[tuple[str | None, str, np.ndarray]]:
    """(template member or None, label, value) for each converted tensor. A template group whose stored
    tensors are not its layout's own (an ONNX node fed through constant chains) writes them back itself."""
    if t.write_back is not None:
        label = f"{t.layout} node inputs of {t.scope}, written back"
        return [(member, label, np.asarray(arr)) for member, arr in t.write_back(tensors).items()]
    return [(_member_for(t, rel, template), rel, np.asarray(arr)) for rel, arr in tensors.items()]


def _verify_group(s: RecurrentGroup, t: RecurrentGroup, conv, template: CheckpointIndex,
                  values: dict[str, np.ndarray], options: RecognizeOptions, atol: float, seed: int
                  ) -> tuple[GroupCheck, RecurrentGroup]:
    """The template group with its new values, read with the template's own facts, against the source."""
    refs = []
    for member in t.members:
        ref = template[member]
        if member in values:
            arr = np.asarray(values[member]).astype(ref.dtype, copy=False)
            ref = TensorRef(ref.path, ref.key, arr.dtype, arr.shape, ref.file, loader=lambda a=arr: a)
        refs.append(ref)
    after = CheckpointIndex(refs, format=template.format, files=template.files, key_sep=template.key_sep,
                            metadata=template.metadata)
    found = [g for g in recognize(after, options) if g.scope == t.scope]
    if len(found) != 1:
        raise SelectionError(f"template group {t.scope!r} does not read back after the graft")
    return check_pair(s, found[0], atol=atol, seed=seed, a_stack=conv.reference), found[0]


def _check_stack(s: RecurrentGroup, layers: list[RecurrentGroup], atol: float, seed: int) -> GroupCheck:
    """A source stack against its template layers chained, as grafted: end to end, not layer by layer."""
    chain = join_layers(layers, scope=",".join(t.scope or "/" for t in layers))
    diff = check_stacks(s.cells(), Stack(chain.cells().layers), s.input_size, seed=seed)
    return GroupCheck(s.scope, chain.scope, s.kind, diff, diff <= atol, atol)


# facts that decide what a group's tensors mean (the layout: gate order and shapes; constants folded into them)
_MEANING = ("kind", "layout", "forget_bias", "activation", "recurrent_activation", "reset_after", "cell_clip", "proj_clip",
            "go_backwards")


def _differs(s: RecurrentGroup, t: RecurrentGroup) -> list[str]:
    """The facts both groups state (neither unknown nor missing) and differ in: tensors copied from one to the other
    as they are would compute something else."""
    out = []
    for fact in _MEANING:
        a, b = getattr(s, fact), getattr(t, fact)
        known = all(origin(g.provenance.get(fact, "file")) not in ("missing", "assumed") for g in (s, t))
        if a is not None and b is not None and known and a != b:
            out.append(f"{fact} {a!r} -> {b!r}")
    return out


def plan_graft(source: CheckpointIndex, template: CheckpointIndex, rules: Sequence[Rule] = (),
               options: ConvertOptions | None = None, *, verify_atol: float | None = 1e-5) -> GraftReport:
    """Every replacement, checked (and each recurrent group verified unless ``verify_atol`` is None);
    raises PlanError listing every problem."""
    options = options or ConvertOptions()
    tpl_options = template_options(options)
    problems: list[str] = []
    rows: dict[str, GraftRow] = {}
    used: set[str] = set()
    groups_done: list[str] = []
    notes: list[str] = []
    checks: list[GroupCheck] = []
    sg, tg = recognize(source, options), recognize(template, tpl_options)

    def add(target: str, src: str, value: Callable[[], np.ndarray], shape: tuple, dtype: np.dtype) -> bool:
        ref = template[target]
        if target in rows:
            problems.append(f"{rows[target].source!r} and {src!r} both map to template {target!r}")
        elif tuple(shape) != ref.shape:
            problems.append(f"{src!r} has shape {list(shape)}, template {target!r} has {list(ref.shape)}")
        else:
            cast = None if np.dtype(dtype).name == ref.dtype_name else np.dtype(dtype).name
            rows[target] = GraftRow(target, src, ref.shape, ref.dtype_name, cast, value)
            return True
        return False

    pairing = pair_groups(sg, tg, rules, source=source, template=template)
    problems.extend(pairing.problems)
    notes.extend(pairing.notes)
    after: dict[str, RecurrentGroup] = {}  # template scope -> the group as grafted (for stacks checked end to end)
    for i, (s, t) in enumerate(pairing.pairs):
        if signature(s) != signature(t):
            problems.append(f"group {s.scope!r} ({s.kind}, input {s.input_size}, hidden {s.hidden_size}, "
                            f"{s.num_layers}x{s.directions}) does not fit template group {t.scope!r} ({t.kind}, input "
                            f"{t.input_size}, hidden {t.hidden_size}, {t.num_layers}x{t.directions})"
                            + (f"; its {s.num_layers} layers go into {s.num_layers} one-layer groups with --map "
                               f"'{s.scope or '/'}={t.scope},...'" if s.num_layers > 1 == t.num_layers else ""))
            continue
        target = _TARGET_OF.get(t.layout)
        try:
            if target is None:
                raise ConversionError(f"template group {t.scope!r} is in layout {t.layout}, which graft cannot write")
            conv = convert_group(s, target, options, into=t)
        except ConversionError as exc:
            problems.append(str(exc))
            continue
        values: dict[str, np.ndarray] = {}
        try:
            placed = _place(s, t, conv.tensors, template)
        except CheckpointError as exc:
            problems.append(f"{s.scope or '/'} -> {t.scope or '/'}: {exc}")
            continue
        for member, label, arr in placed:
            if member is None:
                problems.append(f"converted {label!r} of {s.scope!r} has no counterpart in template group {t.scope!r}")
            elif add(member, f"{s.scope or '/'} ({label})", lambda a=arr: np.asarray(a), np.shape(arr), np.asarray(arr).dtype):
                values[member] = np.asarray(arr)
        if len(values) != len(placed):
            continue
        if s.bias == "none" and t.bias != "none":  # the source adds nothing: the template's own biases would
            zeroed = [m for m in t.members if m not in values and _BIAS.search(m.rsplit("/", 1)[-1])]
            for member in zeroed:
                ref = template[member]
                zero = np.zeros(ref.shape, ref.dtype)
                if add(member, f"{s.scope or '/'} (no bias: zeros)", lambda z=zero: z, ref.shape, ref.dtype):
                    values[member] = zero
            if zeroed:
                notes.append(f"{s.scope or '/'} has no bias; the bias of {t.scope or '/'} is written as zeros "
                             f"({', '.join(zeroed)})")
        groups_done.append(f"{s.scope or '/'} ({s.variant}) -> {t.scope or '/'} ({t.variant})")
        notes.extend(conv.notes)
        used.update(s.members)
        if verify_atol is not None:
            try:
                check, after[t.scope] = _verify_group(s, t, conv, template, values, tpl_options, verify_atol, i)
            except SelectionError as exc:
                problems.append(str(exc))
                continue
            checks.append(check)
            if not check.ok:
                problems.append(f"{s.scope or '/'} -> {t.scope or '/'}: the grafted template group computes outputs "
                                f"{check.max_abs_diff:.3g} away from the source (> {verify_atol:g})")

    for k, (s, layers) in enumerate(pairing.stacks):
        if verify_atol is None or not all(t.scope in after for t in layers):
            continue
        check = _check_stack(s, [after[t.scope] for t in layers], verify_atol, len(pairing.pairs) + k)
        checks.append(check)
        if not check.ok:
            problems.append(f"{s.scope or '/'} -> {check.converted}: the grafted layers chained compute outputs "
                            f"{check.max_abs_diff:.3g} away from the source stack (> {verify_atol:g})")
    if rules:
        remaining = CheckpointIndex([r for p, r in source.items() if p not in used and p not in pairing.claimed],
                                    format=source.format,
                                    files=source.files, key_sep=source.key_sep)
        try:
            plan = Remap(rules, keep_unmatched=False).plan(remaining)
        except PlanError as exc:
            problems.extend(exc.problems)
            plan = None
        member_of = {m: g for g in sg for m in g.members}
        template_member_of = {m: g for g in tg for m in g.members}
        for row in plan.mapped if plan else []:
            target = row.target if row.target in template else row.target.replace(".", "/")
            if target not in template:
                problems.append(f"{row.source!r} maps to {row.target!r}, which the template does not have")
                continue
            s_group, t_group = member_of.get(row.source), template_member_of.get(target)
            differ = _differs(s_group, t_group) if s_group is not None and t_group is not None else []
            if s_group is not None and t_group is not None and differ:
                problems.append(f"{row.source!r} of recurrent group {s_group.scope or '/'} ({s_group.variant}) maps to "
                                f"{target!r} of template group {t_group.scope or '/'} ({t_group.variant}), which computes "
                                f"otherwise ({', '.join(differ)}): a tensor copied as it is would not compute what it "
                                "did; map the groups' "
                                f"scopes instead (--map '{s_group.scope or '/'}={t_group.scope or '/'}'), so that the "
                                "group is converted and verified")
                continue
            add(target, row.source, row.value, row.shape, resolve_dtype(row.dtype) if row.dtype != "bfloat16" else template[target].dtype)
            used.add(row.source)
    if problems:
        raise PlanError(problems)
    untouched = [p for p in template if p not in rows]
    unused = [p for p in source if p not in used]
    return GraftReport(list(rows.values()), untouched, unused, groups_done, checks=checks, notes=notes)


def graft(source: str | os.PathLike[str] | CheckpointIndex, into: str | os.PathLike[str], out: str | None = None, *,
          scope: Sequence[str] = (), map: str | Sequence[str | tuple[str, str]] = (), rules: str | None = None,  # noqa: A002
          strict: bool = False, dry_run: bool = False, force: bool = False,
          options: ConvertOptions | None = None, verify_atol: float | None = 1e-5,
          allow_aliased: bool = False, progress: Callable[[int, int], None] | None = None,
          template_facts: Callable[[CheckpointIndex], dict[str, dict]] | Mapping[str, Any] | Sequence[str] | None = None
          ) -> GraftReport:
    """Write SOURCE's chosen tensors into a copy of TEMPLATE (``into``); see the module docstring.

    ``strict``: template tensors left untouched or source tensors left unused are errors.
    Nothing replaced is an error too. ``dry_run`` plans and reports without writing.
    Every grafted recurrent group is verified first (``verify_atol``; ``None`` skips it).
    A replacement that would change another template tensor through shared storage (a view, a
    transpose, tied weights) is refused unless ``allow_aliased``; then each such tensor is in ``aliased``.
    Replacements are computed one at a time while the copy is written; ``progress(n, total)`` follows it.
    ``template_facts``: facts the template's groups run with that its file does not state: declared by the
    user (``{"forget_bias": 0.0}`` or ``["activation=relu"]``, what ``--template-fact`` takes; never over a fact
    the file states), or a function ``template_index -> {scope: self-description}`` (``keras.load_into`` reads
    the live model's layers).
    """
    from .api import as_maps, open as open_
    from .formats.patch import aliased, patch_copy

    scope, map = as_patterns(scope, "scope"), as_maps(map)  # noqa: A001
    from .rnn.onnx_graph import expand_scopes

    src = source if isinstance(source, CheckpointIndex) else open_(source)
    src = src.select(*expand_scopes(src, scope), include_optimizer=False)  # an ONNX node's scope: what it reads
    tpl = open_(into)
    options = options or ConvertOptions()
    if template_facts is not None and not callable(template_facts):
        from .rnn.template_facts import declared, parse_template_facts
        template_facts = declared(parse_template_facts(template_facts), template_options(options))
    if template_facts is not None:
        from .rnn.facts import state_facts
        state_facts(tpl, template_facts(tpl))
    rule_list = parse_map(map) + (load_rules(rules) if rules else [])
    options = options or ConvertOptions()
    report = plan_graft(src, tpl, rule_list, options, verify_atol=verify_atol)
    if not report.replaced:
        shown = lambda groups: [g.scope or "/" for g in groups]  # noqa: E731
        raise SelectionError(f"{tpl.files[0]}: nothing to replace: no recurrent group paired and no rule matched "
                             f"(source groups: {shown(recognize(src, options))}, template groups: "
                             f"{shown(recognize(tpl, template_options(options)))}); pass --map SRC=DST "
                             "(a group at the root of its file is '/': --map '/=DST')")
    if strict and (report.untouched or report.unused):
        raise SelectionError(f"--strict: {len(report.untouched)} template tensor(s) untouched "
                             f"({', '.join(report.untouched[:5])}) and {len(report.unused)} source tensor(s) unused "
                             f"({', '.join(report.unused[:5])})")
    report.dry_run = dry_run
    values = {r.target: r.value for r in report.replaced}  # computed when written (or when aliasing is checked)
    changed = [a for a in aliased(tpl, values) if a.changes]
    if changed and not allow_aliased:
        raise SelectionError(f"{tpl.files[0]}: " + "; ".join(
            f"replacing {', '.join(repr(p) for p in a.shares_with)} would also change template tensor {a.path!r} (they share storage)"
            for a in changed) + "; nothing written (pass --allow-aliased to write it and have every changed tensor reported)")
    report.aliased = [{"path": a.path, "shares_with": list(a.shares_with)} for a in changed]
    report.untouched = [p for p in report.untouched if p not in {a.path for a in changed}]
    if not dry_run:
        if out is None:
            raise SelectionError("graft needs an output path (-o) unless --dry-run")
        report.out = patch_copy(tpl, os.fspath(out), values, force=force, allow_aliased=allow_aliased,
                                progress=progress)
    return report
