"""Zip containers read defensively: no extraction, no encrypted or duplicate or escaping members,
central directory and local headers must agree, stored members located for direct reads."""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FormatError, UnsafeCheckpointError
from ..index import lazy_sha256
from ..source import LocalFile, open_source

__all__ = ["SafeZip", "Member"]

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
MAX_RATIO = 200  # declared/compressed size above this is treated as a zip bomb
MAX_SMALL_MEMBER = 256 * 1024 * 1024  # members read whole into memory (pickles, json)
# What zipfile (Python code parsing hostile bytes) raises on damage: zlib.error is not an OSError,
# flag bits 5/6 raise NotImplementedError, odd headers struct.error / EOFError / OverflowError ...
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error, struct.error,
               OverflowError, IndexError, KeyError)

_NAME_GUESS = 226  # local header + name in one 256-byte read
_BLOCK = 64 * 1024  # local headers this close together are read in one go (the kernel's readahead reads them anyway)

# path -> (source, ZipFile, members): a parse kept for the next SafeZip of the same file (see __init__)
_HANDED_OFF: dict[str, tuple[object, zipfile.ZipFile, dict[str, Member]]] = {}


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    data_offset: int  # absolute offset in the file of the member's (possibly compressed) bytes
    size: int  # uncompressed size
    compressed_size: int
    stored: bool


