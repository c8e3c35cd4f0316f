"""Read a LevelDB-format table (TensorFlow's ``.index`` files): every key -> value, in order.

Layout: data blocks of prefix-compressed entries with a restart array, each block followed by a
1-byte compression type and a masked crc32c; a 48-byte footer with the index block handle and
the magic 0xdb4775248b80fb57.
"""
from __future__ import annotations

import struct

import google_crc32c

from ...errors import FormatError, UnsafeCheckpointError
from ..protowire import read_varint

__all__ = ["read_table", "masked_crc32c", "unmask"]

MAGIC = 0xDB4775248B80FB57
FOOTER = 48
MAX_INDEX = 1 << 30


def masked_crc32c(data: bytes) -> int:
    return mask(google_crc32c.value(data))


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int, where: str) -> bytes:
    if offset + size + 5 > len(data):
        raise FormatError(f"{where}: block at {offset} (+{size}) runs past the end of the index")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if masked_crc32c(contents + bytes([kind])) != stored:
        raise FormatError(f"{where}: checksum mismatch in index block at byte {offset}")
    if kind != 0:
        raise FormatError(f"{where}: index block at byte {offset} is compressed (type {kind}); only uncompressed tables are supported")
    return contents


def _entries(block: bytes, where: str):
    if len(block) < 4:
        raise FormatError(f"{where}: index block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise FormatError(f"{where}: index block restart array is larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = read_varint(block, pos, 5)
        unshared, pos = read_varint(block, pos, 5)
        vlen, pos = read_varint(block, pos, 5)
        if shared > len(key) or pos + unshared + vlen > end:
            raise FormatError(f"{where}: corrupt index entry at byte {pos}")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + vlen]
        pos += vlen


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a table held in ``data``, in key order."""
    if len(data) > MAX_INDEX:
        raise UnsafeCheckpointError(f"{where}: index of {len(data)} bytes is over the 1 GiB limit; refusing")
    if len(data) < FOOTER:
        raise FormatError(f"{where}: truncated index ({len(data)} bytes, shorter than its footer)")
    footer = data[-FOOTER:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER - 8)
    if magic != MAGIC:
        raise FormatError(f"{where}: not a TensorFlow checkpoint index (bad magic)")
    _meta_off, _meta_size, pos = _handle(footer, 0)
    index_off, index_size, _ = _handle(footer, pos)
    out: list[tuple[bytes, bytes]] = []
    for _last_key, handle in _entries(_block(data, index_off, index_size, where), where):
        off, size, _ = _handle(handle, 0)
        out.extend(_entries(_block(data, off, size, where), where))
    return out
