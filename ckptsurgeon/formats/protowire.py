"""A minimal protobuf wire-format decoder (enough for TensorFlow's bundle protos); no codegen."""
from __future__ import annotations

import struct

from ..errors import FormatError

__all__ = ["read_varint", "decode", "first", "first_int", "first_bytes", "signed64"]

# Hand-written, not the ``protobuf`` runtime: the messages read here are tiny (a TensorFlow index holds
# one ~20-byte BundleEntryProto per variable), so per-message call overhead dominates, not byte
# crunching. Single-byte tags, varints and lengths (nearly all of them) take a fast path below;
# ``tf_bundle`` decodes its two hot messages with the same fast paths, without building dicts.


def read_varint(buf: bytes, pos: int, limit: int = 10) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    if pos + 1 < len(buf) and buf[pos + 1] < 0x80 and limit > 1:  # two bytes (offsets, sizes): the usual case
        return (buf[pos] & 0x7F) | (buf[pos + 1] << 7) if buf[pos] & 0x80 else buf[pos], pos + 1 + (buf[pos] >> 7)
    result = shift = 0
    for i in range(limit):
        if pos + i >= len(buf):
            raise FormatError("truncated varint")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + i + 1
        shift += 7
    raise FormatError("varint too long")


def decode(buf: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> values (ints for varint/fixed, bytes for length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos, end = 0, len(buf)
    while pos < end:
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            if pos < end and buf[pos] < 0x80:
                value, pos = buf[pos], pos + 1
            else:
                value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise FormatError("truncated fixed64")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            if pos < end and buf[pos] < 0x80:
                length, pos = buf[pos], pos + 1
            else:
                length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise FormatError("truncated length-delimited field")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise FormatError("truncated fixed32")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        if number in fields:
            fields[number].append(value)
        else:
            fields[number] = [value]
    return fields


def first(fields: dict[int, list], number: int, default=0):
    values = fields.get(number)
    return values[-1] if values else default


def signed64(value: int) -> int:
    """Reinterpret a varint-decoded int64 (two's complement in 64 bits)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def first_int(fields: dict[int, list], number: int, default: int = 0) -> int:
    """The last value of an integer field; a field of the wrong wire type is a ``FormatError``."""
    value = first(fields, number, default)
    if not isinstance(value, int):
        raise FormatError(f"protobuf field {number} is length-delimited where a number belongs")
    return value


def first_bytes(fields: dict[int, list], number: int, default: bytes = b"") -> bytes:
    """The last value of a length-delimited field; a number there is a ``FormatError``."""
    value = first(fields, number, default)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise FormatError(f"protobuf field {number} is a number where bytes belong")
    return bytes(value)
