"""safetensors: an 8-byte header length, a JSON header, one contiguous byte buffer.

The header is validated as the reference implementation does (safetensors/src/tensor.rs): size
limits, UTF-8 JSON, no duplicate keys, known dtypes, offsets that tile the buffer exactly, sizes
that agree with dtype x shape, no trailing bytes.
"""
from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from json.decoder import scanstring
from typing import Any


from ...dtypes import SAFETENSORS_DTYPES
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape, lazy_range_sha256, lazy_sha256
from ...scopes import key_path
from ...source import open_source
from ..tree import is_optimizer_path

__all__ = ["sniff", "read", "read_header"]

FORMAT = "safetensors"
MAX_HEADER = 100_000_000


def sniff(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_HEADER, file_size - 8) and head[8:9] == b"{"


def _object(pairs: Any, what: str) -> dict[str, Any]:
    """A JSON object parsed with ``object_pairs_hook=list`` as a dict; a key given twice is an error.

    The hook is the C ``list`` (a Python hook per object costs seconds on 100,000-tensor headers);
    JSON arrays stay lists of values, objects are lists of (key, value) tuples.
    """
    if not isinstance(pairs, list) or (pairs and not isinstance(pairs[0], tuple)):
        raise FormatError(f"{what} is not a JSON object")
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise FormatError(f"duplicate key {dup!r} in header")
    return out


_WS = re.compile(r"[ \t\n\r]*")
_VALUES = json.JSONDecoder(object_pairs_hook=list)


def _members(text: str) -> Iterator[tuple[str, Any]]:
    """The members of the JSON object ``text``, one at a time, each value parsed by the C decoder with
    ``object_pairs_hook=list``: a 100,000-tensor header is never held parsed whole. Malformed JSON
    raises ``ValueError`` (as ``json`` does); duplicate keys are the caller's to find."""
    ws = _WS.match
    pos = ws(text, 0).end()
    if text[pos:pos + 1] != "{":
        raise ValueError("the header is not a JSON object")
    pos = ws(text, pos + 1).end()
    if text[pos:pos + 1] == "}":
        pos += 1
    else:
        while True:
            if text[pos:pos + 1] != '"':
                raise ValueError(f"expected a key at char {pos}")
            key, pos = scanstring(text, pos + 1)
            pos = ws(text, pos).end()
            if text[pos:pos + 1] != ":":
                raise ValueError(f"expected ':' at char {pos}")
            value, pos = _VALUES.raw_decode(text, ws(text, pos + 1).end())
            yield key, value
            pos = ws(text, pos).end()
            sep = text[pos:pos + 1]
            pos += 1
            if sep == "}":
                break
            if sep != ",":
                raise ValueError(f"expected ',' or '}}' at char {pos - 1}")
            pos = ws(text, pos).end()
    if ws(text, pos).end() != len(text):
        raise ValueError(f"extra data after the header object at char {pos}")


def _header_text(path: str) -> tuple[str, int, Callable[[], str]]:
    """The header's JSON text, where the data buffer starts, and the (lazy) sha256 of the bytes before it."""
    src = open_source(path)
    size = src.size
    if size < 8:
        raise FormatError(f"{path}: too short for safetensors ({size} bytes)")
    (n,) = struct.unpack("<Q", src.read(0, 8))
    if n > MAX_HEADER:
        raise UnsafeCheckpointError(f"{path}: safetensors header declares {n} bytes (limit {MAX_HEADER}); refusing")
    if 8 + n > size:
        raise FormatError(f"{path}: truncated safetensors: header of {n} bytes runs past the end of the file")
    raw = bytes(src.read(8, n))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: safetensors header is not UTF-8 JSON: {exc}") from None
    if src.local_path is not None:  # hashed when asked for, from the file: the index keeps no copy (10 MB for 100,000)
        return text, 8 + n, lazy_range_sha256(path, 0, 8 + n)
    return text, 8 + n, lazy_sha256(struct.pack("<Q", n), raw)


