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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from .. import location
from ..errors import CheckpointError, FormatError, UnsafeCheckpointError
from ..formats import detect, open_checkpoint
from ..formats.magic import DCP_METADATA, sniff_dcp_folder as dcp_sniff_folder
from ..formats.pickles import PICKLE_WALKERS, extra_globals
from ..formats.pytorch.pickle_static import PickleFacts, analyze, opcode_class
from ..formats.pytorch.safepickle import ALLOWED_OPCODES, global_allowed
from ..formats.sharded.hf_index import INDEX_NAMES as hf_index_names, sniff_folder as hf_sniff_folder
from ..formats.tensorflow.tf_paths import SAVED_MODEL_VARIABLES, STATE_FILE, resolve_prefix
from ..formats.tree import work_budget
from ..source import is_url, settled
from .lfs import is_lfs_pointer, lfs_message
from .scan_content import walk_file
from .scan_keras import h5_config_findings
from .scan_pool import MAX_CHUNKS, SharedChunks, can_fork
from .findings import Finding

__all__ = ["scan_file", "scan_files", "PARALLEL_MIN_FILES", "ScanResult", "PickleReport", "FileVerdict", "SCAN_KINDS", "LEVELS", "finding_level",
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
                 extra: frozenset = frozenset(), facts: PickleFacts | None = None) -> PickleReport:
    """The report of one pickle; ``facts``: its analysis (``analyze(data, work_budget(len(data)))``) if made."""
    if facts is None:
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
        self.told: set[tuple[str, str, str]] | None = None  # findings held, once members are merged (``merge``)

    def pickle(self, where: str, data: bytes, extra: frozenset, facts: PickleFacts | None = None) -> None:
        key = _AT_ZERO.sub("", where)  # "f@0:data.pkl" and "f:data.pkl" (a zip at byte 0) are one place
        if key not in self.listed:
            self.listed.add(key)
            self.result.pickles.append(_scan_pickle(where, data, self.allow, self.result.findings, extra, facts))

    def refused(self, exc: CheckpointError, where: str, context: str) -> None:
        if str(exc) not in self.errors:
            self.errors.add(str(exc))
            kind = "damaged" if isinstance(exc, FormatError) and not isinstance(exc, UnsafeCheckpointError) else "unsafe"
            self.result.findings.append(Finding(kind, where, f"{exc} ({context})"))

    def detect(self, path: str, *, report: bool) -> str | None:
        """The format ``ls`` reads ``path`` as; None for what it does not read (a finding when ``report``).
        A Git LFS pointer is always a finding: the checkpoint it stands for was not scanned."""
        if is_lfs_pointer(path):
            self.result.findings.append(Finding("damaged", path, lfs_message(path)))
            return None
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

    def open_as_ls(self, path: str, fmt: str | None = None) -> list[str]:
        """Open ``path`` as ``ls`` does; its refusal is a finding. Returns the files the checkpoint reads.
        ``fmt``: what ``detect`` named it (not detected again)."""
        try:
            return list(open_checkpoint(path, allow_globals=self.allow, detected=fmt).files)
        except CheckpointError as exc:
            self.refused(exc, path, "what ls says")
        return []

    def folder_begin(self, path: str, walked: _Walked) -> set[str]:
        """A local folder as ``ls`` reads it if it is a checkpoint (DCP, HF shards, TensorFlow), and the checkpoint
        folders below it; ``walked``: every entry under it (``walk_folder``). Returns the files those readings cover."""
        fmt = self.detect(path, report=path in walked.checkpoints)
        self.result.format = fmt or "folder"
        covered = self.checkpoint_folder(path, fmt)
        self.result.findings.extend(walked.findings)
        # a checkpoint folder below it (a DCP, HF shards, TensorFlow) is read as such too, with its format's own
        # admitted globals, exactly as scanning that folder itself would: the verdict of a file never depends on
        # which folder the scan started from
        for folder in walked.below:
            if folder in walked.checkpoints:
                covered |= self.checkpoint_folder(folder, self.detect(folder, report=True))
        return covered

    def checkpoint_folder(self, path: str, fmt: str | None) -> set[str]:
        """A folder ``ls`` reads as a checkpoint of ``fmt``: its pickles, its opening; the files that covers."""
        if fmt is None:
            return set()
        self.look_into(path, fmt, is_file=False)
        return {os.path.normpath(f) for f in self.open_as_ls(path, fmt)}

    def member(self, file: str, covered: bool) -> str | None:
        """One regular file under a folder, by content, and as ``ls`` opens it unless the folder's reading covered it."""
        file_fmt = self.content(file)
        if file_fmt is not None and not covered:
            self.open_as_ls(file, file_fmt)
        return file_fmt

    def content(self, file: str) -> str | None:
        """One regular file under a folder, by content (its format, None for what ``ls`` does not read)."""
        file_fmt = self.detect(file, report=False)
        self.look_into(file, file_fmt, is_file=True, ls_speaks=file_fmt is not None)
        return file_fmt

    def merge(self, part: ScanResult) -> None:
        """A member scanned in another process: its pickles and findings, less what this scan already holds
        (the folder's own walker may have listed a member's pickles; a refusal is told once)."""
        dup = set()
        for report in part.pickles:
            key = _AT_ZERO.sub("", report.where)
            if key in self.listed:
                dup.add(report.where)
            else:
                self.listed.add(key)
                self.result.pickles.append(report)
        if self.told is None:
            self.told = {(f.kind, f.path, f.message) for f in self.result.findings}
        told = self.told
        for f in part.findings:
            if (f.kind, f.path, f.message) in told or f.kind in ("global", "opcode", "pickle") and f.path in dup:
                continue
            told.add((f.kind, f.path, f.message))
            self.result.findings.append(f)

    def folder_end(self, files: list[tuple[str, str | None]]) -> None:
        by_file = _findings_by_file(self.result.findings, [f for f, _ in files])
        self.result.files = [FileVerdict(f, fmt_, level_of(by_file.get(f, []))) for f, fmt_ in files]

    def folder(self, path: str) -> None:
        """A local folder: as ``ls`` reads it if it is a checkpoint, and then every file under it by content."""
        walked = walk_folder(path)
        covered = self.folder_begin(path, walked)
        files = [(file, self.member(file, os.path.normpath(file) in covered) if regular else None)
                 for file, regular in walked.entries]
        self.folder_end(files)


