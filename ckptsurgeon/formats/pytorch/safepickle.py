"""An allowlist unpickler for PyTorch checkpoints: no pickle code ever runs.

Two gates. First every opcode is checked against an allowlist (``pickletools.genops`` parses, it does
not execute). Then the C unpickler runs with ``find_class`` answering only exact ``(module, name)``
pairs, each mapped to an inert stand-in defined here; nothing named by the file is ever imported.
Tensors become ``LazyTensor`` records (storage key, offset, size, stride); storage bytes are not read.
"""
from __future__ import annotations

import bisect
import io
import pickle
import pickletools
import re
import weakref
from collections import OrderedDict
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...dtypes import ML_NAMES, TORCH_DTYPES, TORCH_STORAGE_DTYPES, DtypeTable, ml_dtype
from ...dtype_lite import LiteDtype, as_numpy, from_typestr, python_values
from ...errors import FormatError, UnsafeCheckpointError
from ..tree import work_budget
from .pickle_memo import BytesMemo
from .pickle_static import analyze

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["LazyTensor", "StorageRef", "InertObject", "safe_load", "scan_opcodes", "global_allowed", "numpy_dtype_of", "ALLOWED_OPCODES",
           "torch_dtype_of"]

_ALLOWED_OPCODES = frozenset(
    """PROTO FRAME STOP MARK POP POP_MARK DUP INT BININT BININT1 BININT2 LONG LONG1 LONG4
    STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 UNICODE SHORT_BINUNICODE
    BINUNICODE BINUNICODE8 NONE NEWTRUE NEWFALSE FLOAT BINFLOAT EMPTY_LIST APPEND APPENDS LIST
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS
    FROZENSET GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE GLOBAL STACK_GLOBAL REDUCE
    BUILD NEWOBJ PERSID BINPERSID""".split()
)


@dataclass(slots=True, unsafe_hash=True)  # immutable by use; not frozen: one is made per storage while unpickling,
class StorageRef:  # and a frozen dataclass's __init__ is 7x slower
    """A storage named by a persistent id: ``('storage', type, key, location, numel[, view])``."""

    key: str
    dtype: LiteDtype
    numel: int
    location: str
    view: tuple[str, int, int] | None = None


@dataclass(slots=True)
class LazyTensor:
    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    parameter: bool = False
    dtype: LiteDtype | None = None  # set by _rebuild_tensor_v3 (untyped storage); else the storage's


class InertObject:
    """A user-admitted global (``--allow-global``): recorded by name, never imported or called.

    Each admitted name gets its own subclass, so NEWOBJ (which needs a type) works too.
    """

    name = "?"

    def __new__(cls, *args: Any, **_kw: Any) -> InertObject:
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, []
        return self

    def __init__(self, *args: Any, **kw: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + ([repr(self.state)] if self.state is not None else [])
        return f"{self.name}({', '.join(parts)})"


class _TableDtype:
    """A torch global standing for a dtype: its name, and the dtype it names in ``table`` (a ``LiteDtype``: the
    numpy dtype is made when a tensor is read)."""

    def __init__(self, name: str, table: DtypeTable) -> None:
        row = table.lite(name)
        assert row is not None
        self.name, self.dtype = name, row


class _StorageType(_TableDtype):
    """``torch.FloatStorage`` ...: a typed storage class."""


class _TypeMarker:
    """Stands for a class used only as a tag (``torch.Tensor``, ``Parameter``)."""

    def __init__(self, name: str) -> None:
        self.name = name


_INT = frozenset((int,))


_SHAPES: dict[tuple[int, ...], tuple[int, ...]] = {}  # one tuple per distinct shape or stride, for one load


def _as_ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not _INT.issuperset(map(type, value)):  # exactly int: no bool
        raise FormatError(f"malformed tensor record: {what} is {value!r}")
    value = tuple(value)
    return _SHAPES.setdefault(value, value)  # checkpoints repeat a few shapes: 100,000 tensors share them


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> LazyTensor:
    if not isinstance(storage, StorageRef):
        raise FormatError("malformed tensor record: storage is not a persistent storage id")
    if not isinstance(offset, int) or offset < 0:
        raise FormatError(f"malformed tensor record: storage offset {offset!r}")
    shape, strides = _as_ints(size, "size"), _as_ints(stride, "stride")
    if len(shape) != len(strides) or (shape and (min(shape) < 0 or min(strides) < 0)):
        raise FormatError(f"malformed tensor record: size {shape} / stride {strides}")
    return LazyTensor(storage, offset, shape, strides)


class _TorchDtype(_TableDtype):
    """``torch.float32`` ...: a dtype global."""

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def torch_dtype_of(value: Any) -> LiteDtype | None:
    """The dtype of an unpickled ``torch.<dtype>`` global, else None."""
    return value.dtype if isinstance(value, _TorchDtype) else None


def numpy_dtype_of(value: Any) -> np.dtype | LiteDtype | None:
    """The dtype of an unpickled ``numpy.dtype(...)``, else None (a torch dtype or storage class is no numpy dtype)."""
    return value.dtype if isinstance(value, _NumpyDtype) else None


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, _grad: Any, _hooks: Any,
                       dtype: Any, *_rest: Any) -> LazyTensor:
    if not isinstance(dtype, _TorchDtype):
        raise FormatError(f"malformed tensor record: dtype {dtype!r}")
    tensor = _rebuild_tensor(storage, offset, size, stride)
    tensor.dtype = dtype.dtype
    return tensor


