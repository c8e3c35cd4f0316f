"""Dtype tables: every format's dtype names mapped to numpy dtypes (ml_dtypes for bf16/fp8).

Data only; each row says which framework spells it that way. Rows that need ml_dtypes are written as
``ML("bfloat16")`` and resolved on first lookup: ml_dtypes takes 5 ms to import, and a float32
checkpoint never needs it.
"""
from __future__ import annotations

import sys
from typing import Any, Hashable, Iterator

import numpy as np

from .errors import FormatError

__all__ = [
    "TORCH_STORAGE_DTYPES",
    "TORCH_DTYPES",
    "SAFETENSORS_DTYPES",
    "SAFETENSORS_CODES",
    "TF_DTYPES",
    "ONNX_DTYPES",
    "dtype_name",
    "resolve_dtype",
    "ml_dtype",
    "ML_NAMES",
]



class ML(str):
    """A table cell naming an ml_dtypes type (``ML("bfloat16")``), resolved when first looked up."""

    __slots__ = ()


def ml_dtype(name: str) -> np.dtype:
    """``np.dtype(ml_dtypes.<name>)``, importing ml_dtypes now."""
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


class DtypeTable(dict):
    """A format's dtype names -> numpy dtypes, with ``ML`` rows resolved on first lookup.

    Lookups (``table[k]``, ``table.get(k)``, ``k in table``) see every row; ``names()`` lists them all
    without resolving any.
    """

    def __init__(self, rows: dict[Hashable, np.dtype | ML]) -> None:
        super().__init__((k, v) for k, v in rows.items() if not isinstance(v, ML))
        self._deferred = {k: v for k, v in rows.items() if isinstance(v, ML)}

    def __missing__(self, key: Hashable) -> np.dtype:
        name = self._deferred.get(key)
        if name is None:
            raise KeyError(key)
        dtype = self[key] = ml_dtype(name)
        return dtype

    def get(self, key: Hashable, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key from a hostile file
            return default

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._deferred

    def names(self) -> Iterator[Hashable]:
        """Every row's key, resolved or not."""
        yield from dict.keys(self)
        yield from (k for k in self._deferred if not dict.__contains__(self, k))


class CodeTable(dict):
    """The reverse of a ``DtypeTable`` (numpy dtype -> the format's name). An ml_dtypes dtype can only
    exist once ml_dtypes is imported, so a miss resolves the deferred rows then."""

    def __init__(self, table: DtypeTable) -> None:
        super().__init__((v, k) for k, v in dict.items(table))
        self._table = table

    def __missing__(self, dtype: np.dtype) -> Any:
        if "ml_dtypes" in sys.modules:
            for key in list(self._table.names()):
                dict.__setitem__(self, self._table[key], key)
        if dict.__contains__(self, dtype):
            return dict.__getitem__(self, dtype)
        raise KeyError(dtype)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, TypeError):
            return default


_BF16 = ML("bfloat16")
_F8E4M3 = ML("float8_e4m3fn")
_F8E5M2 = ML("float8_e5m2")
_F8E4M3FNUZ = ML("float8_e4m3fnuz")
_F8E5M2FNUZ = ML("float8_e5m2fnuz")

