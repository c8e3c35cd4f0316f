"""``scan``: what the pickles inside a checkpoint would need, found without running anything.

For every pickle in a file (``formats.pickles`` finds them per format) it lists each global the
unpickler would have to resolve and each opcode by class, from a static parse (``pickle_static``).
Findings: a global outside the allowlist, an opcode outside the allowlist, a structural refusal (a
hidden second pickle, a tuple bomb, a malformed pickle), and anything ``ls`` itself refuses: the file
is also opened exactly as ``ls`` opens it (cycles, shared-container bombs, zip tricks, HDF5 links ...),
so ``scan`` never passes a file that ``ls`` refuses as unsafe.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, FormatError, UnsafeCheckpointError
from ..formats import detect, open_checkpoint
from ..formats.pickles import extra_globals, pickles_in
from ..formats.pytorch.pickle_static import analyze, opcode_class
from ..formats.pytorch.safepickle import ALLOWED_OPCODES, global_allowed
from ..formats.tree import work_budget
from .validate import Finding

__all__ = ["scan_file", "ScanResult", "PickleReport", "SCAN_KINDS"]

# Finding kinds, in the order reports list them.
SCAN_KINDS = ("global", "opcode", "pickle", "unsafe", "damaged")


@dataclass
class PickleReport:
    where: str
    nbytes: int
    globals: Counter = field(default_factory=Counter)  # (module, name) -> uses
    opcodes: dict[str, Counter] = field(default_factory=dict)  # class -> opcode -> uses

    extra: frozenset = frozenset()  # the format's own admitted globals

    def as_dict(self, allow_globals: Sequence[str] = ()) -> dict[str, Any]:
        return {
            "where": self.where, "bytes": self.nbytes,
            "globals": [{"module": m, "name": n, "uses": c, "allowed": _allowed(m, n, allow_globals, self.extra)}
                        for (m, n), c in sorted(self.globals.items())],
            "opcodes": {cls: dict(sorted(ops.items())) for cls, ops in sorted(self.opcodes.items())},
        }


@dataclass
class ScanResult:
    file: str
    format: str | None
    pickles: list[PickleReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    allow_globals: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "ok": self.ok,
                "pickles": [p.as_dict(self.allow_globals) for p in self.pickles],
                "findings": [f.as_dict() for f in self.findings]}


def _allowed(module: str, name: str, allow_globals: Sequence[str], extra: frozenset = frozenset()) -> bool:
    try:
        return (module, name) in extra or global_allowed(module, name, allow_globals)
    except CheckpointError:
        return False


def _scan_pickle(where: str, data: bytes, allow_globals: Sequence[str], findings: list[Finding],
                 extra: frozenset = frozenset()) -> PickleReport:
    facts = analyze(data, work_budget(len(data)))
    report = PickleReport(where, len(data), extra=extra)
    for module, name, _pos in facts.globals:
        report.globals[(module, name)] += 1
    for op, count in facts.opcodes.items():
        report.opcodes.setdefault(opcode_class(op), Counter())[op] = count
    for (module, name), _count in sorted(report.globals.items()):
        if not _allowed(module, name, allow_globals, extra):
            at = next(p for m, n, p in facts.globals if (m, n) == (module, name))
            findings.append(Finding("global", where, f"{where}: global {module}.{name} (byte {at}) is not on the "
                                    "allowlist; unpickling it could run code", None, f"{module}.{name}"))
    for op, pos in sorted(facts.first_at.items(), key=lambda item: item[1]):
        if op not in ALLOWED_OPCODES:
            findings.append(Finding("opcode", where, f"{where}: opcode {op} ({opcode_class(op)}, first at byte {pos}, "
                                    f"{facts.opcodes[op]} uses) is not on the allowlist", None, op))
    for problem in facts.problems:
        findings.append(Finding("pickle", where, f"{where}: {problem}"))
    if facts.malformed:
        findings.append(Finding("pickle", where, f"{where}: malformed pickle after byte {facts.end}: {facts.malformed}"))
    return report


def scan_file(path: str, *, allow_globals: Sequence[str] = ()) -> ScanResult:
    """Scan one checkpoint: its pickles statically, then the file as ``ls`` opens it."""
    result = ScanResult(path, None, allow_globals=tuple(allow_globals))
    seen: set[str] = set()
    try:
        result.format = detect(path)
        extra = extra_globals(result.format)
        for where, data in pickles_in(path, result.format):
            result.pickles.append(_scan_pickle(where, data, allow_globals, result.findings, extra))
    except CheckpointError as exc:
        seen.add(str(exc))
        result.findings.append(_refusal(exc, "while looking for pickles"))
    except RecursionError:  # a JSON index or a pickle nested thousands deep
        result.findings.append(Finding("damaged", "", f"{path}: structures nest too deeply to be read"))
    try:
        open_checkpoint(path, allow_globals=allow_globals)
    except CheckpointError as exc:
        if str(exc) not in seen:
            result.findings.append(_refusal(exc, "what ls says"))
    return result


def _refusal(exc: CheckpointError, context: str) -> Finding:
    kind = "damaged" if isinstance(exc, FormatError) and not isinstance(exc, UnsafeCheckpointError) else "unsafe"
    return Finding(kind, "", f"{exc} ({context})")