def _rebuild_parameter(data: Any, *_rest: Any) -> LazyTensor:
    if not isinstance(data, LazyTensor):
        raise FormatError("malformed parameter record: data is not a tensor")
    data.parameter = True
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter) or not isinstance(args, tuple):
        raise UnsafeCheckpointError(f"refusing _rebuild_from_type_v2 with {getattr(func, '__name__', func)!r}")
    return func(*args)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafeCheckpointError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode(encoding)


class _NumpyDtype:
    """``numpy.dtype(spec, align, copy)`` + BUILD state (its byte order). numpy pickles a plain type as ``f4``,
    ``b1`` ...: a ``LiteDtype`` (numpy not imported); any other spec is numpy's to parse."""

    def __init__(self, spec: Any, *_args: Any) -> None:
        self.dtype: np.dtype | LiteDtype | None = None
        if isinstance(spec, str):
            try:
                self.dtype = from_typestr(spec) or np.dtype(spec)
            except TypeError:  # numpy knows ml_dtypes names only once ml_dtypes is imported
                self.dtype = ml_dtype(spec) if spec in ML_NAMES else None
        if self.dtype is None or self.dtype.hasobject:
            raise UnsafeCheckpointError(f"refusing numpy dtype {spec!r}")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "=") and self.dtype is not None:
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, _NumpyDtype) or dtype.dtype is None or not isinstance(data, bytes) \
            or len(data) != dtype.dtype.itemsize:
        raise UnsafeCheckpointError("refusing numpy scalar without plain bytes")
    if type(dtype.dtype) is LiteDtype:  # ``.item()``'s bool, int or float, read with struct (numpy not imported)
        values = python_values(dtype.dtype, data, 1)
        if values is not None:
            return values[0]
    return np.frombuffer(data, as_numpy(dtype.dtype))[0].item()


class _NumpyArray:
    """``numpy.core.multiarray._reconstruct`` + BUILD state, for plain (non-object) arrays."""

    def __init__(self, *_args: Any) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _NumpyDtype)):
            raise UnsafeCheckpointError("refusing numpy array state")
        _ver, shape, dt, fortran, raw = state
        if not isinstance(raw, bytes) or len(raw) != int(np.prod(shape)) * dt.dtype.itemsize:
            raise UnsafeCheckpointError("refusing numpy array whose data is not plain bytes of its size")
        self.value = np.frombuffer(raw, as_numpy(dt.dtype)).reshape(shape, order="F" if fortran else "C").copy()


def _torch_device(*args: Any) -> str:
    return "device(" + ", ".join(map(repr, args)) + ")"


def _torch_size(values: Any = ()) -> tuple[int, ...]:
    return _as_ints(tuple(values), "torch.Size")


