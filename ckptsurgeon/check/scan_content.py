"""What ``scan`` finds by content, whatever the names say: every pickle, every archive inside or beside another.

Loaders reach bytes from the front of a file (a pickle stream, a legacy torch file, a zip read header by header)
or from its end (the zip end record that zipfile and torch's miniz look for). So a file, and every archive member,
is read both ways:

- a zip whose end record ends the bytes: its members, then the bytes before it (another zip, pickles ...);
- from the front: pickles one after another, a zip that starts there, an ``.npy`` header and its object array.

A member is judged by its bytes, not its name: an archive, an ``.npy``, or a pickle (named ``*.pkl`` in any
case, or any member whose bytes parse as a pickle that imports something). TorchScript archives and Keras
configurations are reported for the code they hold. Bounded: archives nest ``MAX_DEPTH`` deep, a file holds at
most ``MAX_ARCHIVES`` archives and ``MAX_PICKLES`` pickles, compressed members are inflated in memory up to
``MAX_INFLATE`` bytes in all (nothing is ever extracted to disk); past a bound the rest is a finding, not a hang.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import pickletools
import re
import struct
from collections.abc import Callable
from typing import Any

from ..errors import CheckpointError, FormatError, UnsafeCheckpointError
from ..formats.hdf5.keras_config import parse_config
from ..formats.npy import numpy_fmt
from ..formats.pickles import MAX_PICKLE
from ..formats.pytorch import torchscript
from ..formats.pytorch.pickle_static import PickleFacts, analyze
from ..formats.pytorch.pickle_walk import Irregular, Truncated, first_pickle
from ..formats.pytorch.safepickle import safe_load
from ..formats.pytorch.torch_legacy import FAST_SPAN, MAGIC_NUMBER
from ..formats.tree import work_budget
from ..formats.zipsafe import MAX_SMALL_MEMBER, Member, SafeZip
from ..source import ByteSource, SourceWindow, open_source, register_scheme
from .scan_keras import keras_config_findings
from .findings import Finding

__all__ = ["walk_file", "PickleSink", "MAX_DEPTH", "MAX_ARCHIVES", "MAX_PICKLES", "MAX_INFLATE"]

PickleSink = Callable[[str, bytes, frozenset, "PickleFacts | None"], None]
# (where, bytes, globals its reader admits beyond the allowlist, ``analyze(bytes, work_budget(len(bytes)))`` if made)

MAX_DEPTH = 4  # archives inside archives (a file's own zip is the first)
MAX_ARCHIVES = 10_000  # archives in one file, nested and concatenated
MAX_PICKLES = 10_000  # pickles in one file
MAX_INFLATE = 1 << 30  # compressed members inflated in memory to look inside them, in all, per file
MAX_FORWARD = 1 << 30  # how far past a zip's first header its end record is looked for
SNIFF_CAP = 1 << 20  # how far a member of any name is parsed to tell whether it is a pickle
MAX_QUIET = 64  # pickles that import nothing, one after another, before the rest is taken for data
MAX_CONFIG = 64 << 20  # a .keras config.json, as its reader limits it
PICKLE_SUFFIXES = (".pkl", ".pickle")  # members taken for pickles by name (any case), whatever their bytes

_END = struct.Struct("<4s4H2LH")  # zip end of central directory record
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record (before its 20-byte locator)
_LOCAL, _EOCD, _CDIR, _EOCD64, _EOCD64_LOC = b"PK\x03\x04", b"PK\x05\x06", b"PK\x01\x02", b"PK\x06\x06", b"PK\x06\x07"
_SMALL = 8 << 10  # bytes read whole at their first look (a member's end, then its front: one read, not two)
_SCHEME = "ckptsurgeon-scan"  # compressed members inflated in memory, opened by name like any source
_INFLATED: dict[str, _Inflated] = {}
_IDS = itertools.count()


class _Inflated(ByteSource):
    """A compressed member inflated in memory: a byte source SafeZip can open by name (an archive in an archive)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def local_path(self) -> str | None:
        return None

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self._data):
            raise FormatError(f"{self.name}: truncated: {size} bytes at {offset} lie past its end ({len(self._data)})")
        return self._data[offset:offset + size]

    def window(self, offset: int = 0, size: int | None = None) -> io.RawIOBase:
        return SourceWindow(self, offset, size)

    def identity(self) -> dict[str, Any]:
        return {"size": len(self._data)}

    def fresh(self) -> bool:
        return bool(self._data)

    def release(self) -> None:
        self._data = b""