class _Walked(NamedTuple):
    """Every entry under a folder (path, whether it is a regular file to read), the findings of the walk (links,
    special files, bounds), the folders below it in name order, and which of these and the folder itself ``ls``
    takes for a checkpoint (``_names_a_checkpoint``)."""

    entries: list[tuple[str, bool]]
    findings: list[Finding]
    below: list[str]
    checkpoints: frozenset[str]


def walk_folder(path: str) -> _Walked:
    """Every entry under a local folder, as ``_Walked`` tells them."""
    findings: list[Finding] = []
    names: dict[str, set[str]] = {}
    entries = _walk_folder(path, findings, names)
    below = sorted({os.path.dirname(f) for f, _ in entries} - {path, os.path.normpath(path)})
    return _Walked(entries, findings, below, frozenset(
        f for f in [path, *below] if (f not in names or _may_name_a_checkpoint(names[f])) and _names_a_checkpoint(f)))


def _walk_folder(path: str, findings: list[Finding], names: dict[str, set[str]] | None = None) -> list[tuple[str, bool]]:
    """Every entry under ``path``, depth first in name order: (path, whether it is a regular file to read).
    Links are not followed and other special files not opened: each is a finding. ``names``: filled with each
    folder's entry names."""
    out: list[tuple[str, bool]] = []
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            findings.append(Finding("damaged", folder, f"{folder}: cannot list the folder: {exc.strerror or exc}"))
            continue
        if names is not None:
            names[folder] = {e.name.casefold() for e in entries}
        subfolders = []
        for entry in entries:
            if len(out) >= MAX_FOLDER_FILES:
                findings.append(Finding("archive", path, f"{path}: more than {MAX_FOLDER_FILES:,} files; the rest is "
                                        "not looked at"))
                return out
            # the entry's type from the listing (no system call where the file system gives it), never a link's target
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                out.append((entry.path, True))
            else:
                mode = entry.stat(follow_symlinks=False).st_mode
                what = f"a symbolic link to {os.readlink(entry.path)!r}" if stat.S_ISLNK(mode) else \
                    "not a regular file (a FIFO, socket or device)"
                findings.append(Finding("unsafe", entry.path, f"{entry.path}: is {what}; scan follows no links and "
                                        "opens no special files, so what a loader would read there is not scanned "
                                        "(scan the file itself)"))
                out.append((entry.path, False))
        stack.extend(reversed(subfolders))
    return out


