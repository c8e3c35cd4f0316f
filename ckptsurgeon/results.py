"""Typed results of the reporting API (``ckptsurgeon.stats``, ``validate``, ``layout``, ``diff``, ``scan``, ``rnn``,
``verify``): frozen, read-only views of what each command's ``--json`` prints.

Each result keeps the JSON object its command prints (``data``) and exposes its main members as typed
fields; ``to_dict()`` gives that object back (a copy), so a result and ``--json`` cannot drift apart. Deeper
rows the fields do not type (per-gate statistics, group pairings) stay plain dicts, as ``--json`` has them.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["plain", "Finding", "TensorStats", "GroupStats", "StatsResult", "ValidationResult", "LayoutTensor",
           "LayoutGroup", "Layout", "DiffResult", "ScanFile", "ScanReport", "GroupInfo", "RnnResult", "GroupCheck",
           "VerifyResult"]

Row = Mapping[str, Any]


def plain(obj: Any) -> Any:
    """``obj`` as ``--json`` prints it, parsed back: dicts, lists, strings, numbers, booleans and None
    (tuples become lists, anything else its ``str``, as the CLI's encoder does)."""
    return json.loads(json.dumps(obj, default=str))


@dataclass(frozen=True)
class _View:
    """A typed view of one JSON object (``data``); ``to_dict()`` is that object, as ``--json`` prints it."""

    data: dict[str, Any] = field(repr=False, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)


def _rows(items: Sequence[Any] | None) -> tuple[Row, ...]:
    return tuple(items or ())


@dataclass(frozen=True)
class Finding(_View):
    """One validation or scan finding: its kind (``missing``, ``shape``, ``global`` ...), where, and what.
    ``level`` (scan only): ``code`` or ``unsafe``."""

    kind: str
    path: str
    message: str
    expected: Any = None
    actual: Any = None
    level: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["kind"], d["path"], d["message"], d.get("expected"), d.get("actual"), d.get("level"), data=d)


@dataclass(frozen=True)
class TensorStats(_View):
    """Statistics of one tensor and the initializer they fit best (``init``, with its ``evidence``)."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    optimizer: bool
    mean: float
    std: float
    min: float
    max: float
    zeros: float
    l2: float
    orthogonality: float | None
    init: str
    evidence: str
    candidates: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorStats:
        return cls(d["path"], tuple(d["shape"]), d["dtype"], d["optimizer"], d["mean"], d["std"], d["min"], d["max"],
                   d["zeros"], d["l2"], d["orthogonality"], d["init"], d["evidence"], tuple(d["candidates"]), data=d)


@dataclass(frozen=True)
class GroupStats(_View):
    """A recurrent group's statistics per layer, direction, gate and part (``gates``: one dict per row)."""

    scope: str
    kind: str
    variant: str
    gates: tuple[Row, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupStats:
        return cls(d["scope"], d["kind"], d["variant"], _rows(d["gates"]), data=d)


@dataclass(frozen=True)
class StatsResult(_View):
    """``ckptsurgeon stats --json``: per-tensor and per-gate statistics, groups holding identical values."""

    format: str
    tensors: tuple[TensorStats, ...]
    groups: tuple[GroupStats, ...]
    left_out_optimizer: int
    identical_groups: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatsResult:
        return cls(d["format"], tuple(TensorStats.from_dict(t) for t in d["tensors"]),
                   tuple(GroupStats.from_dict(g) for g in d["groups"]), d["left_out_optimizer"],
                   tuple(tuple(s) for s in d["identical_groups"]), data=d)


@dataclass(frozen=True)
class ValidationResult(_View):
    """``ckptsurgeon validate --json`` of one checkpoint: ``ok`` when there is no finding; ``checks``: how many
    checks (one per tensor and check) ``passed``, ``failed`` and were ``skipped``."""

    checkpoint: str
    reference: str
    ok: bool
    findings: tuple[Finding, ...]
    checks: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationResult:
        files = d.get("files") or [{}]
        return cls(d.get("checkpoint", files[0].get("file", "")), d["reference"], d["ok"],
                   tuple(Finding.from_dict(f) for f in d["findings"]), dict(files[0].get("checks") or {}), data=d)


@dataclass(frozen=True)
class LayoutTensor(_View):
    """One tensor of a layout lock; ``sha256`` of its values when the lock was made with ``hash=True``."""

    path: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayoutTensor:
        return cls(d["path"], d.get("key", d["path"]), tuple(d["shape"]), d["dtype"], d.get("sha256"), data=d)


@dataclass(frozen=True)
class LayoutGroup(_View):
    """One recurrent group of a layout lock: what ``validate`` compares by meaning across formats."""

    scope: str
    kind: str
    layout: str | None
    input_size: int
    hidden_size: int
    num_layers: int
    directions: int
    members: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayoutGroup:
        return cls(d["scope"], d.get("kind", ""), d.get("layout"), d.get("input_size", 0), d.get("hidden_size", 0),
                   d.get("num_layers", 1), d.get("directions", 1), tuple(d.get("members") or ()), data=d)


@dataclass(frozen=True)
class Layout(_View):
    """A layout lock (``ckptsurgeon layout``): format, every tensor's path, shape and dtype, recurrent groups.
    ``path``: the file it was written to or read from (not part of the lock)."""

    version: int
    format: str
    tensors: tuple[LayoutTensor, ...]
    groups: tuple[LayoutGroup, ...]
    path: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | None = None) -> Layout:
        return cls(d["version"], d.get("format", ""), tuple(LayoutTensor.from_dict(t) for t in d["tensors"]),
                   tuple(LayoutGroup.from_dict(g) for g in d.get("groups", [])), path, data=d)