def _open_inflated(name: str) -> ByteSource:
    src = _INFLATED.get(name)
    if src is None:
        raise FormatError(f"{name}: no such inflated member")
    return src


class _Bound(Exception):
    """A bound of the walk was reached (the finding says which): the rest of the file is not looked into."""


class _Bytes:
    """Bytes to look into: ``size`` bytes at ``base`` of the byte source named ``src`` (a file, a stored member, an
    inflated member), or a compressed member (``src`` None), read from its start or else inflated whole."""

    def __init__(self, label: str, size: int, src: str | None, base: int = 0, zf: SafeZip | None = None,
                 member: Member | None = None, script: bool = False, source: ByteSource | None = None,
                 top: bool = False) -> None:
        self.label, self.size, self.base, self.top = label, size, base, top
        self.zf, self.member, self.script = zf, member, script
        self.locate(src, base, source)

    def locate(self, src: str | None, base: int, source: ByteSource | None = None) -> None:
        self.src, self.base, self._whole = src, base, b""
        self.source = source if source is not None or src is None else open_source(src)

    def read(self, offset: int, size: int) -> bytes:
        if self.source is None:  # only the start of a compressed member (the walk inflates it whole otherwise)
            assert offset == 0 and self.zf is not None and self.member is not None
            return self.zf.read_head(self.member.name, size)
        if self.size <= _SMALL and 0 <= offset and offset + size <= self.size:  # its end and front: one read
            if len(self._whole) != self.size:
                self._whole = bytes(self.source.read(self.base, self.size))
            return self._whole[offset:offset + size]
        return bytes(self.source.read(self.base + offset, size))

    def at(self, pos: int) -> str:
        """How a pickle at ``pos`` is named: ``file@pos``, ``file:member`` (at its start) or ``file:member@pos``."""
        return self.label if pos == 0 and not self.top else f"{self.label}@{pos}"

    def part(self, offset: int, size: int) -> _Bytes:
        assert self.src is not None
        return _Bytes(self.label, size, self.src, self.base + offset, script=self.script, source=self.source)


_OPCODE_BYTES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,255}")


def _plain(name: str) -> bool:
    """A name a pickle could import (bytes that merely parse as GLOBAL name no module; analyze's "?" is none)."""
    return _NAME.fullmatch(name) is not None


def _imports(facts: PickleFacts) -> bool:
    return any(_plain(m) and _plain(n) for m, n, _pos in facts.globals)


