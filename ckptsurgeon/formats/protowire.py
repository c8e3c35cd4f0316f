"""A minimal protobuf wire-format decoder (enough for TensorFlow's bundle protos); no codegen."""
from __future__ import annotations

import struct

from ..errors import FormatError

__all__ = ["read_varint", "decode", "first", "first_int", "first_bytes", "signed64"]


def read_varint(buf: bytes, pos: int, limit: int = 10) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
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
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise FormatError("truncated fixed64")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
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
        fields.setdefault(number, []).append(value)
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
