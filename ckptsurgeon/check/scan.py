"""``scan``: what loading a checkpoint would run, found without running anything; a verdict per file.

For every pickle in a file it lists each global the unpickler would have to resolve and each opcode by class,
from a static parse (``pickle_static``). Pickles are found by content (``scan_content``): any archive member
whose bytes are a pickle, whatever its name or case, archives inside archives and archives concatenated to
other bytes; a folder is walked whole, every file whether or not an index names it. The file is also opened
exactly as ``ls`` opens it (cycles, shared-container bombs, zip tricks, HDF5 links ...), so ``scan`` never
passes a file that ``ls`` refuses.

Verdicts (``LEVELS``, mildest first): ``clean``; ``code``: the file holds code its loader compiles or runs by
design (a TorchScript archive, a Keras ``Lambda`` layer, marshalled bytecode or custom objects in a Keras
configuration); ``unsafe``: loading it in the usual loader could run arbitrary code, or it could not be read
whole (a global or opcode outside the allowlist, a structural refusal, a refusal of ``ls``, a bound reached).
"""
from __future__ import annotations

import os
import re
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import location
from ..errors import CheckpointError, FormatError, UnsafeCheckpointError
from ..formats import detect, open_checkpoint
from ..formats.dcp.dcp_reader import sniff_folder as dcp_sniff_folder
from ..formats.pickles import PICKLE_WALKERS, extra_globals
from ..formats.pytorch.pickle_static import analyze, opcode_class
from ..formats.pytorch.safepickle import ALLOWED_OPCODES, global_allowed
from ..formats.sharded.hf_index import sniff_folder as hf_sniff_folder
from ..formats.tensorflow.tf_paths import resolve_prefix
from ..formats.tree import work_budget
from ..source import is_url
from .scan_content import walk_file
from .scan_keras import h5_config_findings
from .validate import Finding

__all__ = ["scan_file", "ScanResult", "PickleReport", "FileVerdict", "SCAN_KINDS", "LEVELS", "finding_level",
           "level_of", "MAX_FOLDER_FILES"]

# Finding kinds, in the order reports list them; "code" is the one kind of the level "code".
SCAN_KINDS = ("global", "opcode", "pickle", "archive", "config", "unsafe", "damaged", "code")
LEVELS = ("clean", "code", "unsafe")
MAX_FOLDER_FILES = 100_000  # files (and links) looked at in one folder argument
# Formats whose pickles the content walk finds itself: their built-in walkers would only find them again.
_CONTENT_FORMATS = frozenset({"pytorch", "pytorch-legacy", "npy", "npz"})
_BUILTIN_WALKERS = dict(PICKLE_WALKERS)


def finding_level(finding: Finding) -> str:
    return "code" if finding.kind == "code" else "unsafe"


def level_of(findings: Sequence[Finding]) -> str:
    """The verdict of a file with these findings: the worst of their levels, ``clean`` without any."""
    levels = {finding_level(f) for f in findings}
    return "unsafe" if "unsafe" in levels else "code" if levels else "clean"


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


class FileVerdict(NamedTuple):
    """One file of a folder argument: its format (None: not a checkpoint ``ls`` reads) and its verdict."""

    file: str
    format: str | None
    level: str


