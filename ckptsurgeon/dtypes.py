"""Dtype tables: every format's dtype names mapped to numpy dtypes (ml_dtypes for bf16/fp8).

Data only; each row says which framework spells it that way, by numpy's name (``"float32"``, ``"bfloat16"``).
A table's numpy dtypes are made on first lookup (``table[k]``); ``table.lite(k)`` gives the row as a
``LiteDtype``, which a reader checks a file with and ``TensorRef`` resolves when a tensor is read: listing
or scanning a checkpoint imports neither numpy (50-90 ms) nor ml_dtypes (5 ms).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Hashable, Iterator

from .dtype_lite import ML_NAMES, NAMES, LiteDtype, from_typestr
from .errors import FormatError

if TYPE_CHECKING:
    import numpy as np
else:
    from .lazy import numpy as np

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
    "DtypeTable",
    "CodeTable",
]


def ml_dtype(name: str) -> np.dtype:
    """``np.dtype(ml_dtypes.<name>)``, importing ml_dtypes now."""
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


def _row(value: str) -> LiteDtype:
    row = LiteDtype(value) if value in NAMES else from_typestr(value)
    if row is None:
        raise ValueError(f"dtype table row {value!r}")
    return row


class DtypeTable(dict):
    """A format's dtype names -> numpy dtypes, each made on first lookup.

    Lookups (``table[k]``, ``table.get(k)``, ``k in table``) see every row; ``names()`` lists them all and
    ``lite(k)`` gives a row as a ``LiteDtype``, neither importing numpy.
    """

    def __init__(self, rows: dict[Hashable, str]) -> None:
        super().__init__()
        self._lite = {k: _row(v) for k, v in rows.items()}

    def __missing__(self, key: Hashable) -> np.dtype:
        row = self._lite.get(key)
        if row is None:
            raise KeyError(key)
        dtype = self[key] = row.resolve()
        return dtype

    def get(self, key: Hashable, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key from a hostile file
            return default

    def row(self, key: Hashable) -> LiteDtype:
        """The row of ``key`` as a ``LiteDtype`` (``KeyError`` for none)."""
        return self._lite[key]

    def lite(self, key: Any) -> LiteDtype | None:
        """The row of ``key`` (None for none, or an unhashable key from a hostile file), numpy not imported."""
        try:
            return self._lite.get(key)
        except TypeError:
            return None

    def __contains__(self, key: object) -> bool:
        return key in self._lite

    def names(self) -> Iterator[Hashable]:
        """Every row's key."""
        yield from self._lite


class CodeTable(dict):
    """The reverse of a ``DtypeTable`` (numpy dtype -> the format's name), made when first looked up. An
    ml_dtypes dtype can only exist once ml_dtypes is imported, so its rows are added only then."""

    def __init__(self, table: DtypeTable) -> None:
        super().__init__()
        self._table = table
        self._filled: set[bool] = set()  # which rows were added: True for ml_dtypes', False for the others

    def __missing__(self, dtype: np.dtype) -> Any:
        for ml in (False, True):
            if ml not in self._filled and (not ml or "ml_dtypes" in sys.modules):
                self._filled.add(ml)
                for key in list(self._table.names()):
                    row = self._table.lite(key)
                    if row is not None and (row.name in ML_NAMES) == ml:
                        dict.__setitem__(self, self._table[key], key)
            if dict.__contains__(self, dtype):
                return dict.__getitem__(self, dtype)
        raise KeyError(dtype)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, TypeError):
            return default


_BF16 = "bfloat16"
_F8E4M3 = "float8_e4m3fn"
_F8E5M2 = "float8_e5m2"
_F8E4M3FNUZ = "float8_e4m3fnuz"
_F8E5M2FNUZ = "float8_e5m2fnuz"

# torch.save pickles storage classes by name (torch/storage.py `_dtype_to_storage_type_map`).
TORCH_STORAGE_DTYPES = DtypeTable({
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": _BF16,
    "Float8_e4m3fnStorage": _F8E4M3,
    "Float8_e5m2Storage": _F8E5M2,
    "Float8_e4m3fnuzStorage": _F8E4M3FNUZ,
    "Float8_e5m2fnuzStorage": _F8E5M2FNUZ,
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "UInt16Storage": "uint16",
    "UInt32Storage": "uint32",
    "UInt64Storage": "uint64",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
})

