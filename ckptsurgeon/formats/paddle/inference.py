"""PaddlePaddle ``paddle.jit.save`` / ``save_inference_model`` files: ``PREFIX.json`` + ``PREFIX.pdiparams``.

Paddle 3 (PIR, the default) writes the program as JSON: every persistable variable is the output of a parameter
op (``{"#": "p", "A": [..., NAME], "O": {"TT": {"D": [{"#": "0.t_f32"}, DIMS, ...]}}, "OA": [persistable, ...]}``).
``PREFIX.pdiparams`` holds their tensors, one record after another in sorted name order
(``paddle/static/pir_io.py``, ``save_vars_pir``: ``save_combine`` of ``sorted(names)``) and no names; per record
(``paddle/phi/core/serialization.cc``): uint32 version 0, uint64 LoD level count (each level: uint64 size, bytes),
uint32 tensor version 0, int32 size of a ``TensorDesc`` protobuf (field 1 data type, field 2 dims), then the data.

Names come from the program, dtypes, shapes and offsets from the record headers (checked against the program's):
only headers are read to list the file; each tensor is one byte range. Paddle 2's protobuf ``PREFIX.pdmodel``
program is not read.
"""
from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from ... import location
from ...dtypes import DtypeTable
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...scopes import key_path
from ...source import ByteSource, open_source
from ..protowire import read_varint

__all__ = ["sniff", "read", "FORMAT", "PARAMS", "PROGRAM", "DTYPES"]

FORMAT = "paddle-inference"
PARAMS, PROGRAM, LEGACY_PROGRAM = ".pdiparams", ".json", ".pdmodel"
MAX_PROGRAM = 1 << 30  # bytes of JSON program read whole
MAX_DESC = 1 << 16  # a TensorDesc: a data type and at most 64 dims
MAX_LOD = 64
_PIR_MAGIC = b'"magic":"pir"'

# TensorDesc.data_type (paddle/fluid/framework/framework.proto, VarType.Type) -> numpy, and the program's name of it
DTYPES = DtypeTable({
    0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16",
    5: "float32", 6: "float64", 20: "uint8", 21: "int8", 22: "bfloat16",
    23: "complex64", 24: "complex128",
})
PIR_DTYPES = {"t_bool": 0, "t_i16": 1, "t_i32": 2, "t_i64": 3, "t_f16": 4, "t_f32": 5, "t_f64": 6, "t_ui8": 20,
              "t_i8": 21, "t_bf16": 22, "t_c64": 23, "t_c128": 24}
_HEAD = struct.Struct("<IQ")  # version, LoD level count
_TENSOR = struct.Struct("<Ii")  # tensor version, TensorDesc size


def _stem(path: str) -> str:
    for suffix in (PARAMS, PROGRAM):
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


def sniff(head: bytes, path: str) -> bool:
    """A paddle 3 JSON program (``"magic":"pir"`` in its first bytes), or a combined parameter file: a first record
    header of version 0, no LoD, tensor version 0 and a small TensorDesc that starts with a known data type (the
    reader then names the program it needs beside it)."""
    del path
    if head.startswith(b'{"base_code":') and _PIR_MAGIC in head:
        return True
    if len(head) < 25 or head[:4] != b"\0\0\0\0" or head[12:16] != b"\0\0\0\0":
        return False
    (lod,) = struct.unpack_from("<Q", head, 4)
    (size,) = struct.unpack_from("<i", head, 16)
    return lod == 0 and 2 <= size <= 64 and head[20] == 0x08 and head[21] in DTYPES.names()


