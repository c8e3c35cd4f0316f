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

__all__ = ["read_table", "locate_values", "reseal", "masked_crc32c", "unmask", "mask", "TableWriter", "varint"]

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


def _positions(block: bytes, where: str):
    """(key, value offset in the block, value length) for every entry of a block."""
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
        yield key, pos, vlen
        pos += vlen


def _entries(block: bytes, where: str):
    for key, at, length in _positions(block, where):
        yield key, block[at : at + length]


def locate_values(data: bytes, where: str) -> dict[bytes, tuple[int, int, int, int]]:
    """key -> (value offset in ``data``, value length, its data block's offset, that block's size): for
    rewriting a value of the same length in place, then its block's checksum (``reseal``)."""
    out: dict[bytes, tuple[int, int, int, int]] = {}
    index_off, index_size = _footer(data, where)
    for _last_key, handle in _entries(_block(data, index_off, index_size, where), where):
        off, size, _ = _handle(handle, 0)
        for key, at, length in _positions(_block(data, off, size, where), where):
            out[key] = (off + at, length, off, size)
    return out


def reseal(data: bytearray, block: int, size: int) -> None:
    """Recompute the masked crc32c of the block at ``block`` (``size`` bytes) after its contents changed."""
    data[block + size + 1 : block + size + 5] = struct.pack("<I", masked_crc32c(bytes(data[block : block + size + 1])))


def _footer(data: bytes, where: str) -> tuple[int, int]:
    """The index block's handle, after the size and magic checks."""
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
    return index_off, index_size


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a table held in ``data``, in key order."""
    index_off, index_size = _footer(data, where)
    out: list[tuple[bytes, bytes]] = []
    for _last_key, handle in _entries(_block(data, index_off, index_size, where), where):
        off, size, _ = _handle(handle, 0)
        out.extend(_entries(_block(data, off, size, where), where))
    return out


# ---- writing: what tensorflow/core/lib/io/table_builder.cc writes (LevelDB's table, no compression) ----

BLOCK_SIZE = 256 * 1024  # table::Options().block_size
RESTART_INTERVAL = 16  # table::Options().block_restart_interval (the index block restarts at every key)


def varint(n: int) -> bytes:
    """A base-128 varint (protobuf's and LevelDB's); a negative number as its 64-bit two's complement."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _separator(start: bytes, limit: bytes) -> bytes:
    """A short key >= start and < limit (LevelDB's bytewise FindShortestSeparator)."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """A short key >= key (LevelDB's bytewise FindShortSuccessor)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _Block:
    """Prefix-compressed entries with a restart point every ``interval`` keys (block_builder.cc)."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.buf = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.interval:
            limit = min(len(key), len(self.last))
            while shared < limit and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.count = 0
        self.buf += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        self.last = key
        self.count += 1

    def size(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buf) + b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack("<I", len(self.restarts))

    def empty(self) -> bool:
        return not self.buf


class TableWriter:
    """Builds a table in memory from keys added in strictly increasing order; ``finish`` returns its bytes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.data = _Block(RESTART_INTERVAL)
        self.index = _Block(1)
        self.pending: bytes | None = None  # handle of the last data block, indexed once the next key is known
        self.last = b""
        self.entries = 0

    def _emit(self, block: bytes) -> bytes:
        handle = varint(len(self.out)) + varint(len(block))
        self.out += block + b"\x00" + struct.pack("<I", masked_crc32c(block + b"\x00"))
        return handle

    def add(self, key: bytes, value: bytes) -> None:
        if self.entries and key <= self.last:
            raise ValueError(f"table keys must increase: {key!r} after {self.last!r}")
        if self.pending is not None:
            self.index.add(_separator(self.last, key), self.pending)
            self.pending = None
        self.data.add(key, value)
        self.last, self.entries = key, self.entries + 1
        if self.data.size() >= BLOCK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if not self.data.empty():
            self.pending = self._emit(self.data.finish())
            self.data = _Block(RESTART_INTERVAL)

    def finish(self) -> bytes:
        self._flush()
        meta = self._emit(_Block(RESTART_INTERVAL).finish())
        if self.pending is not None:
            self.index.add(_successor(self.last), self.pending)
        index = self._emit(self.index.finish())
        footer = (meta + index).ljust(FOOTER - 8, b"\x00") + struct.pack("<Q", MAGIC)
        return bytes(self.out + footer)
