"""TensorProto -> TensorRef: every storage form of ONNX tensors, read lazily.

- ``raw_data``: the bytes sit in the model file; the TensorRef points at them (patchable in place).
- external data (``data_location = EXTERNAL``): ``location``/``offset``/``length`` in a file beside the
  model; locations that leave the model's folder (absolute, ``..``, a symbolic link on the way) and
  ranges past the file's end are refused.
- typed fields: ``float_data``/``double_data`` packed are little-endian arrays in place (patchable);
  ``int32_data`` (int8/16/32, uint8/16, bool, float16/bfloat16/float8 bit patterns, packed 4/2-bit
  bytes), ``int64_data`` and ``uint64_data`` are varints, decoded when read, as ``onnx.numpy_helper``.
- sub-byte types (int4, uint4, float4e2m1, int2, uint2) are unpacked to one element per byte.
"""
from __future__ import annotations

import math
import os
import posixpath
import stat
from typing import TYPE_CHECKING

from ...dtype_lite import LiteDtype
from ...dtypes import ONNX_DTYPE_NAMES, ONNX_DTYPES, ONNX_PACKED_BITS, ONNX_STRING
from ...errors import FormatError, UnsafeCheckpointError
from ...index import TensorRef
from ...source import is_url, open_source
from .model import SparseInfo, TensorInfo
from .wire import Wire, decode_packed

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["tensor_ref", "sparse_ref", "string_values", "external_path", "stored_nbytes", "load_array", "MAX_DENSE"]

MAX_BYTES = 1 << 62
MAX_DENSE = 1 << 32  # a sparse tensor is densified up to this many bytes
MAX_STRINGS = 65536  # string tensors up to this many bytes are shown in metadata

# TensorProto typed field numbers and the data types each holds (onnx.proto comments, numpy_helper.to_array).
FLOAT_DATA, INT32_DATA, STRING_DATA, INT64_DATA, DOUBLE_DATA, UINT64_DATA = 4, 5, 6, 7, 10, 11
TYPED_FIELD: dict[int, int] = {
    1: FLOAT_DATA, 14: FLOAT_DATA,  # float32, complex64 (real, imag pairs)
    11: DOUBLE_DATA, 15: DOUBLE_DATA,  # float64, complex128
    7: INT64_DATA,
    12: UINT64_DATA, 13: UINT64_DATA,  # uint32, uint64
    **{t: INT32_DATA for t in (2, 3, 4, 5, 6, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26)},
}
_BIT_PATTERNS = {4: "uint16", 5: "uint16", 10: "uint16", 16: "uint16",  # 16-bit: low half of each int32
                 9: "uint8", 17: "uint8", 18: "uint8", 19: "uint8", 20: "uint8", 24: "uint8"}


def dtype_of(info: TensorInfo, where: str) -> LiteDtype:
    dt = ONNX_DTYPES.lite(info.data_type)
    if dt is None:
        name = ONNX_DTYPE_NAMES.get(info.data_type, f"data type {info.data_type}")
        raise FormatError(f"{where}: tensor {info.name!r} has {name} elements, which ckptsurgeon cannot read")
    return dt


def stored_nbytes(info: TensorInfo, numel: int) -> int:
    """Bytes of the tensor's raw (or external) form: sub-byte types are packed."""
    bits = ONNX_PACKED_BITS.get(info.data_type)
    return (numel * bits + 7) // 8 if bits else numel * ONNX_DTYPES.row(info.data_type).itemsize


def external_path(model: str, location: str, tensor: str) -> str:
    """The external data file ``location`` names, refused if it leaves the model's folder."""
    where = f"{model}: tensor {tensor!r}: external data location {location!r}"
    if not location or "\x00" in location:
        raise FormatError(f"{where} is empty or invalid")
    if location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":") or is_url(location):
        raise UnsafeCheckpointError(f"{where} is absolute; refused (external data must lie beside the model)")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeCheckpointError(f"{where} leaves the model's folder ('..'); refused")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise FormatError(f"{where} names no file")
    if is_url(model):
        return posixpath.join(model.rsplit("/", 1)[0], *parts)
    base = os.path.dirname(os.path.abspath(model))
    path = base
    for part in parts:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise FormatError(f"{where}: no such file {path}") from None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeCheckpointError(f"{where} goes through the symbolic link {path}; refused (no links are followed)")
    if os.path.commonpath([os.path.realpath(path), os.path.realpath(base)]) != os.path.realpath(base):
        raise UnsafeCheckpointError(f"{where} resolves outside the model's folder; refused")
    return os.path.join(os.path.dirname(model), *parts)