@dataclass(frozen=True)
class DiffResult(_View):
    """``ckptsurgeon diff --json``. ``verdict``: ``identical``, ``identical within tolerance``, ``same function``
    (values differ only inside recurrent groups that compute the same) or ``different``."""

    identical: bool
    equivalent: bool
    verdict: str
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    changed: tuple[Row, ...]
    values: tuple[Row, ...]
    groups: tuple[Row, ...]
    groups_only_in_a: tuple[Row, ...]
    groups_only_in_b: tuple[Row, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffResult:
        return cls(d["identical"], d.get("equivalent", d["identical"]), d.get("verdict", ""), tuple(d["only_in_a"]),
                   tuple(d["only_in_b"]), _rows(d["changed"]), _rows(d["values"]), _rows(d["groups"]),
                   _rows(d["groups_only_in_a"]), _rows(d["groups_only_in_b"]), data=d)


@dataclass(frozen=True)
class ScanFile(_View):
    """One scanned argument: its verdict (``level``: clean, code, unsafe), the pickles found and the findings.
    ``files``: for a folder, every file under it with its own verdict."""

    file: str
    format: str | None
    level: str
    ok: bool
    pickles: tuple[Row, ...]
    findings: tuple[Finding, ...]
    files: tuple[Row, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanFile:
        return cls(d["file"], d.get("format"), d["level"], d["ok"], _rows(d.get("pickles")),
                   tuple(Finding.from_dict(f) for f in d.get("findings", [])), _rows(d.get("files")), data=d)


@dataclass(frozen=True)
class ScanReport(_View):
    """``ckptsurgeon scan --json``: a verdict per file; ``failed`` when one reaches ``fail_on`` (the exit 1);
    ``summary``: how many files (those under folders included) have each verdict."""

    ok: bool
    level: str
    fail_on: str
    files: tuple[ScanFile, ...]
    failed: bool = False
    summary: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], failed: bool = False) -> ScanReport:
        return cls(d["ok"], d["level"], d["fail_on"], tuple(ScanFile.from_dict(f) for f in d["files"]), failed,
                   dict(d.get("summary") or {}), data=d)


@dataclass(frozen=True)
class GroupInfo(_View):
    """One recurrent group as ``ckptsurgeon rnn --json`` describes it; every fact with its source in ``provenance``."""

    scope: str
    kind: str
    layout: str
    variant: str
    input_size: int
    hidden_size: int
    proj_size: int | None
    num_layers: int
    directions: int
    members: tuple[str, ...]
    notes: tuple[str, ...]
    provenance: Mapping[str, str]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupInfo:
        return cls(d["scope"], d["kind"], d["layout"], d["variant"], d["input_size"], d["hidden_size"], d.get("proj_size"),
                   d["num_layers"], d["directions"], tuple(d["members"]), tuple(d.get("notes") or ()),
                   dict(d.get("provenance") or {}), data=d)


@dataclass(frozen=True)
class RnnResult(_View):
    """The recurrent groups of a checkpoint: ``ckptsurgeon rnn --json`` prints ``to_dict()["groups"]``."""

    groups: tuple[GroupInfo, ...]

    @classmethod
    def from_list(cls, groups: list[dict[str, Any]]) -> RnnResult:
        return cls(tuple(GroupInfo.from_dict(g) for g in groups), data={"groups": groups})


@dataclass(frozen=True)
class GroupCheck(_View):
    """One verified group pair: the largest output difference on the same random inputs, and whether it is
    within ``atol``."""

    source: str
    converted: str
    kind: str
    max_abs_diff: float
    ok: bool
    atol: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupCheck:
        return cls(d["source"], d["converted"], d["kind"], d["max_abs_diff"], d["ok"], d["atol"], data=d)


@dataclass(frozen=True)
class VerifyResult(_View):
    """``ckptsurgeon verify --json`` prints ``to_dict()["pairs"]``; ``ok`` when every pair is within ``atol``."""

    ok: bool
    pairs: tuple[GroupCheck, ...]

    @classmethod
    def from_list(cls, pairs: list[dict[str, Any]]) -> VerifyResult:
        checks = tuple(GroupCheck.from_dict(p) for p in pairs)
        return cls(all(c.ok for c in checks), checks, data={"ok": all(c.ok for c in checks), "pairs": pairs})
