"""PaddlePaddle ``paddle.save`` state dicts: ``.pdparams`` (a Layer's) and ``.pdopt`` (an optimizer's).

Layout (``paddle/framework/io.py``, ``_legacy_save``): one pickle (protocol 2, 3 or 4; 4 by default) of a
dict name -> numpy array (``numpy._core.multiarray._reconstruct`` + ``BUILD (1, shape, dtype, fortran,
bytes)``), plus ``"StructuredToParameterName@@"``: a dict name -> the parameter's own name (``linear_0.w_0``),
written last. Under protocols 2 and 3 an array over 1 GiB is saved as flat slices ``NAME@@.0``, ``NAME@@.1``
... and ``"UnpackBigParamInfor@@": {NAME: {"OriginShape": shape, "slices": [...]}}``.

Any other object (``paddle.save({"model": layer.state_dict(), "epoch": 3})``) is pickled by ``_pickle_save``,
where each tensor becomes ``builtins.tuple(((name, array),))``, i.e. a ``(parameter name, array)`` pair that
``paddle.load`` turns back into a tensor; here each pair is the array (its name kept in the name table).

Read lazily and never executed: the pickle's skeleton (``skeleton.py``: every array's bytes stepped over)
goes through the allowlist unpickler with stand-ins that record where each array's bytes are. A protocol 3/4
array is one byte range of the file; a protocol 2 array is latin-1 text decoded when read.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ...dtype_lite import LiteDtype, as_numpy
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...scopes import key_path
from ...source import ByteSource, open_source, read_exact
from ..pickles import MAX_PICKLE, register_pickle_walker
from ..tree import flatten, is_optimizer_path, to_jsonable, work_budget
from .skeleton import Payload, payload_of, skeleton

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["sniff", "read", "FORMAT", "NAME_TABLE", "UNPACK_INFO", "OPTIMIZER_KEY"]

FORMAT = "paddle"
NAME_TABLE = "StructuredToParameterName@@"
UNPACK_INFO = "UnpackBigParamInfor@@"  # sic: paddle's spelling
LR_SCHEDULER = "LR_Scheduler"
# Optimizer accumulators are named PARAM_ACC_N (paddle/optimizer/*.py): one row per optimizer family.
OPTIMIZER_KEY = re.compile(
    r"_(moment1|moment2|moment2_max|beta1_pow_acc|beta2_pow_acc"  # Adam, AdamW, Lamb
    r"|velocity"  # Momentum
    r"|moment"  # Adagrad, Adamax
    r"|inf_norm"  # Adamax
    r"|mean_square|mean_grad"  # RMSProp
    r"|avg_squared_grad|avg_squared_update"  # Adadelta
    r")_\d+$")
MAX_TEXT = 1 << 20  # a long string (not an array's bytes) read into the metadata
_HEAD = 16 << 10  # bytes from the start searched for paddle's pickled tensor (a nested save)
# builtins.tuple (protocol 2 spells it __builtin__) and numpy's _reconstruct right after: _pickle_save's tensor
_TENSOR_TUPLE = re.compile(rb"(?:builtins|__builtin__).{1,4}tuple.{0,300}?_reconstruct", re.DOTALL)
_TAIL = (64 << 10, 1 << 20, 16 << 20)  # bytes from the end searched for the name table: a few, then more


def sniff(head: bytes, src: ByteSource) -> bool:
    """A pickle (protocol 2-4) of a dict: a state dict whose end holds paddle's name table key, or another
    object whose first bytes pickle a tensor as paddle does (``builtins.tuple`` of a name and an array)."""
    if len(head) < 3 or head[0] != 0x80 or head[1] not in (2, 3, 4):
        return False
    at = 11 if head[2] == 0x95 else 2  # protocol 4 starts with a FRAME
    if head[at:at + 1] != b"}":
        return False
    if _TENSOR_TUPLE.search(bytes(src.read(0, min(src.size, _HEAD)))):
        return True
    key = NAME_TABLE.encode()
    for tail in _TAIL:
        n = min(src.size, tail)
        if key in bytes(src.read(src.size - n, n)):
            return True
        if n == src.size:
            return False
    return False


class _LazyArray:
    """Stands for ``numpy._core.multiarray._reconstruct``: records an array's dtype, shape and where its
    bytes are (a skeleton marker, or the small bytes kept in the skeleton), reading nothing."""

    payloads: list[Payload] = []  # set per read, on a subclass

    def __init__(self, *_args: Any) -> None:
        self.dtype: np.dtype | LiteDtype | None = None
        self.shape: tuple[int, ...] = ()
        self.fortran = False
        self.data: bytes | Payload | None = None

    def __setstate__(self, state: Any) -> None:
        dtype = _dtype_field(state[2]) if isinstance(state, tuple) and len(state) == 5 else None
        if dtype is None:
            raise UnsafeCheckpointError("refusing a numpy array state that is not (version, shape, dtype, order, bytes)")
        _ver, shape, _dt, fortran, raw = state
        if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or type(fortran) is not bool:
            raise FormatError(f"malformed numpy array record: shape {str(shape)[:80]}")
        self.dtype, self.shape, self.fortran = dtype, shape, fortran
        self.data = raw if isinstance(raw, (bytes, Payload)) else payload_of(raw, self.payloads)
        if self.data is None:
            raise UnsafeCheckpointError("refusing a numpy array whose data is not plain bytes")


def _dtype_field(value: object) -> np.dtype | LiteDtype | None:
    """The dtype an array record's dtype field gives: an unpickled ``numpy.dtype``'s, or another array's (whose
    ``dtype`` numpy would take); None for anything else (a torch dtype or storage class)."""
    from ..pytorch.safepickle import numpy_dtype_of  # loaded with the unpickler this runs under

    return value.dtype if isinstance(value, _LazyArray) else numpy_dtype_of(value)


def _encode(payloads: list[Payload]) -> Callable[..., Any]:
    """``_codecs.encode`` (protocol 2's bytes): a marker stays a Payload; small text becomes its latin-1 bytes."""

    def encode(text: Any, encoding: Any = "utf-8") -> bytes | Payload:
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise UnsafeCheckpointError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
        payload = payload_of(text, payloads)
        if payload is not None:
            return payload
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            raise FormatError("malformed pickle: latin-1 bytes with characters over 255") from None

    return encode


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: protocol 2's empty bytes (an array with no element); any argument is refused."""
    if args:
        raise UnsafeCheckpointError("refusing builtins.bytes with arguments")
    return b""


class _Named:
    """A tensor as ``_pickle_save`` writes it: ``(parameter name, array)``."""

    __slots__ = ("name", "array")

    def __init__(self, name: str, array: _LazyArray) -> None:
        self.name, self.array = name, array


def _tensor_tuple(items: Any = ()) -> Any:
    """``builtins.tuple``: a (name, array) pair becomes a ``_Named`` tensor; any other argument a plain tuple of
    the pickle's own values (iterating a container or a string runs no code)."""
    if not isinstance(items, (tuple, list, str, bytes, dict)):
        raise UnsafeCheckpointError(f"refusing builtins.tuple of {type(items).__name__}")
    out = tuple(items)
    if len(out) == 2 and isinstance(out[0], str) and isinstance(out[1], _LazyArray):
        return _Named(out[0], out[1])
    return out


def _load(path: str, allow_globals: Sequence[str]) -> tuple[Any, list[Payload], int]:
    from ..pytorch.safepickle import safe_load

    src = open_source(path)
    skel = skeleton(src)
    if skel.end != src.size:
        raise UnsafeCheckpointError(f"{path}: {src.size - skel.end:,} bytes follow the pickle (a hidden second pickle?); "
                                    "refusing")
    stand_in = type("LazyArray", (_LazyArray,), {"payloads": skel.payloads})
    extra = {("numpy.core.multiarray", "_reconstruct"): stand_in, ("numpy._core.multiarray", "_reconstruct"): stand_in,
             ("_codecs", "encode"): _encode(skel.payloads), ("builtins", "bytes"): _empty_bytes,
             ("builtins", "tuple"): _tensor_tuple}
    obj = safe_load(skel.data, path, allow_globals=allow_globals, extra_globals=extra)
    return obj, skel.payloads, len(skel.data)


def _ref(path: str, p: str, key: str, arr: _LazyArray, optimizer: bool) -> TensorRef:
    if arr.dtype is None or not isinstance(arr.shape, tuple):
        raise FormatError(f"{path}: tensor {key!r}: its pickled array never received its dtype and shape "
                          "(no __setstate__); refusing")
    dtype, shape = arr.dtype, arr.shape
    check_shape(path, key, dtype, shape)
    nbytes = math.prod(shape) * dtype.itemsize
    order: Literal["C", "F"] = "F" if arr.fortran else "C"
    data = arr.data
    if isinstance(data, bytes):
        if len(data) != nbytes:
            raise FormatError(f"{path}: tensor {key!r}: {dtype} x {list(shape)} needs {nbytes:,} bytes, the pickle holds {len(data):,}")
        def inline() -> np.ndarray:
            return np.frombuffer(data, as_numpy(dtype)).reshape(shape, order=order)

        return TensorRef(p, key, dtype, shape, path, optimizer=optimizer, loader=inline)
    if not isinstance(data, Payload):
        raise FormatError(f"{path}: tensor {key!r}: its pickled array holds {type(data).__name__}, not bytes; refusing")
    if not data.text:
        if data.size != nbytes:
            raise FormatError(f"{path}: tensor {key!r}: {dtype} x {list(shape)} needs {nbytes:,} bytes, the pickle holds {data.size:,}")
        stride = None
        if arr.fortran and len(shape) > 1:
            stride = tuple(math.prod(shape[:i]) for i in range(len(shape)))
        return TensorRef(p, key, dtype, shape, path, offset=data.offset, stride=stride, optimizer=optimizer)
    if not nbytes <= data.size <= 2 * nbytes:  # latin-1 as UTF-8: one or two bytes per byte
        raise FormatError(f"{path}: tensor {key!r}: {dtype} x {list(shape)} needs {nbytes:,} bytes, the pickle's text "
                          f"holds {data.size:,}")

    def load() -> np.ndarray:
        try:
            raw = read_exact(path, data.offset, data.size).decode("utf-8").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise FormatError(f"{path}: tensor {key!r}: its protocol-2 text is not latin-1 bytes") from None
        if len(raw) != nbytes:
            raise FormatError(f"{path}: tensor {key!r}: {dtype} x {list(shape)} needs {nbytes:,} bytes, the text holds {len(raw):,}")
        return np.frombuffer(raw, as_numpy(dtype)).reshape(shape, order=order)

    return TensorRef(p, key, dtype, shape, path, optimizer=optimizer, loader=load)


def read(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    obj, payloads, skel_bytes = _load(path, allow_globals)
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: a paddle state dict is a dict; this pickle holds {type(obj).__name__}")
    names = obj.pop(NAME_TABLE, None)
    unpack = obj.pop(UNPACK_INFO, None)
    optimizer_file = LR_SCHEDULER in obj or any(isinstance(k, str) and OPTIMIZER_KEY.search(k) for k in obj)
    builder = IndexBuilder(path)
    metadata: dict[str, Any] = {}
    sliced = _slices(path, obj, unpack) if unpack is not None else {}
    params: dict[str, str] = {}  # key -> parameter name, of the (name, array) tensors of a nested save
    for segs, leaf in flatten(obj, lambda v: isinstance(v, (_LazyArray, _Named)), work_budget(skel_bytes), path):
        key = ".".join(map(str, segs))
        p = key_path(key, ".") or "_"
        optimizer = is_optimizer_path(p) or (optimizer_file and (segs[0] == LR_SCHEDULER or bool(OPTIMIZER_KEY.search(key))))
        if isinstance(leaf, _Named):
            params[key] = leaf.name
            leaf = leaf.array
        if isinstance(leaf, _LazyArray):
            builder.add(_ref(path, p, key, leaf, optimizer))
        else:
            metadata[p] = _metadata_value(path, leaf, payloads)
    for key, ref in sliced.items():
        builder.add(ref)
    if isinstance(names, dict):  # state-dict key -> the parameter's own name: kept whole (strings)
        metadata[NAME_TABLE] = {str(k): to_jsonable(v) for k, v in names.items()}
    elif names is not None:
        metadata[NAME_TABLE] = to_jsonable(names)
    if params:
        metadata.setdefault(NAME_TABLE, {}).update(params)
    refs = _share_copies(path, builder.refs, metadata.get(NAME_TABLE))
    return CheckpointIndex(refs, format=FORMAT, files=[path], metadata=metadata, key_sep=".")


def _share_copies(path: str, refs: list[TensorRef], names: Any) -> list[TensorRef]:
    """Keys the name table maps to one parameter are one tensor under several names (aliases).

    ``paddle.nn.LSTM``/``GRU`` hold each parameter twice in their state dict (``lstm.weight_ih_l0`` and
    ``lstm.0.cell_fw.weight_ih``), and ``paddle.save`` pickles one copy per key. Here the copies share one
    loader, so the index lists them as aliases (``ls``: "also: ..."), and recognition sees one tensor. The
    loader reads every copy and refuses copies that differ: ``set_state_dict`` would assign both to the one
    parameter, the later key winning, so such a file (edited by hand) does not say what the model holds.
    """
    if not isinstance(names, dict):
        return refs
    by_param: dict[tuple[str, str, tuple[int, ...]], list[TensorRef]] = {}
    for ref in refs:
        name = names.get(ref.key)
        if isinstance(name, str) and not ref.optimizer and ref.numel:
            by_param.setdefault((name, ref.dtype_spec.str, ref.shape), []).append(ref)
    shared: dict[str, TensorRef] = {}
    for (name, _, _), copies in by_param.items():
        if len(copies) < 2:
            continue
        load = _copies_loader(path, name, copies)
        for ref in copies:
            shared[ref.path] = ref.replace(loader=load, raw=False)
    return [shared.get(ref.path, ref) for ref in refs]


def _copies_loader(path: str, name: str, copies: list[TensorRef]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        first = copies[0].numpy()
        for ref in copies[1:]:
            if ref.numpy().tobytes() != first.tobytes():
                raise FormatError(
                    f"{path}: keys {copies[0].key!r} and {ref.key!r} are both paddle parameter {name!r} (the file's "
                    f"{NAME_TABLE} table) but hold different values; paddle's set_state_dict would assign both, the "
                    "later key winning, so the file does not say what the model holds: save it again from paddle")
        return first

    return load


def _metadata_value(path: str, leaf: Any, payloads: list[Payload]) -> Any:
    """A non-array leaf; a long string the skeleton left in the file is read now (if not too long)."""
    payload = payload_of(leaf, payloads)
    if payload is None:
        return to_jsonable(leaf)
    if not payload.text or payload.size > MAX_TEXT:
        return f"<{payload.size:,} bytes>"
    return to_jsonable(read_exact(path, payload.offset, payload.size).decode("utf-8", "replace"))


def _slices(path: str, obj: dict[Any, Any], unpack: Any) -> dict[str, TensorRef]:
    """Arrays paddle split into flat ``NAME@@.i`` slices: each one reassembled (and its slices taken out of ``obj``)."""
    if not isinstance(unpack, dict):
        raise FormatError(f"{path}: {UNPACK_INFO} is not a dict")
    out = {}
    for key, info in unpack.items():
        shape = info.get("OriginShape") if isinstance(info, dict) else None
        parts = info.get("slices") if isinstance(info, dict) else None
        if not (isinstance(key, str) and isinstance(shape, (tuple, list)) and isinstance(parts, list)
                and all(isinstance(s, str) and isinstance(obj.get(s), _LazyArray) for s in parts)):
            raise FormatError(f"{path}: {UNPACK_INFO}[{str(key)[:40]!r}] does not name its slices")
        arrays = [obj.pop(s) for s in parts]
        refs = [_ref(path, s, s, a, False) for s, a in zip(parts, arrays)]
        dtypes = {r.dtype for r in refs}
        shape = tuple(shape)
        if len(dtypes) != 1 or any(len(r.shape) != 1 for r in refs) or sum(r.numel for r in refs) != math.prod(shape):
            raise FormatError(f"{path}: the slices of {key!r} do not make shape {list(shape)}")
        dtype = refs[0].dtype
        check_shape(path, key, dtype, shape)

        def load(refs: list[TensorRef] = refs, shape: tuple[int, ...] = shape) -> np.ndarray:
            return np.concatenate([r.numpy().reshape(-1) for r in refs]).reshape(shape)

        out[key] = TensorRef(key_path(key, "."), key, dtype, shape, path, loader=load)
    return out


def _pickles(path: str) -> list[tuple[str, bytes]]:
    """For ``scan``: the file's one pickle, whole (the reader refuses bytes after it)."""
    src = open_source(path)
    if src.size > MAX_PICKLE:
        raise FormatError(f"{path}: pickle of {src.size:,} bytes is over {MAX_PICKLE:,}; not scanned")
    return [(path, bytes(src.read(0, src.size)))]


# The globals this reader admits beyond the common allowlist, each an inert stand-in (see _load).
register_pickle_walker(FORMAT, _pickles, frozenset({("builtins", "tuple"), ("builtins", "bytes")}))