def _int(text: str, what: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FormatError(f"{where}: external data {what} {text!r} is not an integer") from None
    if value < 0:
        raise FormatError(f"{where}: negative external data {what} {value}")
    return value


def _unpack(raw: np.ndarray, info: TensorInfo, numel: int, shape: tuple[int, ...]) -> np.ndarray:
    bits = ONNX_PACKED_BITS[info.data_type]
    per = 8 // bits
    out = np.empty(raw.size * per, dtype=np.uint8)
    for k in range(per):
        out[k::per] = (raw >> (k * bits)) & ((1 << bits) - 1)
    return out[:numel].view(ONNX_DTYPES[info.data_type]).reshape(shape)


def _typed_array(wire: Wire, info: TensorInfo, field: int, numel: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    fields = info.typed.get(field, [])
    what = f"tensor {info.name!r}"
    if field in (FLOAT_DATA, DOUBLE_DATA):
        kind = "fixed32" if field == FLOAT_DATA else "fixed64"
        bits = decode_packed(wire, fields, kind, MAX_BYTES, what)
        store = np.array(bits, dtype=np.uint32 if field == FLOAT_DATA else np.uint64).view(
            np.float32 if field == FLOAT_DATA else np.float64)
        arr = store.view(ONNX_DTYPES[info.data_type]) if info.data_type in (14, 15) else store
    else:
        values = decode_packed(wire, fields, "varint", MAX_BYTES, what)
        if field == INT64_DATA:
            arr = np.array(values, dtype=np.uint64).view(np.int64)
        elif field == UINT64_DATA:
            arr = np.array(values, dtype=np.uint64).astype(ONNX_DTYPES[info.data_type])
        else:  # int32_data: a 32-bit value per entry (negative ones are sign-extended varints)
            i32 = (np.array(values, dtype=np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            if info.data_type in ONNX_PACKED_BITS:
                _check_packed(i32.size, info, numel, where)
                return _unpack(i32.astype(np.uint8), info, numel, shape)
            pattern = _BIT_PATTERNS.get(info.data_type)
            arr = i32.astype(pattern).view(ONNX_DTYPES[info.data_type]) if pattern else i32.view(np.int32).astype(
                ONNX_DTYPES[info.data_type])
    if arr.size != numel:
        raise FormatError(f"{where}: tensor {info.name!r} holds {arr.size} values, its shape {list(shape)} needs {numel}")
    return arr.reshape(shape)


def _check_packed(nbytes: int, info: TensorInfo, numel: int, where: str) -> None:
    if nbytes != stored_nbytes(info, numel):
        raise FormatError(f"{where}: tensor {info.name!r} holds {nbytes} packed bytes, its shape needs {stored_nbytes(info, numel)}")


def load_array(model: str, info: TensorInfo) -> np.ndarray:
    """The tensor's values, read now (used for typed fields, sub-byte types and small inline tensors)."""
    ref = tensor_ref(model, info, "", "")
    if isinstance(ref, list):
        raise FormatError(f"{model}: tensor {info.name!r} holds strings")
    return ref.numpy()


def tensor_ref(model: str, info: TensorInfo, path: str, key: str) -> TensorRef | list[str]:
    """A lazy TensorRef for ``info`` (a list of strings for string tensors, which go to metadata)."""
    where = model
    if info.segment:
        raise FormatError(f"{where}: tensor {info.name!r} is segmented (TensorProto.segment); not supported")
    if info.data_type == ONNX_STRING:
        return string_values(model, info)
    dtype = dtype_of(info, where)
    shape = info.dims
    numel = math.prod(shape)
    if numel * dtype.itemsize > MAX_BYTES:
        raise UnsafeCheckpointError(f"{where}: tensor {info.name!r} shape {list(shape)} overflows")
    need = stored_nbytes(info, numel)
    packed = info.data_type in ONNX_PACKED_BITS
    if info.external is not None:
        ext = info.external
        if "location" not in ext:
            raise FormatError(f"{where}: tensor {info.name!r} is external but names no location")
        file = external_path(model, ext["location"], info.name)
        size = open_source(file).size
        offset = _int(ext.get("offset", "0"), "offset", where)
        length = _int(ext["length"], "length", where) if "length" in ext else need
        if offset + length > size:
            raise FormatError(f"{file}: tensor {info.name!r} declares bytes {offset}..{offset + length}, past the "
                              f"end of the file ({size} bytes)")
        if length != need:
            raise FormatError(f"{where}: tensor {info.name!r}: shape {list(shape)} x {dtype.name} needs {need} bytes, "
                              f"its external data declares {length}")
        return _ranged(path, key, dtype, shape, file, offset, need, info, packed)
    if info.raw is not None:
        length = info.raw.end - info.raw.start
        if length != need:
            raise FormatError(f"{where}: tensor {info.name!r}: shape {list(shape)} x {dtype.name} needs {need} bytes, "
                              f"raw_data holds {length}")
        return _ranged(path, key, dtype, shape, model, info.raw.start, need, info, packed)
    field = TYPED_FIELD[info.data_type]
    fields = info.typed.get(field, [])
    if not fields and numel:
        raise FormatError(f"{where}: tensor {info.name!r} of shape {list(shape)} holds no data")
    if field in (FLOAT_DATA, DOUBLE_DATA) and len(fields) == 1 and fields[0].wire == 2 \
            and fields[0].end - fields[0].start == need:  # a packed little-endian array: in place, patchable
        return TensorRef(path, key, dtype, shape, model, fields[0].start)

    def load(info: TensorInfo = info) -> np.ndarray:
        return _typed_array(Wire(open_source(model)), info, field, numel, shape, where)

    return TensorRef(path, key, dtype, shape, model, loader=load)


def _ranged(path: str, key: str, dtype: LiteDtype, shape: tuple[int, ...], file: str, offset: int, nbytes: int,
            info: TensorInfo, packed: bool) -> TensorRef:
    if not packed:
        return TensorRef(path, key, dtype, shape, file, offset)

    def load() -> np.ndarray:
        raw = np.frombuffer(open_source(file).read(offset, nbytes), dtype=np.uint8)
        return _unpack(raw, info, math.prod(shape), shape)

    return TensorRef(path, key, dtype, shape, file, offset, loader=load, raw=False)


def string_values(model: str, info: TensorInfo) -> list[str]:
    """A string tensor's values (up to MAX_STRINGS bytes), else a one-item summary."""
    fields = info.typed.get(STRING_DATA, [])
    total = sum(f.end - f.start for f in fields)
    if total > MAX_STRINGS:
        return [f"<{len(fields)} strings, {total} bytes, shape {list(info.dims)}>"]
    wire = Wire(open_source(model))
    return [wire.read(f.start, f.end, MAX_STRINGS, "string").decode("utf-8", "replace") for f in fields]


def sparse_ref(model: str, sp: SparseInfo, path: str, key: str) -> TensorRef:
    """A sparse tensor as the dense tensor it stands for, densified when read."""
    where = model
    vals = tensor_ref(model, sp.values, "", "")
    if isinstance(vals, list):
        raise FormatError(f"{where}: sparse tensor {sp.values.name!r} holds strings; not supported")
    shape = sp.dims
    numel = math.prod(shape)
    if numel * vals.dtype.itemsize > MAX_BYTES:
        raise UnsafeCheckpointError(f"{where}: sparse tensor {sp.values.name!r} shape {list(shape)} overflows")
    nnz = vals.numel
    if len(vals.shape) != 1:
        raise FormatError(f"{where}: sparse tensor {sp.values.name!r}: values must be 1-D, got {list(vals.shape)}")
    idx = None
    if sp.indices is not None:
        idx = tensor_ref(model, sp.indices, "", "")
        if isinstance(idx, list) or idx.dtype != np.int64 or idx.shape not in ((nnz,), (nnz, len(shape))):
            raise FormatError(f"{where}: sparse tensor {sp.values.name!r}: indices must be int64 [NNZ] or [NNZ, rank]")
    elif nnz != numel:
        raise FormatError(f"{where}: sparse tensor {sp.values.name!r} has {nnz} values, no indices and {numel} elements")

    def load() -> np.ndarray:
        if numel * vals.dtype.itemsize > MAX_DENSE:
            raise UnsafeCheckpointError(f"{where}: sparse tensor {path!r} would densify to "
                                        f"{numel * vals.dtype.itemsize} bytes, over the {MAX_DENSE}-byte limit")
        v = vals.numpy()
        if idx is None:
            return v.reshape(shape)
        ix = idx.numpy()
        if ix.ndim == 2:
            if ix.size and ((ix < 0).any() or (ix >= np.array(shape, dtype=np.int64)).any()):
                raise FormatError(f"{where}: sparse tensor {path!r} has indices outside its shape {list(shape)}")
            ix = np.ravel_multi_index(ix.T, shape) if ix.size else ix.reshape(-1)
        if ix.size and (ix.min() < 0 or ix.max() >= numel):
            raise FormatError(f"{where}: sparse tensor {path!r} has indices outside its {numel} elements")
        dense = np.zeros(numel, dtype=vals.dtype)
        dense[ix] = v
        return dense.reshape(shape)

    return TensorRef(path, key, vals.dtype, shape, model, loader=load)


def scalar_ref(path: str, key: str, values: list, dtype: str, shape: tuple[int, ...], model: str) -> TensorRef:
    """A Constant's ``value_float(s)``/``value_int(s)``: decoded attributes, as the tensors they define."""
    arr = np.array(values, dtype=dtype).reshape(shape)
    return TensorRef(path, key, arr.dtype, shape, model, loader=lambda: arr.copy())