_UNTYPED = DtypeTable({"UntypedStorage": "uint8"})
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("torch", "UntypedStorage"): _StorageType("UntypedStorage", _UNTYPED),
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", _UNTYPED),
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _NumpyArray,
    ("numpy._core.multiarray", "_reconstruct"): _NumpyArray,
    ("numpy", "ndarray"): _TypeMarker("numpy.ndarray"),
}
for _name in TORCH_STORAGE_DTYPES.names():
    _SAFE_GLOBALS[("torch", _name)] = _StorageType(_name, TORCH_STORAGE_DTYPES)
for _name in TORCH_DTYPES.names():
    _SAFE_GLOBALS[("torch", _name)] = _TorchDtype(_name, TORCH_DTYPES)

# Never admitted by --allow-global, whatever the user says: they run code or reach the system.
_NEVER_MODULES = re.compile(
    r"^(os|posix|nt|sys|subprocess|builtins|__builtin__|importlib|runpy|pty|ctypes|pickle|_pickle|"
    r"marshal|shutil|socket|operator|functools|code|codeop|types|webbrowser|pdb|bdb|timeit|"
    r"asyncio|multiprocessing|threading|signal|io|_io|tempfile|glob|inspect|commands|platform|"
    r"torch|numpy|_codecs|codecs|copyreg|pip|setuptools)(\.|$)"
)
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


def check_allow_global(spec: str) -> tuple[str, str]:
    """Validate a ``--allow-global module.Name``: plain data classes only, never callables."""
    module, _, name = spec.rpartition(".")
    if not module or not _CLASS_NAME.match(name) or _NEVER_MODULES.match(module):
        raise UnsafeCheckpointError(
            f"--allow-global {spec!r} refused: only data classes (module.ClassName) outside "
            "system and code-running modules can be admitted"
        )
    return module, name


ALLOWED_OPCODES = _ALLOWED_OPCODES


def global_allowed(module: str, name: str, allow_globals: Iterable[str] = ()) -> bool:
    """Whether the unpickler would admit ``module.name`` (as ``find_class`` decides, without importing)."""
    module = "builtins" if module == "__builtin__" else module
    return (module, name) in _SAFE_GLOBALS or any(check_allow_global(s) == (module, name) for s in allow_globals)


# How to step over each opcode's argument (pickletools' ArgumentDescriptor.n): >= 0 a fixed size,
# -1 up to a newline, -2/-3/-4/-5 a 1-byte / signed 4-byte / 4-byte / 8-byte length then that many
# bytes; _TWO_LINES: GLOBAL and INST; _REFUSED: opcodes outside the allowlist; absent: unknown.
_TWO_LINES, _REFUSED = -10, -11
_ARG: dict[int, int] = {}
for _op in pickletools.opcodes:
    _code = _op.code.encode("latin-1")[0]
    if _op.name not in _ALLOWED_OPCODES:
        _ARG[_code] = _REFUSED
    elif _op.name in ("GLOBAL", "INST"):
        _ARG[_code] = _TWO_LINES
    else:
        _ARG[_code] = 0 if _op.arg is None else _op.arg.n
