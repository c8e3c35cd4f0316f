"""The GGUF header (llama.cpp's ``gguf.cpp`` / gguf-py's ``GGUFReader``), parsed from a byte source.

Layout (versions 2 and 3): ``GGUF`` magic, uint32 version, uint64 tensor count, uint64 key/value count;
the key/value pairs (a string key, a uint32 value type, the value); one info record per tensor (name,
uint32 dimension count, uint64 dimensions fastest first, uint32 ggml type, uint64 offset into the data
section); padding to ``general.alignment`` (default 32); the data section. A big-endian file (version 3)
swaps every number, tensor data included.

Not gguf-py's reader: that one memory-maps the file (no remote source) and trusts the counts it reads
(an array of 2**63 elements loops for ever). Here every count and length is bounded by the bytes left
in the file before anything is allocated, and long arrays (a tokenizer's vocabulary) are summarized,
not held, in the metadata.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError, UnsafeCheckpointError
from ...source import ByteSource
from ..magic import GGUF_MAGIC

__all__ = ["MAGIC", "GGUFHeader", "TensorInfo", "parse_header", "DEFAULT_ALIGNMENT", "KEEP_ARRAY"]

MAGIC = GGUF_MAGIC
DEFAULT_ALIGNMENT = 32
KEEP_ARRAY = 64  # arrays up to this length are kept whole in the metadata; longer ones are summarized
MAX_STRING_ARRAY = 1 << 24  # strings in one array (a vocabulary holds a few hundred thousand)
MAX_NESTING = 4
MAX_DIMS = 4  # GGML_MAX_DIMS

# value type -> (name, struct code); 8 STRING and 9 ARRAY are read by hand
_SCALARS = {
    0: ("uint8", "B"), 1: ("int8", "b"), 2: ("uint16", "H"), 3: ("int16", "h"), 4: ("uint32", "I"),
    5: ("int32", "i"), 6: ("float32", "f"), 7: ("bool", "?"), 10: ("uint64", "Q"), 11: ("int64", "q"),
    12: ("float64", "d"),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor info record: ``dims`` as the file gives them (fastest first), ``offset`` from the data section."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GGUFHeader:
    version: int
    byteorder: str  # "<" or ">"
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    alignment: int
    data_start: int  # absolute offset of the data section
    summarized: list[str] = field(default_factory=list)  # keys whose long arrays the metadata only summarizes


class _Cursor:
    """Sequential reads from a buffered window over the source, each bounded by the bytes left."""

    def __init__(self, src: ByteSource, byteorder: str) -> None:
        self.src, self.order, self.pos, self.size = src, byteorder, 0, src.size
        self.fh = io.BufferedReader(src.window(), 1 << 16)

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise FormatError(f"{self.src.name}: truncated GGUF header: {what} at byte {self.pos} needs {n:,} bytes, "
                              f"{self.size - self.pos:,} are left")
        data = self.fh.read(n)
        if len(data) != n:
            raise FormatError(f"{self.src.name}: truncated GGUF header at byte {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise FormatError(f"{self.src.name}: truncated GGUF header: {what} at byte {self.pos} needs {n:,} bytes, "
                              f"{self.size - self.pos:,} are left")
        self.fh.seek(n, io.SEEK_CUR)
        self.pos += n

    def number(self, code: str, what: str) -> Any:
        fmt = self.order + code
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.number("Q", what)
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.src.name}: {what} at byte {self.pos - n} is not UTF-8") from None

    def close(self) -> None:
        self.fh.close()


def _value(cur: _Cursor, vtype: int, key: str, depth: int = 0) -> Any:
    """One value of type ``vtype``; an array longer than KEEP_ARRAY becomes ``{"array": type, "length": n}``."""
    if vtype in _SCALARS:
        return cur.number(_SCALARS[vtype][1], f"value of {key!r}")
    if vtype == _STRING:
        return cur.string(f"value of {key!r}")
    if vtype != _ARRAY:
        raise FormatError(f"{cur.src.name}: metadata {key!r} has unknown value type {vtype}")
    if depth >= MAX_NESTING:
        raise UnsafeCheckpointError(f"{cur.src.name}: metadata {key!r} nests arrays over {MAX_NESTING} deep; refusing")
    etype = cur.number("I", f"array type of {key!r}")
    n = cur.number("Q", f"array length of {key!r}")
    if etype in _SCALARS:
        size = struct.calcsize(_SCALARS[etype][1])
        if n <= KEEP_ARRAY:
            return [cur.number(_SCALARS[etype][1], f"element of {key!r}") for _ in range(n)]
        cur.skip(n * size, f"array {key!r} of {n:,} {_SCALARS[etype][0]}")
        return {"array": _SCALARS[etype][0], "length": n}
    if etype not in (_STRING, _ARRAY):
        raise FormatError(f"{cur.src.name}: metadata {key!r} is an array of unknown value type {etype}")
    if n * 8 > cur.size - cur.pos:  # every element takes at least 8 bytes (a length or a count)
        raise FormatError(f"{cur.src.name}: metadata {key!r} declares {n:,} elements, more than the file can hold")
    if n > MAX_STRING_ARRAY:
        raise UnsafeCheckpointError(f"{cur.src.name}: metadata {key!r} declares {n:,} elements "
                                    f"(limit {MAX_STRING_ARRAY:,}); refusing")
    items = [_value(cur, etype, key, depth + 1) for _ in range(n)]
    if n <= KEEP_ARRAY:
        return items
    return {"array": "string" if etype == _STRING else "array", "length": n, "first": items[:8]}


def parse_header(src: ByteSource) -> GGUFHeader:
    """Parse the header of the GGUF file ``src`` (reads the header's bytes only)."""
    head = bytes(src.read(0, min(src.size, 24)))
    if not head.startswith(MAGIC) or len(head) < 24:
        raise FormatError(f"{src.name}: not a GGUF file (no GGUF magic and counts)")
    (version,) = struct.unpack("<I", head[4:8])
    byteorder = "<"
    if version & 0xFFFF == 0:  # written by a big-endian machine (gguf-py: byte_order 'S')
        byteorder, version = ">", struct.unpack(">I", head[4:8])[0]
    if version not in (2, 3):
        raise FormatError(f"{src.name}: GGUF version {version} is not supported (2 and 3 are); "
                          + ("re-convert it with a current llama.cpp" if version == 1 else "is this ckptsurgeon older than the file?"))
    cur = _Cursor(src, byteorder)
    try:
        cur.skip(8, "magic and version")
        n_tensors = cur.number("Q", "tensor count")
        n_kv = cur.number("Q", "metadata count")
        if n_kv * 13 > src.size or n_tensors * 24 > src.size:  # the smallest record of each takes that many bytes
            raise FormatError(f"{src.name}: GGUF header declares {n_tensors:,} tensors and {n_kv:,} metadata entries, "
                              f"more than {src.size:,} bytes can hold")
        metadata: dict[str, Any] = {}
        summarized = []
        for _ in range(n_kv):
            key = cur.string("metadata key")
            if key in metadata:
                raise FormatError(f"{src.name}: metadata key {key!r} appears twice")
            metadata[key] = _value(cur, cur.number("I", f"value type of {key!r}"), key)
            if isinstance(metadata[key], dict):
                summarized.append(key)
        tensors, names = [], set()
        for _ in range(n_tensors):
            name = cur.string("tensor name")
            if name in names:
                raise FormatError(f"{src.name}: tensor {name!r} appears twice")
            names.add(name)
            n_dims = cur.number("I", f"dimension count of {name!r}")
            if n_dims > MAX_DIMS:
                raise FormatError(f"{src.name}: tensor {name!r} has {n_dims} dimensions (ggml allows {MAX_DIMS})")
            dims = tuple(cur.number("Q", f"dimensions of {name!r}") for _ in range(n_dims))
            tensors.append(TensorInfo(name, dims, cur.number("I", f"type of {name!r}"),
                                      cur.number("Q", f"offset of {name!r}")))
    finally:
        cur.close()
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise FormatError(f"{src.name}: general.alignment {alignment!r} is not a power of two")
    data_start = cur.pos + (-cur.pos % alignment)
    return GGUFHeader(version, byteorder, metadata, tensors, alignment, data_start, summarized)
