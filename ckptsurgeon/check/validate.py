"""Validate a checkpoint against a layout lock or a reference checkpoint: a list of findings."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..index import CheckpointIndex
from ..rnn.group import RecognizeOptions
from ..scopes import as_patterns, compile_glob, matches
from .layout import GROUP_FIELDS, make_layout, tensor_sha256
from .pairing import pair_groups

__all__ = ["Finding", "validate", "KINDS"]

KINDS = ("missing", "unexpected", "shape", "dtype", "recurrent", "nonfinite", "hash")
_FAMILIES = {"pytorch": "torch", "pytorch-legacy": "torch", "pickle": "torch", "safetensors": "flat", "npz": "flat",
             "npy": "flat", "keras": "keras", "keras-v3": "keras", "keras-h5": "keras", "hdf5": "keras", "tensorflow": "tf"}


@dataclass
class Finding:
    kind: str
    path: str
    message: str
    expected: Any = None
    actual: Any = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _same_family(a: str, b: str) -> bool:
    fa, fb = _FAMILIES.get(a, a), _FAMILIES.get(b, b)
    return fa == fb or "flat" in (fa, fb) and "keras" not in (fa, fb) and "tf" not in (fa, fb)


def validate(index: CheckpointIndex, layout: dict[str, Any], *, allow_extra: bool = False,
             allow_missing: Sequence[str] = (), check_finite: bool = False, check_hash: bool = False,
             options: RecognizeOptions | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Finding]:
    """``progress(n, total)`` is called as tensors are read (``check_hash``, ``check_finite``)."""
    findings: list[Finding] = []
    total = index.nbytes * (int(check_hash) + int(check_finite))
    missing_ok = [compile_glob(p) for p in as_patterns(allow_missing, "allow_missing")]
    cross = not _same_family(index.format, layout.get("format", index.format))
    current = make_layout(index, options=options)
    groups_now = current["groups"]
    want_groups = layout.get("groups", [])
    if cross:  # names differ across frameworks: pair groups by meaning (pairing.pair_groups), never by order
        for pair in pair_groups(want_groups, groups_now):
            if pair.b is None:
                if not _group_allowed_missing(want_groups[pair.a], layout, missing_ok):
                    findings += _group_findings(want_groups[pair.a], None, by_meaning=True)
            elif pair.a is None:
                extra = groups_now[pair.b]
                if not allow_extra:
                    findings.append(Finding("recurrent", extra["scope"], f"recurrent group {extra['scope']!r} is not in the reference"))
            else:
                findings += _group_findings(want_groups[pair.a], groups_now[pair.b], by_meaning=True)
    else:
        now_by_scope = {g["scope"]: g for g in groups_now}
        for want in want_groups:
            got = now_by_scope.get(want["scope"])
            if got is None and _group_allowed_missing(want, layout, missing_ok):
                continue
            findings += _group_findings(want, got, by_meaning=False)
        want_t = {t["path"]: t for t in layout["tensors"]}
        for path, ref in index.items():
            want = want_t.get(path)
            if want is None:
                if not allow_extra:
                    findings.append(Finding("unexpected", path, f"{path}: not in the layout", None, ref.dtype_name))
                continue
            if list(ref.shape) != list(want["shape"]):
                findings.append(Finding("shape", path, f"{path}: shape {list(ref.shape)}, expected {want['shape']}",
                                        want["shape"], list(ref.shape)))
            if ref.dtype_name != want["dtype"]:
                findings.append(Finding("dtype", path, f"{path}: dtype {ref.dtype_name}, expected {want['dtype']}",
                                        want["dtype"], ref.dtype_name))
            if check_hash and "sha256" in want and list(ref.shape) == list(want["shape"]) and ref.dtype_name == want["dtype"]:
                digest = tensor_sha256(ref.numpy())
                if progress is not None:
                    progress(ref.nbytes, total)
                if digest != want["sha256"]:
                    findings.append(Finding("hash", path, f"{path}: values differ from the locked sha256", want["sha256"], digest))
        for path in want_t:
            if path not in index and not any(matches(rx, path) for rx in missing_ok):
                findings.append(Finding("missing", path, f"{path}: in the layout, missing from the checkpoint", path, None))
    if check_finite:
        for path, ref in index.items():
            if ref.dtype.kind in "fc" or ref.dtype.name.startswith(("bfloat16", "float8")):
                arr = ref.numpy()
                if progress is not None:
                    progress(ref.nbytes, total)
                bad = int(np.sum(~np.isfinite(arr.astype(np.float64) if arr.dtype.kind != "c" else arr)))
                if bad:
                    findings.append(Finding("nonfinite", path, f"{path}: {bad} NaN/inf value(s)", 0, bad))
    return findings


def _group_allowed_missing(want: dict[str, Any], layout: dict[str, Any], missing_ok: list) -> bool:
    """``--allow-missing`` covers a group when it matches the group's scope or every one of its tensors."""
    if not missing_ok:
        return False
    scope = want["scope"]
    if scope and any(matches(rx, scope) for rx in missing_ok):
        return True
    members = want.get("members")
    if members is None:  # lock files written before groups listed their members
        members = [t["path"] for t in layout["tensors"] if not scope or t["path"] == scope or t["path"].startswith(scope + "/")]
    return bool(members) and all(any(matches(rx, m) for rx in missing_ok) for m in members)


def _group_findings(want: dict[str, Any], got: dict[str, Any] | None, *, by_meaning: bool) -> list[Finding]:
    scope = want["scope"]
    if got is None:
        return [Finding("recurrent", scope, f"recurrent group {scope!r} ({want['kind']}) not found", want["kind"], None)]
    fields = GROUP_FIELDS if by_meaning else GROUP_FIELDS + ("layout",)
    diffs = [f"{k} {got.get(k)!r} (expected {want.get(k)!r})" for k in fields if want.get(k) != got.get(k)]
    if not diffs:
        return []
    name = f"{got['scope']!r} (as {scope!r})" if by_meaning and got["scope"] != scope else repr(scope)
    return [Finding("recurrent", got["scope"], f"recurrent group {name}: " + ", ".join(diffs),
                    {k: want.get(k) for k in fields}, {k: got.get(k) for k in fields})]
