"""Validate a checkpoint against a layout lock or a reference checkpoint: a list of findings."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..index import CheckpointIndex
from ..rnn.group import RecognizeOptions
from ..scopes import as_patterns, compile_glob, matches
from .layout import GROUP_FIELDS, make_layout, tensor_sha256
from .findings import CHECKS, KINDS, Case, Finding
from .pairing import pair_groups

__all__ = ["Finding", "Case", "validate", "KINDS", "CHECKS", "has_hashes"]

_CHECK_OF = {"missing": "present", "unexpected": "present"}
_FAMILIES = {"pytorch": "torch", "pytorch-legacy": "torch", "torchscript": "torch", "pickle": "torch", "safetensors": "flat",
             "npz": "flat", "npy": "flat", "keras": "keras", "keras-v3": "keras", "keras-h5": "keras", "hdf5": "keras", "tensorflow": "tf"}


def has_hashes(layout: dict[str, Any]) -> bool:
    """Whether a lock records values (``layout --hash``): such a lock's hashes are always checked."""
    return any("sha256" in t for t in layout.get("tensors", ()))


class _Cases:
    """Collects a ``Case`` per check as ``validate`` runs it, failures taken from the findings of that check."""

    def __init__(self, out: list[Case] | None, findings: list[Finding]) -> None:
        self.out, self.findings = out, findings

    def ran(self, name: str, check: str, since: int) -> None:
        if self.out is None:
            return
        bad = [f.message for f in self.findings[since:] if _CHECK_OF.get(f.kind, f.kind) == check]
        self.out.append(Case(name, check, "failed" if bad else "passed", "\n".join(bad)))

    def skipped(self, name: str, check: str, why: str) -> None:
        if self.out is not None:
            self.out.append(Case(name, check, "skipped", why))


def _same_family(a: str, b: str) -> bool:
    fa, fb = _FAMILIES.get(a, a), _FAMILIES.get(b, b)
    return fa == fb or "flat" in (fa, fb) and "keras" not in (fa, fb) and "tf" not in (fa, fb)


def validate(index: CheckpointIndex, layout: dict[str, Any], *, allow_extra: bool = False,
             allow_missing: Sequence[str] = (), check_finite: bool = False, check_hash: bool | None = None,
             options: RecognizeOptions | None = None,
             progress: Callable[[int, int], None] | None = None, cases: list[Case] | None = None) -> list[Finding]:
    """The findings of ``index`` against ``layout`` (a lock, or ``make_layout`` of a reference).

    ``check_hash``: compare values with the sha256 the layout records; None (the default) does so whenever the
    layout records any. ``progress(n, total)`` is called as tensors are read (hashes, ``check_finite``).
    ``cases``, when given, receives a ``Case`` per tensor and check, run or skipped (JUnit reports)."""
    findings: list[Finding] = []
    if check_hash is None:
        check_hash = has_hashes(layout)
    record = _Cases(cases, findings)
    total = index.nbytes * (int(check_hash) + int(check_finite))
    missing_ok = [compile_glob(p) for p in as_patterns(allow_missing, "allow_missing")]
    cross = not _same_family(index.format, layout.get("format", index.format))
    current = make_layout(index, options=options)
    groups_now = current["groups"]
    want_groups = layout.get("groups", [])
    if cross:  # names differ across frameworks: pair groups by meaning (pairing.pair_groups), never by order
        for pair in pair_groups(want_groups, groups_now):
            since = len(findings)
            if pair.b is None:
                want = want_groups[pair.a]
                if not _group_allowed_missing(want, layout, missing_ok):
                    findings += _group_findings(want, None, by_meaning=True)
                record.ran(want["scope"], "recurrent", since)
            elif pair.a is None:
                extra = groups_now[pair.b]
                if not allow_extra:
                    findings.append(Finding("recurrent", extra["scope"], f"recurrent group {extra['scope']!r} is not in the reference"))
                record.ran(extra["scope"], "recurrent", since)
            else:
                findings += _group_findings(want_groups[pair.a], groups_now[pair.b], by_meaning=True)
                record.ran(groups_now[pair.b]["scope"], "recurrent", since)
        for path in index:
            for check in ("present", "shape", "dtype", "hash"):
                record.skipped(path, check, "across formats tensors are compared as recurrent groups, not by name")
    else:
        now_by_scope = {g["scope"]: g for g in groups_now}
        for want in want_groups:
            since = len(findings)
            got = now_by_scope.get(want["scope"])
            if not (got is None and _group_allowed_missing(want, layout, missing_ok)):
                findings += _group_findings(want, got, by_meaning=False)
            record.ran(want["scope"], "recurrent", since)
        want_t = {t["path"]: t for t in layout["tensors"]}
        for path, ref in index.items():
            want = want_t.get(path)
            since = len(findings)
            if want is None:
                if not allow_extra:
                    findings.append(Finding("unexpected", path, f"{path}: not in the layout", None, ref.dtype_name))
                record.ran(path, "present", since)
                for check in ("shape", "dtype", "hash"):
                    record.skipped(path, check, "not in the layout")
                continue
            record.ran(path, "present", since)
            since = len(findings)
            if list(ref.shape) != list(want["shape"]):
                findings.append(Finding("shape", path, f"{path}: shape {list(ref.shape)}, expected {want['shape']}",
                                        want["shape"], list(ref.shape)))
            record.ran(path, "shape", since)
            since = len(findings)
            if ref.dtype_name != want["dtype"]:
                findings.append(Finding("dtype", path, f"{path}: dtype {ref.dtype_name}, expected {want['dtype']}",
                                        want["dtype"], ref.dtype_name))
            record.ran(path, "dtype", since)
            if not check_hash:
                record.skipped(path, "hash", "values not compared (the reference records no sha256; pass --hash)")
            elif "sha256" not in want:
                record.skipped(path, "hash", "the layout records no sha256 for this tensor")
            elif list(ref.shape) != list(want["shape"]) or ref.dtype_name != want["dtype"]:
                record.skipped(path, "hash", "shape or dtype differ: values not compared")
            else:
                since = len(findings)
                digest = tensor_sha256(ref.numpy())
                if progress is not None:
                    progress(ref.nbytes, total)
                if digest != want["sha256"]:
                    findings.append(Finding("hash", path, f"{path}: values differ from the locked sha256", want["sha256"], digest))
                record.ran(path, "hash", since)
        for path in want_t:
            if path not in index:
                since = len(findings)
                if not any(matches(rx, path) for rx in missing_ok):
                    findings.append(Finding("missing", path, f"{path}: in the layout, missing from the checkpoint", path, None))
                record.ran(path, "present", since)
                for check in ("shape", "dtype", "hash", "nonfinite"):
                    record.skipped(path, check, "not in the checkpoint")
    for path, ref in index.items():
        if not check_finite:
            record.skipped(path, "nonfinite", "NaN/inf not looked for (pass --check-finite)")
        elif ref.dtype.kind in "fc" or ref.dtype.name.startswith(("bfloat16", "float8")):
            since = len(findings)
            arr = ref.numpy()
            if progress is not None:
                progress(ref.nbytes, total)
            with np.errstate(invalid="ignore"):  # a signaling NaN raises "invalid" when widened
                bad = int(np.sum(~np.isfinite(arr.astype(np.float64) if arr.dtype.kind != "c" else arr)))
            if bad:
                findings.append(Finding("nonfinite", path, f"{path}: {bad} NaN/inf value(s)", 0, bad))
            record.ran(path, "nonfinite", since)
        else:
            record.skipped(path, "nonfinite", f"not a float tensor ({ref.dtype_name})")
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
