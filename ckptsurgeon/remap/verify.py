"""Verify a remap that reorders gates: the result's recurrent groups must compute what the source's did.

A plan with a ``gates`` transform is written to a temporary file beside the output, read back as any
user would read it, and its recurrent groups are paired with the source's (by scope, then meaning:
``check.pairing``) and run through ``rnn.verify`` on the same random inputs. Only when every paired
group agrees within ``atol`` is the file renamed to the output; otherwise nothing is written.
Groups that cannot be paired are reported as not verified, never passed over in silence.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..dtypes import resolve_dtype
from ..check.pairing import SIGNATURE_FIELDS, pair_groups
from ..errors import CheckpointError, SelectionError
from ..index import CheckpointIndex
from ..rnn.group import RecognizeOptions, RecurrentGroup
from ..rnn.recognize import recognize
from .plan import Plan
from .rules import Rule

__all__ = ["RemapVerification", "uses_gates", "verify_remap", "verify_plan", "write_plan"]


@dataclass
class RemapVerification:
    checks: list[dict[str, Any]] = field(default_factory=list)  # source, converted, paired_by, max_abs_diff, ok, reason
    unverified: list[str] = field(default_factory=list)  # why a group was not verified, one line each

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"checks": self.checks, "unverified": self.unverified}


def uses_gates(rules: Sequence[Rule]) -> bool:
    return any(op.op == "gates" for rule in rules for op in rule.transforms)


def _sub(index: CheckpointIndex, g: RecurrentGroup) -> CheckpointIndex:
    return CheckpointIndex([index[m] for m in g.members], format=index.format, files=index.files,
                           metadata=index.metadata, key_sep=index.key_sep)


def _carried_facts(g: RecurrentGroup, options: RecognizeOptions | None) -> RecognizeOptions:
    """How to read the result: a remap moves weights, it does not change activations, the GRU family or
    the direction of time, so the source group's facts stand in for what a weights-only result cannot
    state (a fact the result's file does state still wins, and a disagreement shows as a mismatch)."""
    base = options or RecognizeOptions()
    facts = {"activation": g.activation, "recurrent_activation": g.recurrent_activation, "go_backwards": g.go_backwards}
    if g.kind == "gru":
        facts["reset_after"] = g.reset_after
    return replace(base, **{k: v for k, v in facts.items() if v is not None})


def verify_remap(source: CheckpointIndex, result: CheckpointIndex, *, atol: float = 1e-5,
                 options: RecognizeOptions | None = None) -> RemapVerification:
    """Pair the recurrent groups of ``source`` and ``result`` and compare their outputs."""
    from ..rnn.verify import verify

    out = RemapVerification()
    ga, gb = recognize(source, options), recognize(result, options)
    if not ga and not gb:
        out.unverified.append("no recurrent group recognized in the source or in the result: nothing to verify")
        return out
    for pair in pair_groups(ga, gb):
        if pair.b is None:
            g = ga[pair.a]
            out.unverified.append(f"source group {g.scope or '/'!r} ({g.variant}) pairs with no recurrent group of the "
                                  "result (renamed or reshaped beyond recognition?)")
            continue
        if pair.a is None:
            g = gb[pair.b]
            out.unverified.append(f"result group {g.scope or '/'!r} ({g.variant}) pairs with no recurrent group of the source")
            continue
        x, y = ga[pair.a], gb[pair.b]
        row = {"source": x.scope, "converted": y.scope, "paired_by": pair.how, "kind": x.kind,
               "max_abs_diff": None, "ok": False, "reason": ""}
        sig_x, sig_y = ([getattr(g, k) or 0 for k in SIGNATURE_FIELDS] for g in (x, y))
        if sig_x != sig_y:
            row["reason"] = "different kind or sizes: " + ", ".join(
                f"{k} {a!r} vs {b!r}" for k, a, b in zip(SIGNATURE_FIELDS, sig_x, sig_y) if a != b)
        else:
            try:
                (check,) = verify(_sub(source, x), _sub(result, y), atol=atol, options_a=options,
                                  options_b=_carried_facts(x, options))
                row.update(max_abs_diff=check.max_abs_diff, ok=check.ok)
                if not check.ok:
                    row["reason"] = f"outputs differ by {check.max_abs_diff:.3g} (> {atol:g})"
            except (CheckpointError, ValueError) as exc:
                row["reason"] = f"cannot run: {exc}"
        out.checks.append(row)
    if not out.checks:
        out.unverified.append("no recurrent group of the result could be paired with one of the source: nothing verified")
    return out


def write_plan(plan: Plan, out: str, *, format: str | None = None, metadata: Mapping[str, str] | None = None,  # noqa: A002
               force: bool = False, inputs: Sequence[str] = (), verify_atol: float | None = None,
               options: RecognizeOptions | None = None) -> tuple[str, RemapVerification | None]:
    """Write the plan's result to ``out``; with ``verify_atol``, verify it first (see the module docstring)."""
    from .. import api
    from ..atomic import check_output
    from ..formats import writer_for

    if verify_atol is None:
        return api.save(plan.lazy(), out, format=format, metadata=metadata, force=force, inputs=inputs), None
    writer = writer_for(out, format)
    if writer.files:  # a TensorFlow bundle is several files: verified from the plan, then written atomically
        report = verify_plan(plan, atol=verify_atol, options=options)
        return api.save(plan.lazy(), out, format=writer.name, metadata=metadata, force=force, inputs=inputs), report
    check_output(out, list(inputs), force)
    parent = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", suffix=".verify" + os.path.splitext(out)[1], dir=parent)
    os.close(fd)
    try:
        api.save(plan.lazy(), tmp, format=writer.name, metadata=metadata, force=True, inputs=inputs)
        report = verify_remap(plan.index, api.open(tmp), atol=verify_atol, options=options)
        if not report.ok:
            raise SelectionError("; ".join(f"{c['source'] or '/'} -> {c['converted'] or '/'}: {c['reason']}"
                                           for c in report.checks if not c["ok"]) + f"; nothing written to {out}")
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return out, report


def verify_plan(plan: Plan, *, atol: float = 1e-5, options: RecognizeOptions | None = None) -> RemapVerification:
    """Verify the plan's result before it is written, read lazily from the plan (for outputs that are
    several files, e.g. shards, where a read-back before the rename is not one file); raises on a mismatch."""

    from ..index import TensorRef

    refs = [TensorRef(r.target, r.target, resolve_dtype(r.dtype) if r.dtype != "bfloat16" else r._refs[0].dtype, tuple(r.shape),
                      plan.index.files[0], loader=r.value) for r in plan.mapped]
    result = CheckpointIndex(refs, format="remap", files=plan.index.files, key_sep="/")
    report = verify_remap(plan.index, result, atol=atol, options=options)
    if not report.ok:
        raise SelectionError("; ".join(f"{c['source'] or '/'} -> {c['converted'] or '/'}: {c['reason']}"
                                       for c in report.checks if not c["ok"]) + "; nothing written")
    return report
