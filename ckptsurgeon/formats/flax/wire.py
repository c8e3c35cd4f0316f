"""A msgpack walker that parses the structure of a file and steps over its byte payloads without reading them.

Not the ``msgpack`` library: ``unpackb`` needs the whole file in memory and returns every array's bytes.
Here maps, arrays, strings and numbers are decoded (they are the structure: a Flax file's tree of names),
while ``bin`` payloads become ``Bin(offset, size)`` records and extensions ``Ext(code, offset, size, value)``:
the payload of a code in ``inline`` is parsed as msgpack in passing (Flax's arrays: ``[shape, dtype, bin]``),
any other is stepped over. Every count and length is checked against the bytes left before anything is
built; nesting is bounded.
"""
from __future__ import annotations

import io
import struct
from typing import Any, NamedTuple

from ...errors import FormatError, UnsafeCheckpointError
from ...source import ByteSource

__all__ = ["Bin", "Ext", "Walker", "MAX_DEPTH", "MAX_STRING"]

MAX_DEPTH = 100
MAX_STRING = 1 << 24  # a str (a name, a config string) decoded into memory; larger ones are refused


class Bin(NamedTuple):
    """A msgpack ``bin`` payload: ``size`` bytes at absolute ``offset``, not read."""

    offset: int
    size: int


class Ext(NamedTuple):
    """A msgpack extension (``code``: its signed type byte): ``size`` payload bytes at ``offset``; ``value``:
    the payload parsed as msgpack when its code is one the walker parses inline, else None (not read)."""

    code: int
    offset: int
    size: int
    value: Any = None


# first byte -> (struct code of the length or value, what it is)
_SIZED = {
    0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
    0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
    0xDC: (">H", "array"), 0xDD: (">I", "array"), 0xDE: (">H", "map"), 0xDF: (">I", "map"),
    0xC7: (">B", "ext"), 0xC8: (">H", "ext"), 0xC9: (">I", "ext"),
}
_NUMBERS = {
    0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_CONSTANTS = {0xC0: None, 0xC2: False, 0xC3: True}


class Walker:
    """Parses msgpack objects from ``src`` (``end``: where the bytes that may be parsed end)."""

    def __init__(self, src: ByteSource, inline: frozenset[int] = frozenset()) -> None:
        self.src, self.pos, self.end, self.inline = src, 0, src.size, inline
        self.fh = io.BufferedReader(src.window(), 1 << 14)  # small: after each skipped payload it is filled anew

    def close(self) -> None:
        self.fh.close()

    def _take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise FormatError(f"{self.src.name}: truncated msgpack: {n:,} bytes needed at byte {self.pos:,}, "
                              f"{self.end - self.pos:,} left")
        data = self.fh.read(n)
        if len(data) != n:
            raise FormatError(f"{self.src.name}: truncated msgpack at byte {self.pos:,}")
        self.pos += n
        return data

    def _skip(self, n: int, what: str) -> int:
        """Step over ``n`` payload bytes; returns where they start."""
        if n > self.end - self.pos:
            raise FormatError(f"{self.src.name}: truncated msgpack: a {what} of {n:,} bytes at byte {self.pos:,} runs "
                              f"past the end ({self.end - self.pos:,} bytes left)")
        start = self.pos
        self.fh.seek(n, io.SEEK_CUR)
        self.pos += n
        return start

    def _count(self, n: int, per: int, what: str) -> int:
        if n * per > self.end - self.pos:
            raise FormatError(f"{self.src.name}: msgpack {what} at byte {self.pos:,} declares {n:,} entries, more than "
                              f"the {self.end - self.pos:,} bytes left can hold")
        return n

    def node(self, depth: int = 0) -> Any:
        """The next object: dicts (a key given twice is an error), lists, numbers, str, None, Bin, Ext."""
        if depth > MAX_DEPTH:
            raise UnsafeCheckpointError(f"{self.src.name}: msgpack nests over {MAX_DEPTH} deep; refusing")
        at = self.pos
        b = self._take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self._map(b & 0x0F, depth, at)
        if 0x90 <= b <= 0x9F:
            return [self.node(depth + 1) for _ in range(self._count(b & 0x0F, 1, "array"))]
        if 0xA0 <= b <= 0xBF:
            return self._str(b & 0x1F)
        if b in _CONSTANTS:
            return _CONSTANTS[b]
        if b in _NUMBERS:
            fmt = _NUMBERS[b]
            return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
        if b in _FIXEXT:
            return self._ext(_FIXEXT[b], depth)
        if b in _SIZED:
            fmt, kind = _SIZED[b]
            n = struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
            if kind == "bin":
                return Bin(self._skip(n, "bin"), n)
            if kind == "str":
                return self._str(n)
            if kind == "array":
                return [self.node(depth + 1) for _ in range(self._count(n, 1, "array"))]
            if kind == "map":
                return self._map(n, depth, at)
            return self._ext(n, depth)
        raise FormatError(f"{self.src.name}: byte 0x{b:02x} at {at:,} is not a msgpack type (not a msgpack file?)")

    def _ext(self, n: int, depth: int) -> Ext:
        code = struct.unpack(">b", self._take(1))[0]
        if code not in self.inline:
            return Ext(code, self._skip(n, "extension"), n)
        start, end = self.pos, self.end
        if n > end - start:
            raise FormatError(f"{self.src.name}: truncated msgpack: extension of {n:,} bytes at byte {start:,}")
        self.end = start + n  # the payload is one object filling the extension exactly
        try:
            value = self.node(depth + 1)
        finally:
            self.end = end
        if self.pos != start + n:
            raise FormatError(f"{self.src.name}: {start + n - self.pos:,} stray bytes in the msgpack extension at byte {start:,}")
        return Ext(code, start, n, value)

    def _str(self, n: int) -> str:
        if n > MAX_STRING:
            raise UnsafeCheckpointError(f"{self.src.name}: msgpack string of {n:,} bytes at byte {self.pos:,} "
                                        f"(limit {MAX_STRING:,}); refusing")
        raw = self._take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.src.name}: msgpack string at byte {self.pos - n:,} is not UTF-8") from None

    def _map(self, n: int, depth: int, at: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(self._count(n, 2, "map")):
            key = self.node(depth + 1)
            try:
                hash(key)
            except TypeError:  # a list, a map, or an extension holding one
                raise FormatError(f"{self.src.name}: msgpack map at byte {at:,} has a container as a key") from None
            if key in out:
                raise FormatError(f"{self.src.name}: msgpack map at byte {at:,} holds the key {key!r} twice")
            out[key] = self.node(depth + 1)
        return out