def _names(program: str) -> list[tuple[str, int | None, tuple[int, ...] | None]]:
    """(name, data type, dims) of every persistable variable the JSON program declares, in sorted name order."""
    try:
        doc = json.loads(location.read_small(program, MAX_PROGRAM, "paddle program"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{program}: not a paddle JSON program: {exc}") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("base_code"), dict) and doc["base_code"].get("magic") == "pir"):
        raise FormatError(f"{program}: not a paddle JSON program (no base_code.magic 'pir')")
    out: dict[str, tuple[str, int | None, tuple[int, ...] | None]] = {}
    for op in _ops(doc.get("program")):
        attrs, results = op.get("A"), op.get("OA")
        name = attrs[-1] if isinstance(attrs, list) and attrs else None
        if not isinstance(name, str) or not (isinstance(results, list) and results and results[0] == 1):
            continue  # not persistable (a dropout state ...): not saved
        out[name] = (name, *_declared(op))
    return [out[n] for n in sorted(out)]


def _ops(node: Any, depth: int = 0) -> Iterator[dict]:
    """Every parameter op (``"#": "p"``) in the program's regions, blocks and nested regions."""
    if depth > 64:
        raise FormatError("paddle program nests regions over 64 deep")
    if isinstance(node, dict):
        if node.get("#") == "p":
            yield node
            return
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _ops(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                yield from _ops(value, depth + 1)


def _declared(op: dict) -> tuple[int | None, tuple[int, ...] | None]:
    """The data type and dims the program states for a parameter op's output (None where it states none we know)."""
    try:
        desc = op["O"]["TT"]["D"]
        dtype = PIR_DTYPES.get(str(desc[0]["#"]).rpartition(".")[2])
        dims = tuple(desc[1]) if isinstance(desc[1], list) and all(type(d) is int for d in desc[1]) else None
        return dtype, dims
    except (KeyError, IndexError, TypeError):
        return None, None


def _records(src: ByteSource, count: int) -> Iterator[tuple[int, tuple[int, ...], int]]:
    """(data type, dims, data offset) of each record of a combined parameter file; reads headers only."""
    pos, size = 0, src.size
    with io.BufferedReader(src.window(), 1 << 14) as fh:

        def take(n: int, what: str) -> bytes:
            nonlocal pos
            data = fh.read(n)
            if len(data) != n:
                raise FormatError(f"{src.name}: truncated at byte {pos:,} ({what})")
            pos += n
            return data

        def skip(n: int, what: str) -> None:
            nonlocal pos
            if n < 0 or n > size - pos:
                raise FormatError(f"{src.name}: {what} at byte {pos:,} declares {n:,} bytes, {size - pos:,} are left")
            fh.seek(n, io.SEEK_CUR)
            pos += n

        for i in range(count):
            at = pos
            version, lod = _HEAD.unpack(take(_HEAD.size, "record header"))
            if version != 0 or lod > MAX_LOD:
                raise FormatError(f"{src.name}: record {i} at byte {at:,}: version {version}, {lod} LoD levels; not a "
                                  "paddle combined parameter record")
            for _ in range(lod):
                (n,) = struct.unpack("<Q", take(8, "LoD level size"))
                skip(n, "a LoD level")
            tensor_version, desc_size = _TENSOR.unpack(take(_TENSOR.size, "tensor header"))
            if tensor_version != 0 or not 0 < desc_size <= MAX_DESC:
                raise FormatError(f"{src.name}: record {i} at byte {at:,}: tensor version {tensor_version}, TensorDesc of "
                                  f"{desc_size} bytes; not a paddle combined parameter record")
            dtype, dims = _desc(src.name, i, take(desc_size, "TensorDesc"))
            yield dtype, dims, pos
            nbytes = math.prod(dims) * DTYPES.row(dtype).itemsize  # dims passed check_shape: no overflow
            skip(nbytes, f"record {i}'s data")
        if pos != size:
            raise UnsafeCheckpointError(f"{src.name}: {size - pos:,} bytes follow the {count} records its program names; "
                                        "refusing (a program that does not match its parameters?)")


def _desc(name: str, i: int, buf: bytes) -> tuple[int, tuple[int, ...]]:
    dtype, dims, pos = None, [], 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value)
        elif wire == 2:  # packed dims (or an unknown field): a length, then its bytes
            n, pos = read_varint(buf, pos)
            end = pos + n
            if end > len(buf):
                raise FormatError(f"{name}: record {i}: truncated TensorDesc")
            while field == 2 and pos < end:
                value, pos = read_varint(buf, pos)
                dims.append(value)
            pos = end
        else:
            raise FormatError(f"{name}: record {i}: TensorDesc field {field} has wire type {wire}")
    if dtype is None or dtype not in DTYPES:
        raise FormatError(f"{name}: record {i}: data type {dtype} is not one ckptsurgeon reads "
                          f"(known: {', '.join(map(str, DTYPES.names()))})")
    if any(d >= 1 << 63 for d in dims):
        raise FormatError(f"{name}: record {i}: a negative dimension in {dims}")
    return dtype, tuple(dims)


def read(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    """``PREFIX.pdiparams`` or ``PREFIX.json``: the pair, each tensor named by the program."""
    del allow_globals  # no pickle here
    stem = _stem(path)
    program, params = stem + PROGRAM, stem + PARAMS
    if not location.exists(program):
        legacy = location.exists(stem + LEGACY_PROGRAM)
        raise FormatError(f"{path}: a paddle combined parameter file names no tensor; its names are in its program "
                          + (f"{stem + LEGACY_PROGRAM} (paddle 2's protobuf program), which ckptsurgeon does not read yet"
                             if legacy else f"{program}, which is missing: keep the pair {program} + {params} together"))
    if not location.exists(params):
        raise FormatError(f"{program}: a paddle program; its parameters {params} are missing")
    names = _names(program)
    src = open_source(params)
    builder = IndexBuilder(params)
    records = _records(src, len(names))
    for (name, want_dtype, want_dims), (dtype, dims, offset) in zip(names, records):
        if (want_dtype is not None and want_dtype != dtype) or (want_dims is not None and want_dims != dims):
            raise FormatError(f"{params}: tensor {name!r} is {DTYPES.lite(dtype)} {list(dims)} in the parameters, but the "
                              f"program {program} declares {(DTYPES.lite(want_dtype) or f'data type {want_dtype}') if want_dtype is not None else 'its type'} "
                              f"{list(want_dims) if want_dims is not None else ''}: the pair does not match")
        lite = DTYPES.row(dtype)
        check_shape(params, name, lite, dims)
        builder.add(TensorRef(key_path(name, "."), name, lite, dims, params, offset=offset))
    for _ in records:  # past the last record: the check that nothing follows it
        pass
    return CheckpointIndex(builder.refs, format=FORMAT, files=[params, program], key_sep=".")