# Entry names without which ``ls`` takes no folder for a checkpoint (``_names_a_checkpoint``): DCP's metadata,
# HF indexes, a TensorFlow state file, a SavedModel's variables; and any ``*.index`` (a TensorFlow bundle). Compared
# case-folded: on a case-insensitive file system (macOS, Windows) the probes find ``Checkpoint`` for ``checkpoint``.
_CHECKPOINT_NAMES = frozenset(n.casefold() for n in (DCP_METADATA, STATE_FILE, SAVED_MODEL_VARIABLES, *hf_index_names))


def _may_name_a_checkpoint(names: set[str]) -> bool:
    """False when a folder whose entries have these case-folded ``names`` cannot be a checkpoint folder: spares
    most folders their probes."""
    return not _CHECKPOINT_NAMES.isdisjoint(names) or any(n.endswith(".index") for n in names)


def _names_a_checkpoint(path: str) -> bool:
    """Whether ``ls`` takes the folder for a checkpoint (a DCP ``.metadata``, an HF index, a TensorFlow state file
    or bundle), so that its refusal of it is a finding; any other folder is only a folder of files."""
    if location.isfile(os.path.join(path, STATE_FILE)):
        return True  # resolve_prefix names the checkpoint the state file names, or refuses the folder: either way
    try:
        return bool(dcp_sniff_folder(path) or hf_sniff_folder(path) or resolve_prefix(path) is not None)
    except CheckpointError:
        return True


def _findings_by_file(findings: Sequence[Finding], files: Sequence[str]) -> dict[str, list[Finding]]:
    """Each finding under the file its place names (``file``, ``file:member``, ``file@offset``), the longest match."""
    known = set(files)
    out: dict[str, list[Finding]] = {}
    for f in findings:
        path, cut = f.path, len(f.path)
        while cut >= 0 and path[:cut] not in known:
            cut = max(path.rfind(":", 0, cut), path.rfind("@", 0, cut))
        if cut >= 0:
            out.setdefault(path[:cut], []).append(f)
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
    if result.format is None and is_lfs_pointer(path):
        return result  # its finding says it all: the checkpoint it stands for is not here
    scan.look_into(path, result.format, is_file=location.kind(path) == "file" and not location.islink(path))
    scan.open_as_ls(path, result.format)
    return result


T = TypeVar("T")
PARALLEL_MIN_FILES = 256  # fewer files are scanned in this process alone (bench/scan_vs_picklescan)
_H5_NAMES = (".h5", ".hdf5")  # files put together in one chunk: one child describes them all (``_prefetch_hdf5``)


class _Task(NamedTuple):
    """A whole argument (``scan_file``), or one file under a folder argument. ``defer``: the file lies in a
    checkpoint folder, whose reading (in the parent) tells whether it is also opened as ``ls`` opens it."""

    whole: bool
    path: str
    defer: bool
    allow: tuple[str, ...]


class _Done(NamedTuple):
    """A task's outcome: the file's format, its part of the scan, how many findings it had before it was opened
    as ``ls`` opens it, and (deferred tasks) the refusals told so far."""

    fmt: str | None
    part: ScanResult
    before_ls: int
    errors: set[str] | None


def _run(task: _Task) -> _Done:
    """A task; a file not deferred is opened as ``ls`` opens it, a finding the parent drops if a folder's reading
    covers the file after all (``_finish``). Its files are checked unchanged once, not at each opening (``settled``)."""
    with settled():
        return _run_task(task)


def _run_task(task: _Task) -> _Done:
    if task.whole:
        return _Done(None, scan_file(task.path, allow_globals=task.allow), 0, None)
    part = ScanResult(task.path, None, allow_globals=task.allow)
    scan = _Scan(part, task.allow)
    fmt = scan.content(task.path)
    before = len(part.findings)
    if fmt is not None and not task.defer:
        scan.open_as_ls(task.path, fmt)
    return _Done(fmt, part, before, scan.errors if task.defer else None)


class _Opened(NamedTuple):
    """A file opened as ``ls`` opens it ahead of its ``_finish`` (``_open_uncovered``): the format it was opened
    as, and the refusal if any."""

    fmt: str
    refusal: CheckpointError | None


