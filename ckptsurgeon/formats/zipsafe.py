"""Zip containers read defensively: no extraction, no encrypted or duplicate or escaping members,
central directory and local headers must agree, stored members located for direct reads.

The central directory is parsed by ``zipdir`` and deflated members are inflated here with ``zlib``:
``zipfile`` is not used for reading (its per-member objects cost a third of listing a large archive)."""
from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import FormatError, UnsafeCheckpointError
from ..index import lazy_sha256
from ..source import ByteSource, LocalFile, open_source
from .zipdir import Entry, read_directory

__all__ = ["SafeZip", "Member"]

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
STORED, DEFLATED = 0, 8
MAX_RATIO = 200  # declared/compressed size above this is treated as a zip bomb
MAX_SMALL_MEMBER = 256 * 1024 * 1024  # members read whole into memory (pickles, json)
_INFLATE_CHUNK = 1 << 16

_NAME_GUESS = 226  # local header + name in one 256-byte read
_BLOCK = 64 * 1024  # local headers this close together are read in one go (the kernel's readahead reads them anyway)

# path -> (source, directory start, members): a parse kept for the next SafeZip of the same file (see __init__)
_HANDED_OFF: dict[str, tuple[object, int, dict[str, Member]]] = {}


class Member(NamedTuple):  # a tuple: an archive of 100,000 members makes 100,000 of them
    name: str
    data_offset: int  # absolute offset in the file of the member's (possibly compressed) bytes
    size: int  # uncompressed size
    compressed_size: int
    stored: bool
    crc: int = 0