# torch.<dtype> globals, as pickled by ``_rebuild_tensor_v3`` (torch/storage.py `_new_dtypes`).
TORCH_DTYPES = DtypeTable({
    "float64": "float64", "double": "float64",
    "float32": "float32", "float": "float32",
    "float16": "float16", "half": "float16",
    "bfloat16": _BF16,
    "float8_e4m3fn": _F8E4M3, "float8_e5m2": _F8E5M2,
    "float8_e4m3fnuz": _F8E4M3FNUZ, "float8_e5m2fnuz": _F8E5M2FNUZ,
    "int64": "int64", "long": "int64",
    "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16",
    "int8": "int8",
    "uint8": "uint8", "uint16": "uint16",
    "uint32": "uint32", "uint64": "uint64",
    "bool": "bool",
    "complex64": "complex64", "cfloat": "complex64",
    "complex128": "complex128", "cdouble": "complex128",
})

# safetensors header dtype codes (safetensors/src/tensor.rs `Dtype`).
SAFETENSORS_DTYPES = DtypeTable({
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": _BF16,
    "F8_E4M3": _F8E4M3,
    "F8_E5M2": _F8E5M2,
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
})
SAFETENSORS_CODES = CodeTable(SAFETENSORS_DTYPES)

# tensorflow/core/framework/types.proto `DataType` (reference dtypes only; string handled apart).
TF_DTYPES = DtypeTable({
    1: "float32",  # DT_FLOAT
    2: "float64",  # DT_DOUBLE
    3: "int32",  # DT_INT32
    4: "uint8",  # DT_UINT8
    5: "int16",  # DT_INT16
    6: "int8",  # DT_INT8
    8: "complex64",  # DT_COMPLEX64
    9: "int64",  # DT_INT64
    10: "bool",  # DT_BOOL
    14: _BF16,  # DT_BFLOAT16
    17: "uint16",  # DT_UINT16
    18: "complex128",  # DT_COMPLEX128
    19: "float16",  # DT_HALF
    22: "uint32",  # DT_UINT32
    23: "uint64",  # DT_UINT64
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
    found = TF_DTYPES.lite(code) if code is not None else None
    return found.name if found is not None else TF_DTYPE_NAMES.get(code or 0, f"dtype {code}")


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
    1: "float32",  # FLOAT
    2: "uint8",  # UINT8
    3: "int8",  # INT8
    4: "uint16",  # UINT16
    5: "int16",  # INT16
    6: "int32",  # INT32
    7: "int64",  # INT64
    9: "bool",  # BOOL
    10: "float16",  # FLOAT16
    11: "float64",  # DOUBLE
    12: "uint32",  # UINT32
    13: "uint64",  # UINT64
    14: "complex64",  # COMPLEX64
    15: "complex128",  # COMPLEX128
    16: _BF16,  # BFLOAT16
    17: _F8E4M3,  # FLOAT8E4M3FN
    18: _F8E4M3FNUZ,  # FLOAT8E4M3FNUZ
    19: _F8E5M2,  # FLOAT8E5M2
    20: _F8E5M2FNUZ,  # FLOAT8E5M2FNUZ
    21: "uint4",  # UINT4 (two per byte)
    22: "int4",  # INT4 (two per byte)
    23: "float4_e2m1fn",  # FLOAT4E2M1 (two per byte)
    24: "float8_e8m0fnu",  # FLOAT8E8M0
    25: "uint2",  # UINT2 (four per byte)
    26: "int2",  # INT2 (four per byte)
})
ONNX_STRING = 8
ONNX_PACKED_BITS: dict[int, int] = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2}  # sub-byte types: bits per element
ONNX_DTYPE_NAMES: dict[int, str] = {0: "undefined", 8: "string", 27: "float6e2m3", 28: "float6e3m2"}