def _finish(done: _Done, task: _Task, covered: bool, opened: _Opened | None = None) -> ScanResult:
    """A member's part as ``_Scan.member(file, covered)`` makes it, from what ``_run`` did before ``covered`` was known;
    ``opened``: the file already opened as ``ls`` opens it, as that format."""
    if done.fmt is not None:
        if task.defer and not covered:
            scan = _Scan(done.part, task.allow)
            scan.errors = done.errors or set()
            if opened is not None and opened.fmt == done.fmt:
                if opened.refusal is not None:
                    scan.refused(opened.refusal, task.path, "what ls says")
            else:
                scan.open_as_ls(task.path, done.fmt)
        elif covered and not task.defer:
            del done.part.findings[done.before_ls:]
    return done.part


def _run_chunk(tasks: Sequence[tuple[int, _Task]]) -> list[tuple[int, _Done]]:
    forget = _prefetch_hdf5([t.path for _, t in tasks if not t.whole])
    try:
        return [(i, _run(t)) for i, t in tasks]
    finally:
        forget()


def _under_checkpoint(file: str, folders: set[str]) -> bool:
    """Whether ``file`` lies in one of ``folders`` or below it (paths normalized)."""
    folder = os.path.dirname(file)
    while folder not in folders:
        up = os.path.dirname(folder)
        if up == folder:
            return False
        folder = up
    return True


def scan_files(paths: Sequence[str], *, allow_globals: Sequence[str] = (), jobs: int | None = None) -> list[ScanResult]:
    """``scan_file`` of each argument, the same results, with the files (those under folder arguments included)
    spread over ``jobs`` processes. ``jobs=None``: one per CPU (``os.cpu_count()``) from ``PARALLEL_MIN_FILES``
    files on, else this process alone; ``jobs=1``: this process; ``jobs=N``: N processes from two files on.

    Forked workers start on the files while this process reads the checkpoint folders (a DCP, HF shards ...),
    then this process joins them. A file in a checkpoint folder waits for that reading to know whether ``ls``
    opens it on its own; every other file is opened so at once, and the finding is dropped in the rare case
    that a checkpoint's reading covers it from elsewhere."""
    allow = tuple(allow_globals)
    least = PARALLEL_MIN_FILES if jobs is None else 2
    jobs = jobs or os.cpu_count() or 1
    plans, tasks = _plan(paths, allow)
    pool = _in_pool(tasks, jobs) if jobs > 1 and len(tasks) >= least and can_fork() else None
    try:  # this process reads the checkpoint folders while the workers scan files, then joins them
        begun = [_begin(path, walked, allow) if walked is not None else None for path, walked in plans]
        opened = _open_uncovered(plans, begun, tasks) if pool is not None else {}
        done = pool.results() if pool is not None else [d for _, d in _run_chunk(list(enumerate(tasks)))]
    finally:
        if pool is not None:
            pool.close()
    results = []
    for folder, entries in _arguments(plans, begun):
        if folder is None:  # an argument scanned whole: its one task's part is its result
            (_, whole), = entries
            assert whole is not None
            results.append(done[whole].part)
            continue
        scan, covered = folder
        files: list[tuple[str, str | None]] = []
        for file, at in entries:
            fmt = None
            if at is not None:
                outcome = done[at]
                scan.merge(_finish(outcome, tasks[at], os.path.normpath(file) in covered, opened.get(at)))
                fmt = outcome.fmt
            files.append((file, fmt))
        scan.folder_end(files)
        results.append(scan.result)
    return results


def _arguments(plans: Sequence[tuple[str, _Walked | None]], begun: Sequence[tuple[_Scan, set[str]] | None]
               ) -> Iterator[tuple[tuple[_Scan, set[str]] | None, list[tuple[str, int | None]]]]:
    """Per argument, its folder's reading (None for an argument scanned whole) and its entries, each with the number
    of the task that scans it (``_plan``'s order; None for an entry that is not a regular file)."""
    at = 0
    for (path, walked), folder in zip(plans, begun):
        if walked is None or folder is None:
            yield None, [(path, at)]
            at += 1
            continue
        entries: list[tuple[str, int | None]] = []
        for file, regular in walked.entries:
            entries.append((file, at if regular else None))
            at += regular
        yield folder, entries


