"""Dtypes known without numpy: the numeric types and ml_dtypes' small floats, as readers meet them.

A ``LiteDtype`` answers what a reader asks of a dtype while it checks a file (``itemsize``, ``kind``, ``name``,
``str``, ``str()``, ``newbyteorder``) exactly as the numpy dtype would, and ``resolve()`` makes that numpy dtype
(importing numpy then) by the same steps the reader would have taken: the base dtype, then the byte order asked
for. ``TensorRef.dtype`` resolves it on first use, so a listing or a scan that never reads a tensor's values
never imports numpy. Fixed-width strings (``<U35``, ``|S5``: an ``.npz``'s metadata member) are known too, by
numpy's names for them (``str1120``, ``bytes40``). Anything else (structured types, long doubles, datetimes) is left
to numpy: ``from_typestr`` returns None for it.
"""
from __future__ import annotations

import re
import struct
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LiteDtype", "from_typestr", "as_numpy", "python_values", "NAMES", "ML_NAMES"]

NATIVE = "<" if sys.byteorder == "little" else ">"

# name -> (kind, itemsize, whether numpy marks its byte order "not applicable" ('|')), as numpy 2 and ml_dtypes
# report them (ml_dtypes' one-byte floats keep a byte order; float8_e5m2 is kind "f", its kin "V")
NAMES: dict[str, tuple[str, int, bool]] = {
    "bool": ("b", 1, True), "int8": ("i", 1, True), "uint8": ("u", 1, True),
    "int16": ("i", 2, False), "int32": ("i", 4, False), "int64": ("i", 8, False),
    "uint16": ("u", 2, False), "uint32": ("u", 4, False), "uint64": ("u", 8, False),
    "float16": ("f", 2, False), "float32": ("f", 4, False), "float64": ("f", 8, False),
    "complex64": ("c", 8, False), "complex128": ("c", 16, False),
    "bfloat16": ("V", 2, False), "float8_e4m3fn": ("V", 1, False), "float8_e5m2": ("f", 1, False),
    "float8_e4m3fnuz": ("V", 1, False), "float8_e5m2fnuz": ("V", 1, False), "float8_e8m0fnu": ("V", 1, False),
    "float4_e2m1fn": ("V", 1, False), "uint4": ("V", 1, False), "int4": ("V", 1, False),
    "uint2": ("V", 1, False), "int2": ("V", 1, False),
    "object": ("O", struct.calcsize("P"), True),  # what an object array's header states: its pickle follows
}
ML_NAMES = frozenset(n for n, (kind, _size, _na) in NAMES.items() if kind == "V" or n.startswith("float8"))
_BY_CODE = {f"{kind}{size}": name for name, (kind, size, _na) in NAMES.items() if kind in "biufc" and name not in ML_NAMES}
_TYPESTR = re.compile(r"([<>|=]?)([biufc])([0-9]{1,2})")
_TEXT_TYPESTR = re.compile(r"([<>|=]?)([US])([0-9]{1,10})")
_TEXT_NAME = re.compile(r"(str|bytes)([1-9][0-9]{0,11})")  # numpy's names of fixed-width strings: bits, not chars
_MAX_ITEMSIZE = (1 << 31) - 1  # numpy's bound on a dtype's itemsize (U536870912 and S2147483648 are not types)
_RESOLVED: dict[tuple[str, str | None], Any] = {}


_Text = str  # ``LiteDtype.str`` (numpy's name for the type string) hides the builtin in the class body