def _pairs(path: str, text: str) -> Iterator[tuple[str, Any]]:
    """The header's members with duplicate keys and malformed JSON as FormatError."""
    seen: set[str] = set()
    try:
        for key, value in _members(text):
            if key in seen:
                raise FormatError(f"{path}: invalid safetensors header: duplicate key {key!r} in header")
            seen.add(key)
            yield key, value
    except ValueError as exc:
        raise FormatError(f"{path}: safetensors header is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise FormatError(f"{path}: safetensors header nests too deeply (a header is a flat JSON object)") from None


def read_header(path: str) -> tuple[dict[str, Any], int, Callable[[], str]]:
    """The parsed header (objects as dicts), where the data buffer starts, and the lazy sha256 of the bytes before it."""
    text, start, digest = _header_text(path)
    header = {}
    for key, value in _pairs(path, text):
        try:
            header[key] = _object(value, repr(key)) if isinstance(value, list) else value
        except FormatError as exc:
            raise FormatError(f"{path}: invalid safetensors header: {exc}") from None
    return header, start, digest


_FIELDS = frozenset(("dtype", "shape", "data_offsets"))


def _entry(path: str, key: str, info: Any, shapes: dict[tuple[int, ...], tuple[int, ...]]
           ) -> tuple[int, int, str, Any, tuple[int, ...]]:
    """(begin, end, key, dtype, shape) of one header entry, validated like the reference implementation; equal
    shapes are one tuple (``shapes``: 100,000 tensors have a few)."""
    try:
        info = _object(info, f"tensor {key!r}")
    except FormatError as exc:
        raise FormatError(f"{path}: tensor {key!r}: malformed header entry ({exc})") from None
    if not _FIELDS.issuperset(info):
        raise FormatError(f"{path}: tensor {key!r}: malformed header entry")
    code = info.get("dtype")
    dtype = SAFETENSORS_DTYPES.lite(code) if isinstance(code, str) else None
    if dtype is None:
        raise FormatError(f"{path}: tensor {key!r}: unsupported dtype {info.get('dtype')!r}")
    shape, offs = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"{path}: tensor {key!r}: invalid shape {shape!r}")
    if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int and o >= 0 for o in offs)):
        raise FormatError(f"{path}: tensor {key!r}: invalid data_offsets {offs!r}")
    check_shape(path, key, dtype, shape)
    numel = 1
    for d in shape:
        numel *= d
    if numel * dtype.itemsize >= 1 << 64:
        raise UnsafeCheckpointError(f"{path}: tensor {key!r}: shape {shape} overflows")
    if offs[1] - offs[0] != numel * dtype.itemsize:
        raise FormatError(
            f"{path}: tensor {key!r}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, "
            f"but {info['dtype']} x {shape} needs {numel * dtype.itemsize}"
        )
    shape = tuple(shape)
    return offs[0], offs[1], key, dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype, shapes.setdefault(shape, shape)


def read(path: str) -> CheckpointIndex:
    text, start, digest = _header_text(path)
    buffer_len = open_source(path).size - start
    meta: Any = {}
    entries = []  # in header order
    shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
    for key, value in _pairs(path, text):
        if key == "__metadata__":
            meta = value or {}
        else:
            entries.append(_entry(path, key, value, shapes))
    del shapes
    try:
        meta = _object(meta, "__metadata__") if isinstance(meta, list) else meta
    except FormatError as exc:
        raise FormatError(f"{path}: invalid safetensors header: {exc}") from None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    expected = 0
    for begin, end, key, *_ in sorted(entries, key=lambda e: (e[0], e[1])):
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else "leaves a gap before it"
            raise FormatError(f"{path}: tensor {key!r} at byte {begin} {what} (expected {expected})")
        expected = end
    if expected != buffer_len:
        raise FormatError(
            f"{path}: data buffer is {buffer_len} bytes but tensors cover {expected}"
            + (" (truncated file)" if expected > buffer_len else " (trailing bytes)")
        )
    builder = IndexBuilder(path)
    for begin, _end, key, dtype, shape in entries:
        p = key_path(key, ".")
        builder.add(TensorRef(path=p, key=key, dtype=dtype, shape=shape, file=path, offset=start + begin,
                              optimizer=is_optimizer_path(p)))
    return builder.build(format=FORMAT, files=[path], metadata={"__metadata__": meta}, key_sep=".",
                         header_sha256=digest)