def _plan(paths: Sequence[str], allow: tuple[str, ...]) -> tuple[list[tuple[str, _Walked | None]], list[_Task]]:
    """Each argument (a local folder: walked) and the tasks: every regular file under a folder, every other argument."""
    plans: list[tuple[str, _Walked | None]] = []
    tasks: list[_Task] = []
    for path in paths:
        if _local_folder(path):
            walked = walk_folder(path)
            plans.append((path, walked))
            folders = {os.path.normpath(f) for f in walked.checkpoints}
            under: dict[str, bool] = {}  # by the folder a file is in (the walk lists a folder's files together)
            for f, regular in walked.entries:
                if regular:
                    where = os.path.dirname(f)
                    if where not in under:
                        under[where] = _under_checkpoint(os.path.normpath(f), folders)
                    tasks.append(_Task(False, f, under[where], allow))
        else:
            plans.append((path, None))
            tasks.append(_Task(True, path, False, allow))
    return plans, tasks


def _open_uncovered(plans: Sequence[tuple[str, _Walked | None]], begun: Sequence[tuple[_Scan, set[str]] | None],
                    tasks: Sequence[_Task]) -> dict[int, _Opened]:
    """The files of checkpoint folders that the folders' readings do not cover, opened as ``ls`` opens them by this
    process while the workers scan, by task number; ``_finish`` would otherwise open them one by one after the pool.
    A file this process cannot tell the format of is left to ``_finish``."""
    out: dict[int, _Opened] = {}
    for folder, entries in _arguments(plans, begun):
        if folder is None:
            continue
        covered = folder[1]
        for file, at in entries:
            if at is None:
                continue
            task = tasks[at]
            if not task.defer or os.path.normpath(file) in covered:
                continue
            try:
                fmt = detect(task.path)
            except (CheckpointError, RecursionError, OSError):
                continue
            try:
                list(open_checkpoint(task.path, allow_globals=task.allow, detected=fmt).files)
                out[at] = _Opened(fmt, None)
            except CheckpointError as exc:
                out[at] = _Opened(fmt, exc)
    return out


def _begin(path: str, walked: _Walked, allow: tuple[str, ...]) -> tuple[_Scan, set[str]]:
    """A folder argument's own scan, begun: its checkpoint readings, and the files they cover."""
    scan = _Scan(ScanResult(path, None, allow_globals=allow), allow)
    return scan, scan.folder_begin(path, walked)


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _prefetch_hdf5(files: list[str]) -> Callable[[], None]:
    """The metadata of the plain HDF5 files among ``files``, described in one child process instead of one each;
    returns what drops those descriptions again."""
    found = []
    for path in files:
        try:
            with open(path, "rb") as fh:
                if fh.read(8) == _HDF5_MAGIC:
                    found.append(path)
        except OSError:
            continue
    if len(found) < 2:
        return lambda: None
    from ..formats.hdf5.h5tree import forget_prefetched, prefetch

    prefetch(found)
    return forget_prefetched


class _Pool:
    """Tasks in chunks, shared by ``jobs - 1`` forked workers and this process (``scan_pool``)."""

    def __init__(self, tasks: list[_Task], jobs: int) -> None:
        numbered = list(enumerate(tasks))
        h5 = [it for it in numbered if it[1].path.lower().endswith(_H5_NAMES)]  # first, in one chunk
        rest = [it for it in numbered if not it[1].path.lower().endswith(_H5_NAMES)]
        rest.sort(key=lambda it: -_size(it[1].path))  # the largest first: the last chunks, waited for, are quick
        chunks = ([h5] if h5 else []) + _guided(rest, jobs)
        self.shared = SharedChunks(chunks, _run_chunk, min(jobs, len(chunks)) - 1)

    def results(self) -> list[_Done]:
        return [d for _, d in sorted(self.shared.results(), key=lambda item: item[0])]

    def close(self) -> None:
        self.shared.close()


_LEAST_CHUNK = 4  # files


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _guided(items: list[T], jobs: int) -> list[list[T]]:
    """``items`` in chunks that shrink as they go (each a ``4 * jobs``-th of what is left, down to ``_LEAST_CHUNK``):
    few chunks to take, and the last ones, which the others wait for, small whatever files they hold."""
    least = max(_LEAST_CHUNK, -(-len(items) // (MAX_CHUNKS // 2)))
    chunks, at = [], 0
    while at < len(items):
        size = max(least, (len(items) - at) // (4 * jobs))
        chunks.append(items[at:at + size])
        at += size
    return chunks


def _in_pool(tasks: list[_Task], jobs: int) -> _Pool:
    """The workers start on ``tasks`` now; ``results()`` (once this process is done with its own work) joins them."""
    return _Pool(tasks, jobs)