class _Walk:
    def __init__(self, on_pickle: PickleSink, findings: list[Finding], errors: set[str], ls_speaks: bool) -> None:
        self.on_pickle, self.findings, self.ls_speaks = on_pickle, findings, ls_speaks
        self.errors = errors  # texts of the errors reported (one is not reported twice)
        self.archives = self.pickles = self.inflated = 0
        self.mem: dict[str, str] = {}  # inflated source name -> its label

    # findings -------------------------------------------------------------------------------------------------
    def finding(self, kind: str, where: str, message: str, actual: Any = None) -> None:
        self.findings.append(Finding(kind, where, message, None, actual))

    def refused(self, exc: CheckpointError, where: str) -> None:
        text = str(exc)
        if text in self.errors:
            return
        self.errors.add(text)
        for name, label in self.mem.items():
            text = text.replace(name, label)
        if where not in text:
            text = f"{where}: {text}"
        kind = "damaged" if isinstance(exc, FormatError) and not isinstance(exc, UnsafeCheckpointError) else "unsafe"
        self.findings.append(Finding(kind, where, f"{text} (while looking for pickles)"))

    def bound(self, where: str, message: str) -> None:
        self.finding("archive", where, f"{where}: {message}; the rest is not looked into")
        raise _Bound

    def release(self, names: list[str] | None = None) -> None:
        """Free inflated members (``names``, or all): a member's bytes are freed once it has been looked into."""
        for name in list(self.mem) if names is None else names:
            src = _INFLATED.pop(name, None)
            if src is not None:
                src.release()
            self.mem.pop(name, None)

    def pickle(self, where: str, data: bytes, script: bool, facts: PickleFacts | None = None) -> None:
        self.pickles += 1
        if self.pickles > MAX_PICKLES:
            self.bound(where, f"more than {MAX_PICKLES:,} pickles in one file")
        self.on_pickle(where, data, frozenset(torchscript.script_globals(data)) if script else frozenset(), facts)

    def inflate(self, blob: _Bytes) -> bool:
        """Make a compressed member readable anywhere (inflated in memory); False when over the budget."""
        if blob.src is not None:
            return True
        assert blob.zf is not None and blob.member is not None
        if blob.size > MAX_SMALL_MEMBER or self.inflated + blob.size > MAX_INFLATE:
            return False
        data = blob.zf.read(blob.member.name)  # its size and CRC-32 checked
        self.inflated += len(data)
        name = f"{_SCHEME}://{next(_IDS)}"
        register_scheme(_SCHEME, _open_inflated)  # here, not at import: the scheme table may have been replaced
        _INFLATED[name] = _Inflated(name, data)
        self.mem[name] = blob.label
        blob.locate(name, 0)
        blob.zf, blob.member = None, None
        return True

    # regions --------------------------------------------------------------------------------------------------
    def region(self, blob: _Bytes, depth: int, claims: bool = False, deep_tail: bool = True) -> None:
        """All of ``blob``: zips that end it (the last first), then what precedes them from the front.
        ``claims``: the bytes are a pickle stream by their format (a legacy torch file, a bare pickle)."""
        end = blob.size
        while end > 0 and blob.src is not None:
            start = self._zip_ends_at(blob, end, deep_tail)
            if start is None:
                break
            if not self._archive(blob.part(0, end), depth, 0, start):
                return
            end, deep_tail = start, True
        if end > 0:
            self._front(blob, end, depth, claims)

    def _zip_ends_at(self, blob: _Bytes, end: int, deep: bool) -> int | None:
        """Where the zip whose end record closes the bytes before ``end`` begins (None: no such zip). ``deep``:
        the record is looked for as zipfile does, before a comment of up to 64 KiB; else only right at the end."""
        n = min(end, _END.size + (0xFFFF if deep else 0))
        tail = blob.read(end - n, n)
        at = len(tail)
        while True:
            at = tail.rfind(_EOCD, 0, at)
            if at < 0 or (not deep and at != n - _END.size):
                return None
            start = self._zip_start(blob, end - n + at, tail[at:at + _END.size]) if at + _END.size <= n else None
            if start is not None and start >= 0:
                return start

    @staticmethod
    def _zip_start(blob: _Bytes, at: int, record: bytes) -> int | None:
        """Where the zip whose end record lies at ``at`` begins, by its own offsets (bytes may precede a zip),
        if its central directory lies where the record says; else None (bytes that only look like a record)."""
        _sig, _disk, _disk_cd, _n_disk, n_total, size_cd, offset_cd, _comment = _END.unpack(record)
        cd_end = at
        if at >= _END64.size + 20 and blob.read(at - 20, 4) == _EOCD64_LOC:  # zip64: its records come right before
            cd_end = at - 20 - _END64.size
            sig, *_rest, n_total, size_cd, offset_cd = _END64.unpack(blob.read(cd_end, _END64.size))
            if sig != _EOCD64:
                return None
        if n_total == 0 or size_cd < 46 or cd_end - size_cd < 0 or blob.read(cd_end - size_cd, 4) != _CDIR:
            return None
        return cd_end - size_cd - offset_cd

    def _zip_from(self, blob: _Bytes, pos: int, end: int) -> int | None:
        """Where the zip that starts at ``pos`` ends: one past its end record and comment (None: it has none)."""
        at, limit, carry = pos, min(end, pos + MAX_FORWARD), b""
        while at < limit:
            chunk = carry + blob.read(at, min(1 << 20, limit - at))
            origin = at - len(carry)
            i = chunk.find(_EOCD)
            while i >= 0:
                rec_at = origin + i
                if rec_at + _END.size <= end:
                    record = blob.read(rec_at, _END.size)
                    if self._zip_start(blob, rec_at, record) == pos:
                        return min(end, rec_at + _END.size + _END.unpack(record)[-1])
                i = chunk.find(_EOCD, i + 1)
            at, carry = origin + len(chunk), chunk[-3:]
        if limit < end:
            self.finding("archive", blob.label, f"{blob.label}: a zip archive starts at byte {pos} and has no end record "
                         f"within {MAX_FORWARD:,} bytes; not looked into")
        return None

    def _archive(self, blob: _Bytes, depth: int, offset: int, start: int) -> bool:
        """The members of the zip that begins at ``start`` of ``blob`` and ends it (``blob`` lies at ``offset`` of
        the labelled bytes). False if it could not be read (a finding says why)."""
        self.archives += 1
        if self.archives > MAX_ARCHIVES:
            self.bound(blob.label, f"more than {MAX_ARCHIVES:,} archives in one file")
        assert blob.src is not None
        zlabel = blob.label if offset + start == 0 else f"{blob.label}@{offset + start}"
        if depth >= MAX_DEPTH:
            self.finding("archive", zlabel, f"{zlabel}: a zip archive nested {depth + 1} deep (the limit is "
                         f"{MAX_DEPTH}); not looked into")
            return True
        try:
            zf = SafeZip(blob.src, blob.base, blob.size, source=blob.source)
        except CheckpointError as exc:
            self.refused(exc, blob.label)
            return False
        try:
            self._members(zf, zlabel, depth)
        finally:
            zf.close()
        return True

    def _members(self, zf: SafeZip, zlabel: str, depth: int) -> None:
        from ..formats.hdf5.keras_zip import sniff_names as keras_names  # here: it loads the HDF5 reader

        names = zf.names()
        self._case_clash(names, zlabel)
        script = self._torchscript(names, zlabel)
        source = zf.source
        if keras_names(names):
            try:
                config = parse_config(zf.read("config.json", limit=MAX_CONFIG), f"{zlabel}:config.json")
                self.findings.extend(keras_config_findings(config, f"{zlabel}:config.json"))
            except CheckpointError as exc:
                self.refused(exc, f"{zlabel}:config.json")
        for name in names:
            member, label = zf.members[name], f"{zlabel}:{name}"
            if name.endswith("/") and member.size == 0:
                continue
            try:
                if name.lower().endswith(PICKLE_SUFFIXES):
                    self.pickle(label, zf.read(name), script)  # whole, its CRC-32 checked (ls reads it so)
                    continue
                blob = (_Bytes(label, member.size, zf.path, member.data_offset, script=script, source=source) if member.stored
                        else _Bytes(label, member.size, None, zf=zf, member=member, script=script))
                self.region(blob, depth + 1, deep_tail=False)
                if blob.src is not None and blob.src in self.mem:
                    self.release([blob.src])
            except CheckpointError as exc:
                self.refused(exc, label)

    def _case_clash(self, names: list[str], zlabel: str) -> None:
        """torch.load finds members through miniz, which compares names regardless of case: two members whose
        names differ only in case make it read either (``archive/DATA.PKL`` for ``archive/data.pkl``)."""
        if not any(n.lower().endswith("/data.pkl") and n.count("/") == 1 for n in names):
            return
        folded: dict[str, str] = {}
        clashes = []
        for name in names:
            first = folded.setdefault(name.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape"),
                                      name)  # as miniz folds: ASCII letters only
            if first != name:
                clashes.append((first, name))
        if clashes:
            a, b = clashes[0]
            more = f" (and {len(clashes) - 1} more pair(s))" if len(clashes) > 1 else ""
            self.finding("archive", zlabel, f"{zlabel}: members {a!r} and {b!r} differ only in case{more}; torch.load "
                         "looks members up regardless of case and may read either, where other readers read the one "
                         "of the exact name", f"{a} / {b}")

    def _torchscript(self, names: list[str], zlabel: str) -> bool:
        roots = [n[:-len("data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not any(torchscript.is_torchscript(names, root) for root in roots):
            return False
        code = [n for n in names if any(n.startswith(root + "code/") for root in roots) and not n.endswith("/")]
        self.finding("code", zlabel, f"{zlabel}: TorchScript archive: torch.jit.load compiles and runs the TorchScript "
                     f"in its code/ ({len(code)} file(s)) by design, and torch.load hands such an archive to it (unless "
                     "weights_only=True, which refuses it); ckptsurgeon reads its tensors without it", "TorchScript")
        return True

    # from the front ----------------------------------------------------------------------------------------------
    def _front(self, blob: _Bytes, end: int, depth: int, claims: bool) -> None:
        pos, legacy_left, quiet = 0, -1, 0
        while pos < end:
            if pos > 0 and not self.inflate(blob):
                return  # a compressed member past its first pickle, over the budget: the rest taken for data
            head = blob.read(pos, min(4096, end - pos))
            if head.startswith(_LOCAL):
                if not self.inflate(blob):
                    self.finding("archive", blob.label, f"{blob.label}: a compressed member holding a zip archive "
                                 f"({blob.size:,} bytes) is over the inflate budget ({MAX_INFLATE:,} bytes in all); "
                                 "not looked into")
                    return
                if pos == 0 and end == blob.size and self._zip_ends_at(blob, end, True) is not None:
                    self.region(blob, depth, claims)  # inflated just now: read from its end
                    return
                stop = self._zip_from(blob, pos, end)
                if stop is None:
                    if pos or depth or not self.ls_speaks:  # else what ls says of the file tells
                        self.finding("damaged", blob.label, f"{blob.label}: bytes at {pos} start like a zip archive "
                                     "that has no end record; not looked into")
                    return
                self._archive(blob.part(pos, stop - pos), depth, pos, 0)
                pos = stop
                continue
            if head.startswith(numpy_fmt.NPY_MAGIC):
                self._npy(blob, pos, end, head)
                return
            if claims:
                stop, complete, facts = self._pickle_end(blob, pos, end)
                if not complete:
                    stop = end  # the damaged rest: its analysis says what is wrong with it
                if stop - pos > MAX_PICKLE:
                    raise FormatError(f"{blob.label}: pickle at byte {pos} is over {MAX_PICKLE:,} bytes")
                data = blob.read(pos, stop - pos)
                self.pickle(blob.at(pos), data, blob.script, facts)
                if legacy_left < 0:  # after a legacy torch file's magic number: 4 more pickles, then raw storages
                    legacy_left = 4 if _is_magic(data, blob.label) else 1 << 62
                elif legacy_left == 1:
                    return
                else:
                    legacy_left -= 1
                if not complete:
                    return
                pos = stop
                continue
            if head[0] not in _OPCODE_BYTES:
                return  # not a pickle: genops stops at its first byte (most tensor data starts so)
            data, complete, capped, facts = self._sniff(blob, pos, end, head)
            if capped:  # parses as a pickle for a mebibyte: read it as one
                if not self.inflate(blob):
                    self.finding("archive", blob.label, f"{blob.label}: a compressed member that parses as a pickle "
                                 f"({blob.size:,} bytes) is over the inflate budget; not looked into")
                    return
                claims = True
                continue
            stop = pos + len(data)
            facts = facts or analyze(data, work_budget(len(data)))
            if not _imports(facts):
                quiet += 1
                if not complete or quiet > MAX_QUIET:
                    return  # data, not a pickle
                pos = stop
                continue
            self.pickle(blob.at(pos), data, blob.script, facts)
            if not complete:
                return
            pos = stop

    @staticmethod
    def _pickle_end(blob: _Bytes, pos: int, end: int) -> tuple[int, bool, PickleFacts | None]:
        """One past the STOP of the pickle at ``pos`` (parsed as a stream: nothing run, nothing built), whether it
        has one, and its analysis when the walk that found its end made it."""
        head = blob.read(pos, min(FAST_SPAN, end - pos))  # as ls reads a legacy file
        with contextlib.suppress(Irregular):  # the walk analyses the pickle as it finds its end; a longer one: genops
            facts = first_pickle(head)
            return pos + facts.end, True, facts
        assert blob.source is not None
        with io.BufferedReader(blob.source.window(blob.base + pos, end - pos), 1 << 16) as fh:
            return (pos + fh.tell(), True, None) if _genops_stop(fh) else (end, False, None)

    @staticmethod
    def _sniff(blob: _Bytes, pos: int, end: int, head: bytes) -> tuple[bytes, bool, bool, PickleFacts | None]:
        """How far the bytes at ``pos`` (``head``: the first of them) parse as a pickle, reading little for bytes
        that do not: (the pickle, or the bytes read; whether it reached STOP; whether it still parsed at SNIFF_CAP;
        its analysis, when the walk that found its end made it)."""
        n = len(head)
        while True:
            try:
                facts = first_pickle(head)
                return head[:facts.end], True, False, facts
            except Truncated:  # genops too would parse all of ``head`` and want more
                parsed = len(head)
            except Irregular:
                fh = io.BytesIO(head)
                if _genops_stop(fh):
                    return head[:fh.tell()], True, False, None
                parsed = fh.tell()
            if parsed < len(head) or len(head) == end - pos:
                return head[:parsed], False, False, None
            if n >= SNIFF_CAP:
                return head, False, True, None
            n *= 16
            head = blob.read(pos, min(n, end - pos))

    def _npy(self, blob: _Bytes, pos: int, end: int, head: bytes) -> None:
        """An .npy header (``head``: the first bytes read at ``pos``); an object array's pickle follows it (numpy's
        own reader would unpickle it)."""
        want = min(end - pos, numpy_fmt.MAX_HEADER + 12)
        if len(head) < want and len(head) < numpy_fmt.header_length(head):
            head = blob.read(pos, want)
        dtype, _shape, _fortran, hlen = numpy_fmt.parse_header(head, blob.label, allow_object=True)
        if not dtype.hasobject:
            return
        if end - pos - hlen > MAX_PICKLE:
            raise FormatError(f"{blob.label}: object array pickle over {MAX_PICKLE:,} bytes")
        if blob.src is None:
            assert blob.zf is not None and blob.member is not None
            data = blob.zf.read(blob.member.name, limit=MAX_PICKLE)[pos + hlen:end]
        else:
            data = blob.read(pos + hlen, end - pos - hlen)
        self.pickle(f"{blob.label}@{pos + hlen}", data, False)


def _genops_stop(fh: Any) -> bool:
    """Whether genops reaches a STOP in ``fh`` (then at ``fh.tell()``); else ``fh`` stops where parsing failed."""
    try:
        for op, _arg, _at in pickletools.genops(fh):
            if op.name == "STOP":
                return True
    except Exception:  # noqa: BLE001 - not a pickle, or not all of it read: the static analysis says which
        pass
    return False


def _is_magic(data: bytes, where: str) -> bool:
    try:
        return bool(safe_load(data, where) == MAGIC_NUMBER)
    except CheckpointError:
        return False


def walk_file(path: str, fmt: str | None, on_pickle: PickleSink, findings: list[Finding], errors: set[str], *,
              ls_speaks: bool = True) -> None:
    """Look into the file ``path`` (detected as ``fmt``, or None): each pickle goes to ``on_pickle``, each finding
    to ``findings``. ``errors``: the texts of the errors already reported, to which it adds its own (an error
    reported once is not reported again, by this walk or by ``ls``). ``ls_speaks``: the file is also opened as
    ``ls`` opens it, whose refusal says what is wrong with the file as a whole."""
    walk = _Walk(on_pickle, findings, errors, ls_speaks)
    try:
        src = open_source(path)
        blob = _Bytes(path, src.size, path, top=True, source=src)
        walk.region(blob, 0, claims=fmt == "pytorch-legacy")
    except CheckpointError as exc:
        walk.refused(exc, path)
    except _Bound:
        pass
    finally:
        walk.release()
