"""Protobuf wire reading straight from a ByteSource: fields are walked by byte range, payloads are
located (start, end) and read only when asked, so a multi-GB ``raw_data`` is never loaded to be skipped."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ...errors import FormatError
from ...source import ByteSource

__all__ = ["Field", "Wire", "varints", "decode_packed"]

CHUNK = 1 << 16  # bytes read at once while walking a message's fields
_SMALL = 4 << 10  # payloads read through the last CHUNK


@dataclass(frozen=True, slots=True)
class Field:
    """One field: ``number``, ``wire`` type, ``value`` (varint/fixed) or the payload range ``start:end``.

    ``head`` is where the field's tag starts, ``lenpos`` where a length prefix starts (wire type 2).
    """

    number: int
    wire: int
    value: int
    start: int
    end: int
    head: int
    lenpos: int


def _varint(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise FormatError(f"{where}: truncated varint at byte {pos + i}")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 64:
                raise FormatError(f"{where}: varint overflows 64 bits")
            return result, pos + i + 1
        shift += 7
    raise FormatError(f"{where}: varint longer than 10 bytes")


class Wire:
    """Protobuf fields of one file, read by byte range through its ``ByteSource``."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.name = source.name
        self.size = source.size
        self._block, self._block_at = b"", 0  # the last CHUNK read for small payloads (names, attributes)

    def read(self, start: int, end: int, limit: int, what: str) -> bytes:
        """The bytes of ``start:end``; refuses spans over ``limit`` (a size checked before allocating). A small
        span comes from the CHUNK read at the first of its neighbours (a graph's names: one read, not thousands)."""
        if end - start > limit:
            raise FormatError(f"{self.name}: {what} of {end - start} bytes is over the {limit}-byte limit")
        if 0 <= start <= end <= self.size and end - start <= _SMALL:
            at = start - self._block_at
            if not (0 <= at and end - self._block_at <= len(self._block)):
                self._block, self._block_at, at = bytes(self.source.read(start, min(CHUNK, self.size - start))), start, 0
            return self._block[at:at + end - start]
        return bytes(self.source.read(start, end - start))

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """Every field of the message whose payload is ``start:end``, in file order."""
        if not 0 <= start <= end <= self.size:
            raise FormatError(f"{self.name}: message at bytes {start}..{end} runs past the end of the file")
        pos, base, buf = start, start, b""
        while pos < end:
            if pos - base + 32 > len(buf) and base + len(buf) < end:
                base, buf = pos, bytes(self.source.read(pos, min(end - pos, CHUNK)))
            rel = pos - base
            tag, rel = _varint(buf, rel, self.name)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise FormatError(f"{self.name}: invalid protobuf field number 0 at byte {pos}")
            head, lenpos, value = pos, -1, 0
            if wire == 0:
                value, rel = _varint(buf, rel, self.name)
                s = e = base + rel
            elif wire in (1, 5):
                n = 8 if wire == 1 else 4
                if rel + n > len(buf):
                    raise FormatError(f"{self.name}: truncated fixed{8 * n} field at byte {base + rel}")
                value = struct.unpack_from("<Q" if wire == 1 else "<I", buf, rel)[0]
                s = e = base + rel + n
            elif wire == 2:
                lenpos = base + rel
                length, rel = _varint(buf, rel, self.name)
                s, e = base + rel, base + rel + length
                if e > end:
                    raise FormatError(f"{self.name}: field {number} at byte {head} declares {length} bytes, "
                                      f"past the end of its message (byte {end})")
            else:
                raise FormatError(f"{self.name}: unsupported protobuf wire type {wire} at byte {head}")
            if e > end:
                raise FormatError(f"{self.name}: field {number} at byte {head} runs past the end of its message")
            yield Field(number, wire, value, s, e, head, lenpos)
            pos = e


def varints(buf: bytes, where: str) -> list[int]:
    """The varints of a packed field's payload."""
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos, where)
        out.append(value)
    return out


def decode_packed(wire: Wire, fields: list[Field], kind: str, limit: int, what: str) -> list[int]:
    """Values of one repeated scalar field, packed or not: ``kind`` is ``varint``, ``fixed32`` or ``fixed64``
    (fixed values come back as their unsigned bit patterns)."""
    out: list[int] = []
    size = 4 if kind == "fixed32" else 8
    for f in fields:
        if f.wire == 2:
            buf = wire.read(f.start, f.end, limit, what)
            if kind == "varint":
                out.extend(varints(buf, wire.name))
            else:
                if len(buf) % size:
                    raise FormatError(f"{wire.name}: {what}: packed {kind} payload of {len(buf)} bytes")
                out.extend(struct.unpack(f"<{len(buf) // size}{'I' if size == 4 else 'Q'}", buf))
        elif (kind == "varint") == (f.wire == 0) and (kind != "fixed32" or f.wire == 5) and (kind != "fixed64" or f.wire == 1):
            out.append(f.value)
        else:
            raise FormatError(f"{wire.name}: {what}: wire type {f.wire} where {kind} values belong")
    return out