# torch.save pickles storage classes by name (torch/storage.py `_dtype_to_storage_type_map`).
TORCH_STORAGE_DTYPES = DtypeTable({
    "DoubleStorage": np.dtype("float64"),
    "FloatStorage": np.dtype("float32"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": _BF16,
    "Float8_e4m3fnStorage": _F8E4M3,
    "Float8_e5m2Storage": _F8E5M2,
    "Float8_e4m3fnuzStorage": _F8E4M3FNUZ,
    "Float8_e5m2fnuzStorage": _F8E5M2FNUZ,
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "UInt16Storage": np.dtype("uint16"),
    "UInt32Storage": np.dtype("uint32"),
    "UInt64Storage": np.dtype("uint64"),
    "BoolStorage": np.dtype("bool"),
    "ComplexFloatStorage": np.dtype("complex64"),
    "ComplexDoubleStorage": np.dtype("complex128"),
})

# torch.<dtype> globals, as pickled by ``_rebuild_tensor_v3`` (torch/storage.py `_new_dtypes`).
TORCH_DTYPES = DtypeTable({
    "float64": np.dtype("float64"), "double": np.dtype("float64"),
    "float32": np.dtype("float32"), "float": np.dtype("float32"),
    "float16": np.dtype("float16"), "half": np.dtype("float16"),
    "bfloat16": _BF16,
    "float8_e4m3fn": _F8E4M3, "float8_e5m2": _F8E5M2,
    "float8_e4m3fnuz": _F8E4M3FNUZ, "float8_e5m2fnuz": _F8E5M2FNUZ,
    "int64": np.dtype("int64"), "long": np.dtype("int64"),
    "int32": np.dtype("int32"), "int": np.dtype("int32"),
    "int16": np.dtype("int16"), "short": np.dtype("int16"),
    "int8": np.dtype("int8"),
    "uint8": np.dtype("uint8"), "uint16": np.dtype("uint16"),
    "uint32": np.dtype("uint32"), "uint64": np.dtype("uint64"),
    "bool": np.dtype("bool"),
    "complex64": np.dtype("complex64"), "cfloat": np.dtype("complex64"),
    "complex128": np.dtype("complex128"), "cdouble": np.dtype("complex128"),
})

# safetensors header dtype codes (safetensors/src/tensor.rs `Dtype`).
SAFETENSORS_DTYPES = DtypeTable({
    "F64": np.dtype("float64"),
    "F32": np.dtype("float32"),
    "F16": np.dtype("float16"),
    "BF16": _BF16,
    "F8_E4M3": _F8E4M3,
    "F8_E5M2": _F8E5M2,
    "I64": np.dtype("int64"),
    "I32": np.dtype("int32"),
    "I16": np.dtype("int16"),
    "I8": np.dtype("int8"),
    "U64": np.dtype("uint64"),
    "U32": np.dtype("uint32"),
    "U16": np.dtype("uint16"),
    "U8": np.dtype("uint8"),
    "BOOL": np.dtype("bool"),
    "C64": np.dtype("complex64"),
})
SAFETENSORS_CODES = CodeTable(SAFETENSORS_DTYPES)

# tensorflow/core/framework/types.proto `DataType` (reference dtypes only; string handled apart).
TF_DTYPES = DtypeTable({
    1: np.dtype("float32"),  # DT_FLOAT
    2: np.dtype("float64"),  # DT_DOUBLE
    3: np.dtype("int32"),  # DT_INT32
    4: np.dtype("uint8"),  # DT_UINT8
    5: np.dtype("int16"),  # DT_INT16
    6: np.dtype("int8"),  # DT_INT8
    8: np.dtype("complex64"),  # DT_COMPLEX64
    9: np.dtype("int64"),  # DT_INT64
    10: np.dtype("bool"),  # DT_BOOL
    14: _BF16,  # DT_BFLOAT16
    17: np.dtype("uint16"),  # DT_UINT16
    18: np.dtype("complex128"),  # DT_COMPLEX128
    19: np.dtype("float16"),  # DT_HALF
    22: np.dtype("uint32"),  # DT_UINT32
    23: np.dtype("uint64"),  # DT_UINT64
    24: _F8E5M2,  # DT_FLOAT8_E5M2
    25: _F8E4M3,  # DT_FLOAT8_E4M3FN
})
TF_STRING = 7  # DT_STRING
TF_DTYPE_NAMES: dict[int, str] = {
    7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16",
    20: "resource", 21: "variant", 29: "int4", 30: "uint4",
}


def tf_dtype_name(code: int | None) -> str:
    """A TensorFlow DataType enum's name: numpy's for the array types (``float16``), TF's for the others."""
    found = TF_DTYPES.get(code) if code is not None else None
    return dtype_name(found) if found is not None else TF_DTYPE_NAMES.get(code or 0, f"dtype {code}")


def dtype_name(dtype: np.dtype) -> str:
    """The name numpy (with ml_dtypes) gives a dtype: ``float32``, ``bfloat16``, ``bool``."""
    return np.dtype(dtype).name


def resolve_dtype(name: str) -> np.dtype:
    """Parse a user-given dtype name (``float16``, ``bfloat16``, ``float8_e4m3fn`` ...)."""
    import ml_dtypes

    try:
        return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)
    except TypeError as exc:
        raise FormatError(f"unknown dtype {name!r}") from exc

# onnx/onnx.proto `TensorProto.DataType` (STRING = 8 is listed under metadata, not as a tensor).
ONNX_DTYPES = DtypeTable({
    1: np.dtype("float32"),  # FLOAT
    2: np.dtype("uint8"),  # UINT8
    3: np.dtype("int8"),  # INT8
    4: np.dtype("uint16"),  # UINT16
    5: np.dtype("int16"),  # INT16
    6: np.dtype("int32"),  # INT32
    7: np.dtype("int64"),  # INT64
    9: np.dtype("bool"),  # BOOL
    10: np.dtype("float16"),  # FLOAT16
    11: np.dtype("float64"),  # DOUBLE
    12: np.dtype("uint32"),  # UINT32
    13: np.dtype("uint64"),  # UINT64
    14: np.dtype("complex64"),  # COMPLEX64
    15: np.dtype("complex128"),  # COMPLEX128
    16: _BF16,  # BFLOAT16
    17: _F8E4M3,  # FLOAT8E4M3FN
    18: _F8E4M3FNUZ,  # FLOAT8E4M3FNUZ
    19: _F8E5M2,  # FLOAT8E5M2
    20: _F8E5M2FNUZ,  # FLOAT8E5M2FNUZ
    21: ML("uint4"),  # UINT4 (two per byte)
    22: ML("int4"),  # INT4 (two per byte)
    23: ML("float4_e2m1fn"),  # FLOAT4E2M1 (two per byte)
    24: ML("float8_e8m0fnu"),  # FLOAT8E8M0
    25: ML("uint2"),  # UINT2 (four per byte)
    26: ML("int2"),  # INT2 (four per byte)
})
ONNX_STRING = 8
ML_NAMES = frozenset(v for t in (TORCH_DTYPES, TF_DTYPES, ONNX_DTYPES) for v in t._deferred.values())
ONNX_PACKED_BITS: dict[int, int] = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2}  # sub-byte types: bits per element
ONNX_DTYPE_NAMES: dict[int, str] = {0: "undefined", 8: "string", 27: "float6e2m3", 28: "float6e3m2"}
