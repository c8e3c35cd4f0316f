"""A bounded reader of FlatBuffers tables over a byte source: just what the TFLite schema's few tables need.

Why not the ``flatbuffers`` package: its runtime reads tables only through code generated from the schema
(``schema_py_generated.py``, 20,000 lines that TensorFlow vendors), takes the whole file as one ``bytes``
(no lazy or remote reading) and checks no offset against the buffer's end, so a damaged file reads garbage
or loops. The wire format is small (https://flatbuffers.dev/internals/):

- the root: a uint32 offset at byte 0 to the root table (a 4-byte file identifier, ``TFL3``, follows it);
- a table: an int32 at its start, ``table - vtable``; the vtable: uint16 vtable size, uint16 table size, then
  one uint16 per field, the field's offset inside the table (0: absent, the schema default);
- a scalar field sits in the table; a table, vector or string field holds a uint32 offset relative to the
  field's own position;
- a vector or string: a uint32 element count, then the elements (a vector of tables: uint32 offsets, each
  relative to its own position; a string: bytes and a NUL).

Every position read is checked against the file's size before it is read, and every count against the bytes
left, so no count in a file can make this allocate or loop beyond the file's own size.
"""
from __future__ import annotations

import struct
from collections import OrderedDict

from ...errors import FormatError
from ...source import ByteSource

__all__ = ["Buffer", "Table", "root"]

PAGE = 4096
MAX_PAGES = 256


class Buffer:
    """Random access to a byte source in cached pages (a listing touches tables, never tensor bytes at length)."""

    def __init__(self, src: ByteSource) -> None:
        self.src, self.size, self.name = src, src.size, src.name
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_read = 0

    def read(self, pos: int, n: int, what: str) -> bytes:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise FormatError(f"{self.name}: {what} at byte {pos:,} ({n:,} bytes) lies outside the file of "
                              f"{self.size:,} bytes (truncated or damaged flatbuffer)")
        out = bytearray()
        while n:
            page, at = divmod(pos, PAGE)
            data = self._pages.get(page)
            if data is None:
                start = page * PAGE
                data = bytes(self.src.read(start, min(PAGE, self.size - start)))
                self.bytes_read += len(data)
                self._pages[page] = data
                if len(self._pages) > MAX_PAGES:
                    self._pages.popitem(last=False)
            chunk = data[at:at + n]
            out += chunk
            pos += len(chunk)
            n -= len(chunk)
        return bytes(out)

    def unpack(self, fmt: str, pos: int, what: str) -> int:
        return struct.unpack_from("<" + fmt, self.read(pos, struct.calcsize(fmt), what))[0]


class Table:
    """One table at ``pos``; fields by their index in the schema (``field(0)`` is the first declared)."""

    def __init__(self, buf: Buffer, pos: int, what: str) -> None:
        self.buf, self.pos, self.what = buf, pos, what
        vtable = pos - buf.unpack("i", pos, f"{what} (table)")
        self.vsize = buf.unpack("H", vtable, f"{what} (vtable)")
        if self.vsize < 4 or self.vsize % 2:
            raise FormatError(f"{buf.name}: {what}: vtable of {self.vsize} bytes at byte {vtable:,} (damaged flatbuffer)")
        self.fields = buf.read(vtable + 4, self.vsize - 4, f"{what} (vtable)")

    def _offset(self, i: int) -> int:
        if 2 * i + 2 > len(self.fields):
            return 0
        return int(struct.unpack_from("<H", self.fields, 2 * i)[0])

    def has(self, i: int) -> bool:
        return self._offset(i) != 0

    def scalar(self, i: int, fmt: str, default: int | float = 0) -> int | float:
        at = self._offset(i)
        if not at:
            return default
        value: int | float = struct.unpack_from("<" + fmt, self.buf.read(self.pos + at, struct.calcsize(fmt),
                                                                        f"{self.what} field {i}"))[0]
        return value

    def _target(self, i: int) -> int | None:
        at = self._offset(i)
        if not at:
            return None
        where = self.pos + at
        return where + self.buf.unpack("I", where, f"{self.what} field {i}")

    def table(self, i: int, what: str) -> Table | None:
        pos = self._target(i)
        return None if pos is None else Table(self.buf, pos, what)

    def vector(self, i: int, elem: int, what: str) -> tuple[int, int] | None:
        """``(position of the first element, count)``, the count checked against the bytes left."""
        pos = self._target(i)
        if pos is None:
            return None
        n = self.buf.unpack("I", pos, f"{what} (length)")
        if n * elem > self.buf.size - pos - 4:
            raise FormatError(f"{self.buf.name}: {what}: {n:,} elements of {elem} bytes at byte {pos + 4:,} run past "
                              f"the end of the file ({self.buf.size:,} bytes; truncated or damaged flatbuffer)")
        return pos + 4, n

    def scalars(self, i: int, fmt: str, what: str) -> list:
        """A vector of scalars, read whole (shapes, scales, zero points, operator inputs)."""
        size = struct.calcsize(fmt)
        vec = self.vector(i, size, what)
        if vec is None:
            return []
        pos, n = vec
        return list(struct.unpack(f"<{n}{fmt}", self.buf.read(pos, n * size, what)))

    def tables(self, i: int, what: str) -> list[Table]:
        vec = self.vector(i, 4, what)
        if vec is None:
            return []
        pos, n = vec
        offsets = struct.unpack(f"<{n}I", self.buf.read(pos, 4 * n, what))
        return [Table(self.buf, pos + 4 * k + off, f"{what}[{k}]") for k, off in enumerate(offsets)]

    def string(self, i: int, what: str) -> str | None:
        vec = self.vector(i, 1, what)
        if vec is None:
            return None
        pos, n = vec
        return self.buf.read(pos, n, what).decode("utf-8", "replace")


def root(buf: Buffer, identifier: bytes) -> Table:
    if buf.size < 8 or buf.read(4, 4, "file identifier") != identifier:
        raise FormatError(f"{buf.name}: no flatbuffer file identifier {identifier.decode()!r} at byte 4")
    return Table(buf, buf.unpack("I", 0, "root offset"), "model")