class SafeZip:
    """A zip archive whose members can be located without trusting the archive."""

    def __init__(self, path: str, offset: int = 0, size: int | None = None, *, hand_off: bool = False,
                 source: ByteSource | None = None) -> None:
        """The archive in ``path``, or in its ``size`` bytes at ``offset`` (an archive inside a file).

        ``hand_off``: keep the parsed archive for the next ``SafeZip`` of the same unchanged file
        (detection lists the members, then the reader opens it: one parse, not two). ``source``: ``path``
        already opened (``open_source``) by the caller."""
        self.path = path
        self._src = open_source(path) if source is None else source
        self._base = offset
        self.file_size = self._src.size - offset if size is None else size
        if offset < 0 or self.file_size < 0 or offset + self.file_size > self._src.size:
            raise FormatError(f"{path}: archive at bytes {offset}..{offset + self.file_size} lies past the end of the file")
        whole = offset == 0 and self.file_size == self._src.size
        # the whole file: the reader takes the parse detection kept; another look (scan's) only borrows it
        kept = (_HANDED_OFF.pop(path, None) if size is None else _HANDED_OFF.get(path)) if whole else None
        if kept is not None and kept[0] is self._src:
            self._start_dir, self.members = kept[1], kept[2]
            return
        directory = read_directory(self._pread_exact, self.file_size, path)
        self._start_dir = directory.start
        infos = directory.entries
        self.members: dict[str, Member] = {}
        self._block, self._block_at = b"", 0
        self._next_header = self._header_lookahead(infos)
        for info in infos:
            if info.name in self.members:
                raise UnsafeCheckpointError(f"{path}: zip member {info.name!r} appears twice; refusing an ambiguous archive")
            self.members[info.name] = self._check(info)
        self._block = b""
        if len({name.lower() for name in self.members}) != len(self.members):
            # torch.load finds members through miniz, regardless of case: archive/DATA.PKL may be read for data.pkl
            seen: dict[str, str] = {}
            for name in self.members:
                other = seen.setdefault(name.lower(), name)
                if other != name:
                    raise UnsafeCheckpointError(f"{path}: zip members {other!r} and {name!r} differ only in case; torch.load "
                                                "may read either; refusing an ambiguous archive")
        spans = sorted((m.data_offset, m.data_offset + m.compressed_size, m.name) for m in self.members.values())
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise UnsafeCheckpointError(f"{path}: zip members {a!r} and {b!r} overlap; refusing a crafted archive")
        if hand_off and offset == 0 and size is None:
            _HANDED_OFF.clear()
            _HANDED_OFF[path] = (self._src, self._start_dir, self.members)

    def _pread_exact(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset`` of the archive, else a truncated-archive error."""
        data = self._pread(size, offset)
        if len(data) != size:
            raise FormatError(f"{self.path}: truncated zip archive")
        return data

    def _pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""
        if offset < 0:
            raise FormatError(f"{self.path}: damaged zip: negative offset {offset}")
        size = max(0, min(size, self.file_size - offset))
        if isinstance(self._src, LocalFile):  # one syscall per member header: skip the generic checks
            return os.pread(self._src.fileno(), size, self._base + offset)
        return bytes(self._src.read(self._base + offset, size))

    def _header_lookahead(self, infos: list[Entry]) -> dict[int, int]:
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

    def _check(self, info: Entry) -> Member:
        name, flags, method, offset, csize, usize = (info.name, info.flag_bits, info.compress_type, info.header_offset,
                                                     info.compress_size, info.file_size)
        if name[:1] == "/" or "\\" in name or ".." in name or ":" in name:  # rare: the exact checks
            parts = name.replace("\\", "/").split("/")
            if name.startswith("/") or ".." in parts or ":" in parts[0]:
                raise UnsafeCheckpointError(f"{self.path}: zip member name {name!r} escapes the archive; refusing")
        if flags & 0x61 or method not in (STORED, DEFLATED):
            self._refuse_features(name, flags, method)
        head = self._header(offset)  # header and (usually) name: one read, or a slice of one
        if len(head) < _LOCAL.size:
            raise FormatError(f"{self.path}: truncated zip: local header of {name!r} missing")
        sig, *_rest, n_name, n_extra = _LOCAL.unpack_from(head)
        if sig != b"PK\x03\x04":
            raise FormatError(f"{self.path}: damaged zip: bad local header for {name!r}")
        local_name = head[_LOCAL.size:_LOCAL.size + n_name]
        if len(local_name) < n_name:
            local_name = self._pread(n_name, offset + _LOCAL.size)
        if local_name != name.encode("utf-8", "surrogateescape") and local_name.decode("utf-8", "replace") != name \
                and local_name.decode("cp437", "replace") != name:
            raise UnsafeCheckpointError(
                f"{self.path}: zip member {name!r} has a different name in its local header; refusing a crafted archive"
            )
        data_offset = offset + _LOCAL.size + n_name + n_extra
        if offset < 0 or data_offset + csize > self.file_size:
            raise FormatError(f"{self.path}: truncated zip: member {name!r} runs past the end of the file")
        stored = method == STORED
        if stored and csize != usize:
            raise FormatError(f"{self.path}: damaged zip: stored member {name!r} has two different sizes")
        if not stored and usize > MAX_RATIO * max(csize, 1) and usize > 1 << 20:
            raise UnsafeCheckpointError(
                f"{self.path}: zip member {name!r} expands {csize} bytes to {usize}; refusing a zip bomb"
            )
        return Member(name, self._base + data_offset, usize, csize, stored, info.crc)

    def _refuse_features(self, name: str, flags: int, method: int) -> None:
        if flags & 0x1:
            raise UnsafeCheckpointError(f"{self.path}: zip member {name!r} is encrypted; refusing")
        if flags & 0x60:  # bit 5: compressed patched data, bit 6: strong encryption
            raise FormatError(f"{self.path}: zip member {name!r} uses unsupported zip features (flag bits "
                              f"{flags:#06x}: patched data or strong encryption)")
        raise FormatError(f"{self.path}: zip member {name!r} uses unsupported compression {method}")

    def directory_sha256(self) -> Callable[[], str]:
        """The (lazy) sha256 of the central directory and end records: the archive's index."""
        start = self._start_dir
        return lazy_sha256(bytes(self._src.read(self._base + start, self.file_size - start)))

    def names(self) -> list[str]:
        return list(self.members)

    @property
    def source(self) -> ByteSource:
        """The byte source the archive lies in."""
        return self._src

    def read(self, name: str, limit: int = MAX_SMALL_MEMBER) -> bytes:
        """Read one member whole (for small members: pickles, JSON, headers), its CRC-32 checked."""
        member = self.members[name]
        if member.size > limit:
            raise UnsafeCheckpointError(f"{self.path}: zip member {name!r} is {member.size} bytes, over the {limit}-byte limit")
        if member.stored:  # exactly its bytes
            data = bytes(self._src.read(member.data_offset, member.size))
            if zlib.crc32(data) != member.crc:
                raise FormatError(f"{self.path}: damaged zip member {name!r}: CRC-32 mismatch")
            return data
        with self._inflating(member) as fh:
            data = fh.read()
        return data

    def read_head(self, name: str, size: int) -> bytes:
        """The first ``size`` bytes of a member (a header)."""
        member = self.members[name]
        if member.stored:
            return bytes(self._src.read(member.data_offset, min(size, member.size)))
        with self._inflating(member) as fh:  # a member of up to 64 KiB inflated whole: its CRC-32 checked
            return fh.read(min(size, member.size))

    def read_with(self, name: str, parse: Callable[[Any], Any]) -> Any:
        """Run ``parse(stream)`` over a member (inflated as it is read, its size and CRC-32 checked at its end)."""
        member = self.members[name]
        if member.stored:
            return parse(io.BufferedReader(self._src.window(member.data_offset, member.size), _INFLATE_CHUNK))
        with self._inflating(member) as fh:
            return parse(fh)

    def _inflating(self, member: Member) -> io.BufferedReader:
        raw = _Inflating(self._src.read, member, f"{self.path}: zip member {member.name!r}")
        return io.BufferedReader(raw, _INFLATE_CHUNK)

    def close(self) -> None:
        """Drop the member table (100,000 members' worth of tuples)."""
        self.members = {}


class _Inflating(io.RawIOBase):
    """A deflated member as a stream: inflated as it is read, never past its declared size; at its end the
    size and the CRC-32 are checked. Damage is a ``FormatError`` naming the member."""

    def __init__(self, read: Callable[[int, int], Any], member: Member, where: str) -> None:
        self._read, self._where, self._member = read, where, member
        self._pos, self._end = member.data_offset, member.data_offset + member.compressed_size
        self._z = zlib.decompressobj(-15)
        self._left, self._crc, self._out = member.size, 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if self._left == 0:
                return 0
            self._out = self._inflate()
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _inflate(self) -> bytes:
        data = self._z.unconsumed_tail
        if not data:
            if self._z.eof or self._pos >= self._end:
                raise FormatError(f"{self._where}: damaged: its data ends {self._left} bytes before its declared size")
            data = self._read(self._pos, min(_INFLATE_CHUNK, self._end - self._pos))
            self._pos += len(data)
        try:
            out = self._z.decompress(data, min(_INFLATE_CHUNK, self._left + 1))
        except zlib.error as exc:
            raise FormatError(f"{self._where}: damaged deflate data: {exc}") from None
        if len(out) > self._left:
            raise FormatError(f"{self._where}: damaged: inflates past its declared size ({self._member.size} bytes)")
        self._left -= len(out)
        self._crc = zlib.crc32(out, self._crc)
        if self._left == 0 and self._crc != self._member.crc:
            raise FormatError(f"{self._where}: damaged: CRC-32 mismatch")
        return out