@dataclass
class ScanResult:
    file: str
    format: str | None
    pickles: list[PickleReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    allow_globals: tuple[str, ...] = ()
    files: list[FileVerdict] = field(default_factory=list)  # a folder argument: every file under it

    @property
    def ok(self) -> bool:
        """No finding of any level."""
        return not self.findings

    @property
    def level(self) -> str:
        return level_of(self.findings)

    def as_dict(self) -> dict[str, Any]:
        out = {"file": self.file, "format": self.format, "level": self.level, "ok": self.ok,
               "pickles": [p.as_dict(self.allow_globals) for p in self.pickles],
               "findings": [dict(f.as_dict(), level=finding_level(f)) for f in self.findings]}
        if self.files:
            out["files"] = [v._asdict() for v in self.files]
        return out


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


_AT_ZERO = re.compile(r"@0(?=:|$)")


class _Scan:
    """One argument's scan: pickles listed once each (a format's walker and the content walk may both find one)."""

    def __init__(self, result: ScanResult, allow_globals: Sequence[str]) -> None:
        self.result, self.allow = result, allow_globals
        self.listed: set[str] = set()
        self.errors: set[str] = set()  # texts of the refusals reported

    def pickle(self, where: str, data: bytes, extra: frozenset) -> None:
        key = _AT_ZERO.sub("", where)  # "f@0:data.pkl" and "f:data.pkl" (a zip at byte 0) are one place
        if key not in self.listed:
            self.listed.add(key)
            self.result.pickles.append(_scan_pickle(where, data, self.allow, self.result.findings, extra))

    def refused(self, exc: CheckpointError, where: str, context: str) -> None:
        if str(exc) not in self.errors:
            self.errors.add(str(exc))
            kind = "damaged" if isinstance(exc, FormatError) and not isinstance(exc, UnsafeCheckpointError) else "unsafe"
            self.result.findings.append(Finding(kind, where, f"{exc} ({context})"))

    def detect(self, path: str, *, report: bool) -> str | None:
        """The format ``ls`` reads ``path`` as; None for what it does not read (a finding when ``report``)."""
        try:
            return detect(path)
        except UnsafeCheckpointError as exc:
            self.refused(exc, path, "while looking for pickles")
        except CheckpointError as exc:
            if report:
                self.refused(exc, path, "while looking for pickles")
        except RecursionError:  # a JSON index nested thousands deep
            self.result.findings.append(Finding("damaged", path, f"{path}: structures nest too deeply to be read"))
        return None

    def look_into(self, path: str, fmt: str | None, *, is_file: bool, ls_speaks: bool = True) -> None:
        """``path``'s pickles (its format's walker, then by content) and Keras configurations."""
        walker = PICKLE_WALKERS.get(fmt) if fmt else None
        if walker is not None and fmt is not None and not (fmt in _CONTENT_FORMATS and walker is _BUILTIN_WALKERS.get(fmt)):
            extra = extra_globals(fmt)
            try:
                for where, data in walker(path):
                    self.pickle(where, data, extra)
            except CheckpointError as exc:
                self.refused(exc, path, "while looking for pickles")
            except RecursionError:  # a JSON index or a pickle nested thousands deep
                self.result.findings.append(Finding("damaged", path, f"{path}: structures nest too deeply to be read"))
        if is_file:
            walk_file(path, fmt, self.pickle, self.result.findings, self.errors, ls_speaks=ls_speaks)
        if fmt == "hdf5":
            try:
                self.result.findings.extend(h5_config_findings(path))
            except CheckpointError as exc:
                self.refused(exc, path, "while reading its Keras configuration")

    def open_as_ls(self, path: str) -> list[str]:
        """Open ``path`` as ``ls`` does; its refusal is a finding. Returns the files the checkpoint reads."""
        try:
            return list(open_checkpoint(path, allow_globals=self.allow).files)
        except CheckpointError as exc:
            self.refused(exc, path, "what ls says")
        return []

    def folder(self, path: str) -> None:
        """A local folder: as ``ls`` reads it if it is a checkpoint (DCP, HF shards, TensorFlow), and then every
        file under it by content, each file ``ls`` would read on its own also opened so; no link is followed."""
        fmt = self.detect(path, report=_names_a_checkpoint(path))
        self.result.format = fmt or "folder"
        covered: set[str] = set()
        if fmt is not None:
            self.look_into(path, fmt, is_file=False)
            covered = {os.path.normpath(f) for f in self.open_as_ls(path)}
        files: list[tuple[str, str | None]] = []
        for file, regular in _walk_folder(path, self.result.findings):
            if not regular:
                files.append((file, None))
                continue
            file_fmt = self.detect(file, report=False)
            files.append((file, file_fmt))
            self.look_into(file, file_fmt, is_file=True, ls_speaks=file_fmt is not None)
            if file_fmt is not None and os.path.normpath(file) not in covered:
                self.open_as_ls(file)
        by_file = _findings_by_file(self.result.findings, [f for f, _ in files])
        self.result.files = [FileVerdict(f, fmt_, level_of(by_file.get(f, []))) for f, fmt_ in files]


def _walk_folder(path: str, findings: list[Finding]) -> list[tuple[str, bool]]:
    """Every entry under ``path``, depth first in name order: (path, whether it is a regular file to read).
    Links are not followed and other special files not opened: each is a finding."""
    out: list[tuple[str, bool]] = []
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            findings.append(Finding("damaged", folder, f"{folder}: cannot list the folder: {exc.strerror or exc}"))
            continue
        subfolders = []
        for entry in entries:
            if len(out) >= MAX_FOLDER_FILES:
                findings.append(Finding("archive", path, f"{path}: more than {MAX_FOLDER_FILES:,} files; the rest is "
                                        "not looked at"))
                return out
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                subfolders.append(entry.path)
            elif stat.S_ISREG(mode):
                out.append((entry.path, True))
            else:
                what = f"a symbolic link to {os.readlink(entry.path)!r}" if stat.S_ISLNK(mode) else \
                    "not a regular file (a FIFO, socket or device)"
                findings.append(Finding("unsafe", entry.path, f"{entry.path}: is {what}; scan follows no links and "
                                        "opens no special files, so what a loader would read there is not scanned "
                                        "(scan the file itself)"))
                out.append((entry.path, False))
        stack.extend(reversed(subfolders))
    return out


def _names_a_checkpoint(path: str) -> bool:
    """Whether ``ls`` takes the folder for a checkpoint (a DCP ``.metadata``, an HF index, a TensorFlow state file
    or bundle), so that its refusal of it is a finding; any other folder is only a folder of files."""
    try:
        return bool(dcp_sniff_folder(path) or hf_sniff_folder(path) or resolve_prefix(path) is not None)
    except CheckpointError:
        return True


def _findings_by_file(findings: Sequence[Finding], files: Sequence[str]) -> dict[str, list[Finding]]:
    """Each finding under the file its place names (``file``, ``file:member``, ``file@offset``), the longest match."""
    known = set(files)
    out: dict[str, list[Finding]] = {}
    for f in findings:
        cuts = [i for i, c in enumerate(f.path) if c in ":@"] + [len(f.path)]
        owner = next((f.path[:i] for i in reversed(cuts) if f.path[:i] in known), None)
        if owner is not None:
            out.setdefault(owner, []).append(f)
    return out


def _local_folder(path: str) -> bool:
    return not is_url(path) and not os.path.islink(path) and os.path.isdir(path)


def scan_file(path: str, *, allow_globals: Sequence[str] = ()) -> ScanResult:
    """Scan one argument: a file, or a folder and every file under it (``result.files`` gives each its verdict).
    Its pickles statically, its archives and configurations by content, then the argument as ``ls`` opens it."""
    result = ScanResult(path, None, allow_globals=tuple(allow_globals))
    scan = _Scan(result, allow_globals)
    if _local_folder(path):
        scan.folder(path)
        return result
    result.format = scan.detect(path, report=True)
    scan.look_into(path, result.format, is_file=location.kind(path) == "file" and not location.islink(path))
    scan.open_as_ls(path)
    return result