_NAMES = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}
_CODE = {name: code for code, name in _NAMES.items()}
_STOP = ord(".")
_LENGTH = {-2: (1, False), -3: (4, True), -4: (4, False), -5: (8, False)}
# Opcodes the fast path leaves to the loop below: memo reads (a memoized tuple read back is how a pickle
# builds a tuple that expands exponentially), stack tricks, implicit memo indices, and LONG_BINPUT,
# which runs fast only with an index under 2**20 (the C unpickler sizes its memo table by the index).
_GETS = {_CODE["BINGET"], _CODE["LONG_BINGET"], _CODE["GET"]}
_TRICKS = {_CODE["POP"], _CODE["POP_MARK"], _CODE["DUP"], _CODE["MEMOIZE"]}
_LONG_PUT, _PUT = _CODE["LONG_BINPUT"], _CODE["PUT"]
_BINGET, _BINUNICODE = _CODE["BINGET"], _CODE["BINUNICODE"]
_TUPLE_OPS = {_CODE[n] for n in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE")}


def _fixed_run(known_gets: frozenset[int] = frozenset()) -> re.Pattern[bytes]:
    """A run of allowed opcodes whose arguments have a fixed size (most of a torch pickle), in C.

    Each alternative starts with a class of opcode bytes no other alternative has, so the match
    steps through the opcodes exactly as the unpickler will; it stops before STOP, any opcode with
    a variable-length argument, and any refused or unknown byte. It stops at memo reads too, which
    the scan records, except BINGETs of ``known_gets``: indices already recorded."""
    sizes: dict[int, list[int]] = {}
    for code, rule in _ARG.items():
        if rule >= 0 and code != _STOP and code not in _GETS | _TRICKS | {_LONG_PUT}:
            sizes.setdefault(rule, []).append(code)
    alternatives = [b"[" + b"".join(re.escape(bytes([c])) for c in sorted(codes)) + b"]" + (b".{%d}" % n if n else b"")
                    for n, codes in sorted(sizes.items())]
    alternatives.append(re.escape(bytes([_LONG_PUT])) + b".{2}[\\x00-\\x0f]\\x00")
    # BINUNICODE of up to 8 bytes (storage keys): a length the pattern can spell, then that many bytes
    alternatives.append(re.escape(bytes([_BINUNICODE])) + b"(?:" + b"|".join(
        re.escape(n.to_bytes(4, "little")) + b".{%d}" % n for n in range(1, 9)) + b")")
    if known_gets:
        alternatives.append(re.escape(bytes([_BINGET])) + b"[" + b"".join(re.escape(bytes([g])) for g in sorted(known_gets)) + b"]")
    return re.compile(b"(?:" + b"|".join(alternatives) + b")*", re.DOTALL)


_RUN = _fixed_run()
_RELEARN = 512  # stops between re-deriving the run from the BINGET indices recorded so far (then twice as many)


def scan_opcodes(data: bytes, where: str) -> set[int] | None:
    """Before anything is unpickled, refuse: any opcode outside the allowlist, bytes after STOP (a hidden
    second pickle), memo indices larger than the pickle, and tuples that expand far beyond its size.
    Returns the memo indices the pickle reads back (None when its stack is juggled: POP, DUP, MEMOIZE).

    Walks the opcodes exactly as the unpickler will (arguments stepped over, never interpreted), up
    to STOP; several times faster than ``pickletools.genops``, which decodes every argument. The exact
    expansion model (``pickle_static``) runs only when a memoized tuple is read back or the stack is
    juggled (POP, DUP, MEMOIZE): the only ways to build a tuple larger than the pickle.
    """
    pos, end, arg, find, run = 0, len(data), _ARG.get, data.find, _RUN.match
    gets: set[int] = set()
    juggled = False
    stops = array("q")  # every opcode this loop looks at: known opcode starts, for _put_after_tuple
    stops_append, gets_add = stops.append, gets.add
    relearn, learned, text_puts = _RELEARN, frozenset(), False
    while pos < end:
        pos = run(data, pos).end()
        if pos >= end:
            break
        stops_append(pos)
        if len(stops) >= relearn:  # a torch pickle reads the same few globals back for every tensor: let the
            relearn *= 2  # run step over those BINGETs (already recorded) instead of stopping at each
            small = frozenset(g for g in gets if g < 256)
            if small != learned:
                run, learned = _fixed_run(small).match, small
        code = data[pos]
        # The two stops of nearly every torch pickle entry, first: a memo read and a length-prefixed string
        if code == _BINGET and pos + 2 <= end:
            gets_add(data[pos + 1])
            pos += 2
            continue
        if code == _BINUNICODE and pos + 5 <= end:
            pos += 5 + int.from_bytes(data[pos + 1:pos + 5], "little")
            if pos > end:
                break
            continue
        rule = arg(code)
        if rule is None:
            raise FormatError(f"{where}: malformed pickle: unknown opcode {bytes([code])!r} at byte {pos}")
        if rule == _REFUSED:
            raise UnsafeCheckpointError(f"{where}: pickle opcode {_NAMES[code]} at byte {pos} is not allowed; refusing")
        if code == _STOP:
            if pos + 1 < end:  # pickle.load would stop here and never look at the rest
                raise UnsafeCheckpointError(f"{where}: {end - pos - 1} bytes follow the pickle's STOP opcode "
                                            "(a hidden second pickle?); refusing")
            budget = [end // 4 + 10_000]
            if juggled or any(_put_after_tuple(data, g, stops, budget, text_puts) for g in gets):
                _check_expansion(data, where)
            return None if juggled else gets
        start, pos = pos, pos + 1
        if rule > 0:
            if code in _GETS:
                gets.add(int.from_bytes(data[pos:pos + rule], "little"))
            elif code == _LONG_PUT and int.from_bytes(data[pos:pos + 4], "little") > end:
                _memo_bomb(data, start, where, int.from_bytes(data[pos:pos + 4], "little"))
            pos += rule
        elif rule == -1 or rule == _TWO_LINES:
            for _ in range(2 if rule == _TWO_LINES else 1):
                newline = find(b"\n", pos)
                if newline < 0:
                    raise FormatError(f"{where}: malformed pickle: no newline after opcode at byte {start}")
                if code in _GETS or code == _PUT:
                    text_puts = text_puts or code == _PUT
                    index = int(data[pos:newline]) if data[pos:newline].isdigit() else -1
                    if code == _PUT and not 0 <= index <= end:
                        _memo_bomb(data, start, where, index)
                    gets.add(index) if code in _GETS else None
                pos = newline + 1
        elif rule < 0:
            size, signed = _LENGTH[rule]
            if pos + size > end:
                break
            n = int.from_bytes(data[pos:pos + size], "little", signed=signed)
            if n < 0:
                raise FormatError(f"{where}: malformed pickle: negative length at byte {start}")
            pos += size + n
        juggled = juggled or code in _TRICKS
        if pos > end:
            break
    raise FormatError(f"{where}: malformed pickle: truncated (no STOP opcode)")


def _memo_bomb(data: bytes, at: int, where: str, index: int) -> None:
    raise UnsafeCheckpointError(f"{where}: memo index {index:,} at byte {at} is larger than the pickle ({len(data):,} "
                                "bytes); the unpickler would allocate a table that large; refusing")


def _put_after_tuple(data: bytes, index: int, stops: Sequence[int], budget: list[int], text_puts: bool = True) -> bool:
    """Whether the PUT of ``index`` stores a tuple: it directly follows a tuple opcode (over MARK, FRAME and
    other PUTs). Byte patterns find the candidates; each is then stepped to from the nearest known opcode
    start, so argument bytes that look like ``) q\x02`` (a LONG_BINPUT index, every 256th tensor of a torch
    pickle) are not taken for opcodes. Once ``budget`` steps are spent, a candidate counts as a match:
    the exact check then decides."""
    encodings = [bytes([_LONG_PUT]) + index.to_bytes(4, "little") if 0 <= index < 1 << 32 else b"",
                 b"p%d\n" % index if text_puts else b""]  # PUT always stops the scan: it saw whether there is one
    if 0 <= index < 256:
        encodings.append(bytes([_CODE["BINPUT"], index]))
    for enc in filter(None, encodings):
        at = data.find(enc)
        while at >= 0:
            if _follows_tuple(data, at, 0) and _stored_after_tuple(data, at, stops, budget):
                return True
            at = data.find(enc, at + 1)
    return False


def _follows_tuple(data: bytes, at: int, depth: int) -> bool:
    if at < 1 or depth > 16:
        return False
    if data[at - 1] in _TUPLE_OPS:
        return True
    steps = [1] if data[at - 1] == _CODE["MARK"] else []
    steps += [n for n, code in ((2, "BINPUT"), (5, "LONG_BINPUT"), (9, "FRAME")) if at >= n and data[at - n] == _CODE[code]]
    return any(_follows_tuple(data, at - n, depth + 1) for n in steps)


_PASSED_OVER = {_CODE["MARK"], _CODE["FRAME"], _CODE["BINPUT"], _LONG_PUT, _PUT}


def _stored_after_tuple(data: bytes, at: int, stops: Sequence[int], budget: list[int]) -> bool:
    """Whether ``at`` starts a real opcode whose nearest earlier opcode, MARK/FRAME/PUTs passed over, is a tuple."""
    i = bisect.bisect_left(stops, at) - 1  # the last known opcode start before ``at``
    pos, starts = (stops[i] if i >= 0 else 0), []
    while pos < at:
        budget[0] -= 1
        if budget[0] < 0:
            return True
        starts.append(pos)
        pos = _next_opcode(data, pos)
        if pos < 0:
            return True
    if pos != at:
        return False  # inside an argument
    for start in reversed(starts):
        if data[start] in _TUPLE_OPS:
            return True
        if data[start] not in _PASSED_OVER:
            return False
    return True  # only PUTs since the known start: cannot tell here, the exact check will


def _next_opcode(data: bytes, pos: int) -> int:
    """Where the opcode after the one at ``pos`` starts (its argument stepped over), or -1."""
    rule = _ARG.get(data[pos])
    pos += 1
    if rule is None or rule == _REFUSED:
        return -1
    if rule >= 0:
        return pos + rule
    if rule == -1 or rule == _TWO_LINES:
        for _ in range(2 if rule == _TWO_LINES else 1):
            newline = data.find(b"\n", pos)
            if newline < 0:
                return -1
            pos = newline + 1
        return pos
    size, signed = _LENGTH[rule]
    return pos + size + int.from_bytes(data[pos:pos + size], "little", signed=signed)


def _check_expansion(data: bytes, where: str) -> None:
    facts = analyze(data, work_budget(len(data)))
    if facts.malformed:
        raise FormatError(f"{where}: malformed pickle: {facts.malformed}")
    if facts.problems:
        raise UnsafeCheckpointError(f"{where}: {facts.problems[0]}; refusing")




PRUNE_EVERY = 4096  # persistent ids (storages) between two prunings of the memo


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str, persistent: Callable[[Any], Any], allowed: dict[tuple[str, str], Any],
                 reads: set[int] | None = None):
        # called directly by the C unpickler: no method hop per tensor
        prune = reads is not None and max(reads, default=0) < 1 << 31
        self.persistent_load = self._pruning(persistent, reads) if prune and reads is not None else persistent
        super().__init__(io.BytesIO(data))
        self._where, self._allowed = where, allowed

    def _pruning(self, persistent: Callable[[Any], Any], reads: set[int]) -> Callable[[Any], Any]:
        """``persistent``, dropping from the memo, every ``PRUNE_EVERY`` storages, the entries the pickle never
        reads back. torch.save memoizes every object (each tensor's key, storage id, shape, stride, argument
        tuple and hooks dict): kept to the end of the load, they are half the peak memory of listing 100,000
        tensors. ``reads`` (the scan's memo reads, of a pickle that never MEMOIZEs) says which entries stay."""
        left = PRUNE_EVERY
        me = weakref.ref(self)  # not self: a cycle would keep the unpickler and its memo table past the load

        def load(pid: Any) -> Any:
            nonlocal left
            left -= 1
            if left:
                return persistent(pid)
            left = PRUNE_EVERY
            unpickler = me()
            if unpickler is not None:
                memo = unpickler.memo.copy()  # only what is stored: a copy of the table itself would be 12 MB
                kept = {i: memo[i] for i in reads.intersection(memo)}
                del memo
                unpickler.memo = _memo_of(kept)
            return persistent(pid)

        return load

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 spells builtins the Python 2 way (pickle maps it too)
            module = "builtins"
        target = self._allowed.get((module, name))
        if target is None:
            raise UnsafeCheckpointError(
                f"{self._where}: refusing global {module}.{name}; ckptsurgeon never runs code from a checkpoint"
                + ("" if _NEVER_MODULES.match(module) or not _CLASS_NAME.match(name)
                   else f" (if it is a plain data class you trust: --allow-global {module}.{name})")
            )
        if isinstance(target, tuple) and target[0] == "inert":
            return type(name, (InertObject,), {"name": target[1]})
        return target


def _memo_of(entries: dict[int, Any]) -> Any:
    """An unpickler memo holding exactly ``entries`` (index -> object), to assign to another unpickler's ``memo``.

    The C unpickler's ``memo`` setter loses the values of a plain dict (CPython 3.11 stores them in the table
    it then frees), but copies another unpickler's memo faithfully: this one gets them by loading a pickle
    that puts each object (handed over as a persistent id) at its index."""
    stream = bytearray(b"\x80\x02")
    for i in entries:  # BININT i, BINPERSID, LONG_BINPUT i, POP
        stream += b"J" + i.to_bytes(4, "little", signed=True) + b"Q" + b"r" + i.to_bytes(4, "little") + b"0"
    helper = pickle.Unpickler(io.BytesIO(bytes(stream + b"N.")))
    helper.persistent_load = entries.__getitem__
    helper.load()
    return helper.memo


def storage_from_pid(pid: Any) -> StorageRef:
    """Decode a torch storage persistent id (zip and legacy forms)."""
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
        raise FormatError(f"unsupported persistent id {str(pid)[:80]}")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, _StorageType):
        raise FormatError(f"persistent id names an unknown storage type {stype!r}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise FormatError(f"malformed persistent id {str(pid)[:80]}")
    view = None
    if len(pid) > 5 and pid[5] is not None:
        v = pid[5]
        if not (isinstance(v, tuple) and len(v) == 3 and isinstance(v[0], str)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v[1:])):
            raise FormatError(f"malformed storage view {str(v)[:80]} (offset and size must be counts >= 0)")
        view = (v[0], v[1], v[2])
    return StorageRef(key, stype.dtype, numel, location if type(location) is str else str(location), view)


