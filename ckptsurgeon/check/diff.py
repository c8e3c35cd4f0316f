"""Compare two checkpoints, across formats: tensors by path, recurrent groups by scope and meaning.

Groups are paired by ``pairing.pair_groups`` (scope, normalized scope, then kind and sizes when
unambiguous; never file order) and compared by what their cells compute (``group_diff``). A group
present on one side only is a difference, like a tensor present on one side only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..index import CheckpointIndex
from ..rnn.group import RecognizeOptions
from ..rnn.recognize import recognize
from .group_diff import compare_groups, describe_group, differs
from .pairing import SIGNATURE_FIELDS, pair_groups

__all__ = ["diff"]


def _delta(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    with np.errstate(all="ignore"):  # the casts too: a signaling NaN raises "invalid" when widened
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        d = np.abs(a64 - b64)
        return float(d.max()) if d.size else 0.0, float((d / np.maximum(np.abs(b64), 1e-12)).max()) if d.size else 0.0


def _tensors(a: CheckpointIndex, b: CheckpointIndex, skip_a: set[str], skip_b: set[str], atol: float, rtol: float,
             out: dict[str, Any], compared: dict[str, str]) -> None:
    for path, ref in a.items():
        if path not in b:
            if path not in skip_a:
                out["only_in_a"].append(path)
            continue
        other = b[path]
        if ref.shape != other.shape or ref.dtype_name != other.dtype_name:
            out["changed"].append({"path": path, "a": [list(ref.shape), ref.dtype_name], "b": [list(other.shape), other.dtype_name]})
            continue
        if ref.dtype.kind in "fiub" or ref.dtype_name == "bfloat16":
            x, y = ref.numpy(), other.numpy()
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                max_abs, max_rel = _delta(x, y)
                with np.errstate(all="ignore"):
                    close = bool(np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=atol))
                entry = {"path": path, "max_abs": max_abs, "max_rel": max_rel, "within_tolerance": close}
                if path in compared:  # judged by what its group computes, not by its storage
                    entry["group"] = compared[path]
                out["values"].append(entry)
    out["only_in_b"] = [p for p in b if p not in a and p not in skip_b]


def diff(a: CheckpointIndex, b: CheckpointIndex, *, atol: float = 0.0, rtol: float = 0.0,
         options: RecognizeOptions | None = None, options_b: RecognizeOptions | None = None) -> dict[str, Any]:
    """Every difference between ``a`` and ``b``, and a verdict.

    ``verdict``: ``identical``; ``identical within tolerance``; ``same function`` (stored values differ
    only inside recurrent groups that compute the same thing, e.g. a bias moved between ``b_ih`` and
    ``b_hh``; ``equivalent`` is True, ``identical`` False); or ``different``.
    """
    ga, gb = recognize(a, options), recognize(b, options_b or options)
    out: dict[str, Any] = {"only_in_a": [], "only_in_b": [], "changed": [], "values": [], "groups": [],
                           "groups_only_in_a": [], "groups_only_in_b": []}
    compared: dict[str, str] = {}
    for pair in pair_groups(ga, gb):
        if pair.b is None:
            out["groups_only_in_a"].append(describe_group(ga[pair.a]) | {"members": ga[pair.a].members})
            continue
        if pair.a is None:
            out["groups_only_in_b"].append(describe_group(gb[pair.b]) | {"members": gb[pair.b].members})
            continue
        x, y = ga[pair.a], gb[pair.b]
        entry: dict[str, Any] = {"a": x.scope, "b": y.scope, "paired_by": pair.how, "kind": x.kind,
                                 "variant_a": x.variant, "variant_b": y.variant}
        sig_a = {k: getattr(x, k) for k in SIGNATURE_FIELDS}
        sig_b = {k: getattr(y, k) for k in SIGNATURE_FIELDS}
        if sig_a != sig_b:
            entry.update(mismatch="different kind or sizes: " + ", ".join(
                f"{k} {sig_a[k]!r} vs {sig_b[k]!r}" for k in SIGNATURE_FIELDS if sig_a[k] != sig_b[k]),
                semantics=[], constants=[], gates=[], output_max_abs=None)
        else:
            entry.update(compare_groups(x, y, atol=atol))
        entry["differs"] = differs(entry, atol)
        out["groups"].append(entry)
        if "mismatch" not in entry:  # same-path members of a compared pair: judged through the group
            for path in set(x.members) & set(y.members):
                compared[path] = x.scope or "/"
    # Members of paired groups are compared through their group; members of unpaired groups are listed with it.
    grouped_a = {m for g in ga for m in g.members}
    grouped_b = {m for g in gb for m in g.members}
    _tensors(a, b, grouped_a, grouped_b, atol, rtol, out, compared)
    storage = any(not v["within_tolerance"] for v in out["values"])
    functions = (out["only_in_a"] or out["only_in_b"] or out["changed"] or out["groups_only_in_a"]
                 or out["groups_only_in_b"] or any(not v["within_tolerance"] and "group" not in v for v in out["values"])
                 or any(g["differs"] for g in out["groups"]))
    out["identical"] = not (functions or storage)
    out["equivalent"] = not functions
    out["verdict"] = ("different" if functions else "same function" if storage
                      else "identical within tolerance" if out["values"] else "identical")
    return out