class LiteDtype:
    """One of ``NAMES``, in native order or (``order``) after ``newbyteorder(order)``; immutable."""

    __slots__ = ("name", "kind", "itemsize", "order", "_na")
    subdtype = None

    def __init__(self, name: str, order: str | None = None) -> None:
        self.kind, self.itemsize, self._na = NAMES[name] if name in NAMES else _text_spec(name)
        self.name, self.order = name, None if self._na or order in (None, "=") else order

    @property
    def str(self) -> _Text:
        """numpy's ``dtype.str``: ``<f4``, ``|u1``, ``<V2`` (bfloat16), ``|O``, ``<U35`` (35 characters)."""
        if self.kind == "O":
            return "|O"
        count = self.itemsize // 4 if self.kind == "U" else self.itemsize
        return f"{'|' if self._na else self.order or NATIVE}{self.kind}{count}"

    @property
    def hasobject(self) -> bool:
        return self.kind == "O"

    def newbyteorder(self, order: _Text) -> LiteDtype:
        if order not in ("<", ">", "=", "|"):
            raise ValueError(f"byte order {order!r}")
        return self if self._na or order == "|" else LiteDtype(self.name, order)  # "|": numpy keeps the order

    def _effective(self) -> _Text:
        return "|" if self._na else self.order or NATIVE

    def resolve(self) -> np.dtype:
        """The numpy dtype (ml_dtypes' for its names), made by the reader's steps: the base, then ``newbyteorder``."""
        key = (self.name, self.order)
        dtype = _RESOLVED.get(key)
        if dtype is None:
            import numpy as np

            from .dtypes import ml_dtype

            if self.kind in "US":
                dtype = np.dtype(self.str)  # numpy parses no name of a string type
            else:
                dtype = ml_dtype(self.name) if self.name in ML_NAMES else np.dtype(self.name)
            if self.order is not None and self.kind not in "US":
                dtype = dtype.newbyteorder(self.order)  # type: ignore[arg-type]
            _RESOLVED[key] = dtype
        return dtype

    def __str__(self) -> _Text:  # numpy's: the name in native order, else the type string (always, for strings)
        return self.name if self._effective() in ("|", NATIVE) and self.kind not in "US" else self.str

    def __repr__(self) -> _Text:
        return f"dtype({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LiteDtype):
            return (self.name, self._effective()) == (other.name, other._effective())
        if other is None:
            return False
        return bool(self.resolve() == other)  # a numpy dtype, a type or a name: numpy's own comparison

    def __hash__(self) -> int:  # not a numpy dtype's hash: a set or dict key holds one kind or the other, never both
        return hash((LiteDtype, self.name, self._effective()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (LiteDtype, (self.name, self.order))


def _text_spec(name: str) -> tuple[str, int, bool]:
    """(kind, itemsize, byte order not applicable) of a fixed-width string type's name: ``str96``, ``bytes24``."""
    m = _TEXT_NAME.fullmatch(name)
    bits = int(m.group(2)) if m else 0
    unit = 32 if m and m.group(1) == "str" else 8
    if not m or bits % unit or not 0 < bits // 8 <= _MAX_ITEMSIZE:
        raise KeyError(name)
    return ("U", bits // 8, False) if unit == 32 else ("S", bits // 8, True)


def from_typestr(text: str) -> LiteDtype | None:
    """The dtype numpy makes of a plain type string (``<f4``, ``|b1``, ``i8``, ``<U35``, ``S5``), else None (left
    to numpy)."""
    m = _TYPESTR.fullmatch(text)
    if m is None:
        return _text_typestr(text)
    order, kind, size = m.groups()
    name = _BY_CODE.get(kind + size)
    if name is None:
        return None
    return LiteDtype(name, None if order in ("", "|", "=", NATIVE) else order)


def _text_typestr(text: str) -> LiteDtype | None:
    m = _TEXT_TYPESTR.fullmatch(text)
    if m is None:
        return None
    order, kind, count = m.groups()
    itemsize = int(count) * (4 if kind == "U" else 1)
    if not 0 < itemsize <= _MAX_ITEMSIZE:
        return None  # an unsized string type (U0) or one numpy refuses
    name = f"{'str' if kind == 'U' else 'bytes'}{8 * itemsize}"
    return LiteDtype(name, None if order in ("", "|", "=", NATIVE) else order)


def as_numpy(dtype: np.dtype | LiteDtype) -> np.dtype:
    """The numpy dtype of either kind (a ``LiteDtype`` resolved: numpy imported now)."""
    return dtype.resolve() if type(dtype) is LiteDtype else dtype  # type: ignore[return-value]


_STRUCT = {"bool": "?", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
           "int64": "q", "uint64": "Q", "float16": "e", "float32": "f", "float64": "d"}


def python_values(dtype: LiteDtype, data: bytes, n: int) -> list[Any] | None:
    """The first ``n`` values of ``data`` as numpy's ``.tolist()`` gives them (bool, int, float), read with
    ``struct``; None for a dtype ``struct`` has no code for (complex, ml_dtypes' floats)."""
    code = _STRUCT.get(dtype.name)
    if code is None:
        return None
    order = dtype.str[0] if dtype.str[0] in "<>" else "<"
    return list(struct.unpack_from(f"{order}{n}{code}", data))