_SCANNED: BytesMemo[set[int] | None] = BytesMemo()  # a pickle's memo reads, once it passed ``scan_opcodes``


def safe_load(
    data: bytes, where: str, persistent: Callable[[Any], Any] = storage_from_pid, allow_globals: Iterable[str] = (),
    extra_globals: Mapping[tuple[str, str], Any] | None = None,
) -> Any:
    """Unpickle ``data`` through both gates; returns plain containers, LazyTensors, numbers, strings.

    ``extra_globals`` adds inert stand-ins a format needs (the DCP metadata classes), by exact name.
    """
    reads = _SCANNED.get(data, None, lambda: scan_opcodes(data, where))  # its refusals name ``where``: not kept
    allowed = dict(_SAFE_GLOBALS)
    allowed.update(extra_globals or {})
    for spec in allow_globals:
        module, name = check_allow_global(spec)
        allowed[(module, name)] = ("inert", f"{module}.{name}")
    try:
        obj = _Unpickler(data, where, persistent, allowed, reads).load()
    except (UnsafeCheckpointError, FormatError):
        raise
    except RecursionError as exc:
        raise UnsafeCheckpointError(f"{where}: pickle nests too deeply; refusing") from exc
    except Exception as exc:
        raise FormatError(f"{where}: malformed pickle: {type(exc).__name__}: {exc}") from exc
    finally:
        _SHAPES.clear()
    return _unwrap(obj)


_LEAVES = frozenset((LazyTensor, str, int, float, bool, type(None), bytes))


def _unwrap(obj: Any, depth: int = 0, seen: dict[int, Any] | None = None) -> Any:
    """Replace numpy stand-ins by arrays; each shared object is visited once (pickles are DAGs)."""
    if type(obj) in _LEAVES:  # nothing to replace inside, nothing shared to remember
        return obj
    seen = {} if seen is None else seen
    if id(obj) in seen:
        return seen[id(obj)]
    if depth > 200:
        raise UnsafeCheckpointError("pickle nests containers too deeply; refusing")
    out = obj
    if isinstance(obj, _NumpyArray):
        out = obj.value
    elif isinstance(obj, dict):
        seen[id(obj)] = obj
        for k in list(obj):
            obj[k] = _unwrap(obj[k], depth + 1, seen)
    elif isinstance(obj, list):
        seen[id(obj)] = obj
        obj[:] = [_unwrap(v, depth + 1, seen) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_unwrap(v, depth + 1, seen) for v in obj)
    seen[id(obj)] = out
    return out