class SafeZip:
    """A zip archive whose members can be located without trusting the archive."""

    def __init__(self, path: str, offset: int = 0, size: int | None = None, *, hand_off: bool = False) -> None:
        """The archive in ``path``, or in its ``size`` bytes at ``offset`` (an archive inside a file).

        ``hand_off``: keep the parsed archive for the next ``SafeZip`` of the same unchanged file
        (detection lists the members, then the reader opens it: one parse, not two)."""
        self.path = path
        self._src = open_source(path)
        self._base = offset
        self.file_size = self._src.size - offset if size is None else size
        if offset < 0 or self.file_size < 0 or offset + self.file_size > self._src.size:
            raise FormatError(f"{path}: archive at bytes {offset}..{offset + self.file_size} lies past the end of the file")
        kept = _HANDED_OFF.pop(path, None) if offset == 0 and size is None else None
        if kept is not None and kept[0] is self._src:
            self._zf, self.members = kept[1], kept[2]
            return
        try:
            self._zf = zipfile.ZipFile(io.BufferedReader(self._src.window(offset, self.file_size), 1 << 16))
        except FormatError:
            raise
        except _ZIP_ERRORS as exc:  # zipfile parses hostile bytes in Python: any of its errors is damage
            raise FormatError(f"{path}: damaged zip archive: {type(exc).__name__}: {exc}") from None
        infos = self._zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise UnsafeCheckpointError(f"{path}: zip member {dup!r} appears twice; refusing an ambiguous archive")
        self.members: dict[str, Member] = {}
        self._block, self._block_at = b"", 0
        self._next_header = self._header_lookahead(infos)
        for info in infos:
            self.members[info.filename] = self._check(info)
        self._block = b""
        spans = sorted((m.data_offset, m.data_offset + m.compressed_size, m.name) for m in self.members.values())
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise UnsafeCheckpointError(f"{path}: zip members {a!r} and {b!r} overlap; refusing a crafted archive")
        if hand_off and offset == 0 and size is None:
            _HANDED_OFF.clear()
            _HANDED_OFF[path] = (self._src, self._zf, self.members)

    def _pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""
        if offset < 0:
            raise FormatError(f"{self.path}: damaged zip: negative offset {offset}")
        size = max(0, min(size, self.file_size - offset))
        if isinstance(self._src, LocalFile):  # one syscall per member header: skip the generic checks
            return os.pread(self._src.fileno(), size, self._base + offset)
        return bytes(self._src.read(self._base + offset, size))

    def _header_lookahead(self, infos: list[zipfile.ZipInfo]) -> dict[int, int]:
        """header offset -> how many bytes one read there should take: up to 64 KiB when the following local
        headers lie that close (archives of many small members: one read serves many headers), else one header."""
        if not isinstance(self._src, LocalFile):
            return {}
        offsets = sorted(i.header_offset for i in infos)
        reach, j, out = _LOCAL.size + _NAME_GUESS, 0, {}
        for k, at in enumerate(offsets):
            j = max(j, k)
            while j + 1 < len(offsets) and offsets[j + 1] + reach - at <= _BLOCK:
                j += 1
            out[at] = offsets[j] + reach - at
        return out

    def _header(self, offset: int) -> bytes:
        """The local header and (usually) the name at ``offset``, from the current block when it holds them."""
        want = _LOCAL.size + _NAME_GUESS
        at = offset - self._block_at
        if 0 <= at and at + want <= len(self._block):
            return self._block[at:at + want]
        size = self._next_header.get(offset, want)
        self._block, self._block_at = self._pread(max(size, want), offset), offset
        return self._block[:want]

    def _check(self, info: zipfile.ZipInfo) -> Member:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts or ":" in parts[0]:
            raise UnsafeCheckpointError(f"{self.path}: zip member name {name!r} escapes the archive; refusing")
        if info.flag_bits & 0x1:
            raise UnsafeCheckpointError(f"{self.path}: zip member {name!r} is encrypted; refusing")
        if info.flag_bits & 0x60:  # bit 5: compressed patched data, bit 6: strong encryption
            raise FormatError(f"{self.path}: zip member {name!r} uses unsupported zip features (flag bits "
                              f"{info.flag_bits:#06x}: patched data or strong encryption)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{self.path}: zip member {name!r} uses unsupported compression {info.compress_type}")
        head = self._header(info.header_offset)  # header and (usually) name: one read, or a slice of one
        if len(head) < _LOCAL.size:
            raise FormatError(f"{self.path}: truncated zip: local header of {name!r} missing")
        sig, *_rest, n_name, n_extra = _LOCAL.unpack_from(head)
        if sig != b"PK\x03\x04":
            raise FormatError(f"{self.path}: damaged zip: bad local header for {name!r}")
        local_name = head[_LOCAL.size:_LOCAL.size + n_name]
        if len(local_name) < n_name:
            local_name = self._pread(n_name, info.header_offset + _LOCAL.size)
        if local_name.decode("utf-8", "replace") != name and local_name.decode("cp437", "replace") != name:
            raise UnsafeCheckpointError(
                f"{self.path}: zip member {name!r} has a different name in its local header; refusing a crafted archive"
            )
        data_offset = info.header_offset + _LOCAL.size + n_name + n_extra
        if data_offset + info.compress_size > self.file_size:
            raise FormatError(f"{self.path}: truncated zip: member {name!r} runs past the end of the file")
        stored = info.compress_type == zipfile.ZIP_STORED
        if stored and info.compress_size != info.file_size:
            raise FormatError(f"{self.path}: damaged zip: stored member {name!r} has two different sizes")
        if not stored and info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 1 << 20:
            raise UnsafeCheckpointError(
                f"{self.path}: zip member {name!r} expands {info.compress_size} bytes to {info.file_size}; refusing a zip bomb"
            )
        return Member(name, self._base + data_offset, info.file_size, info.compress_size, stored)

    def directory_sha256(self) -> Callable[[], str]:
        """The (lazy) sha256 of the central directory and end records: the archive's index."""
        start = self._zf.start_dir
        return lazy_sha256(bytes(self._src.read(self._base + start, self.file_size - start)))

    def names(self) -> list[str]:
        return list(self.members)

    def read(self, name: str, limit: int = MAX_SMALL_MEMBER) -> bytes:
        """Read one member whole (for small members: pickles, JSON, headers)."""
        member = self.members[name]
        if member.size > limit:
            raise UnsafeCheckpointError(f"{self.path}: zip member {name!r} is {member.size} bytes, over the {limit}-byte limit")
        if member.stored:  # exactly its bytes (zipfile's buffered reads would run on into the next members)
            data = bytes(self._src.read(member.data_offset, member.size))
            if zlib.crc32(data) != self._zf.getinfo(name).CRC:
                raise FormatError(f"{self.path}: damaged zip member {name!r}: CRC-32 mismatch")
            return data
        try:
            with self._zf.open(name) as fh:
                data = fh.read(limit + 1)
        except FormatError:
            raise
        except _ZIP_ERRORS as exc:
            raise FormatError(f"{self.path}: damaged zip member {name!r}: {type(exc).__name__}: {exc}") from None
        if len(data) != member.size:
            raise FormatError(f"{self.path}: zip member {name!r} does not have its declared size")
        return data

    def read_head(self, name: str, size: int) -> bytes:
        """The first ``size`` bytes of a member (a header), damaged archives as FormatError."""
        member = self.members[name]
        if member.stored:
            return bytes(self._src.read(member.data_offset, min(size, member.size)))
        try:
            with self._zf.open(name) as fh:
                return fh.read(size)
        except FormatError:
            raise
        except _ZIP_ERRORS as exc:
            raise FormatError(f"{self.path}: damaged zip member {name!r}: {type(exc).__name__}: {exc}") from None

    def read_with(self, name: str, parse):
        """Run ``parse(stream)`` over a member, damaged archives as FormatError."""
        try:
            with self._zf.open(name) as fh:
                return parse(fh)
        except (FormatError, UnsafeCheckpointError):
            raise
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
            raise FormatError(f"{self.path}: damaged zip member {name!r}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Close the archive and drop its member tables (100,000 members' worth of objects)."""
        self._zf.close()
        self._zf.filelist, self._zf.NameToInfo = [], {}  # close() keeps them; nothing reads them after
        self.members = {}
