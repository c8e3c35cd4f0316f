"""Flax msgpack checkpoints: ``flax.serialization.to_bytes`` / ``msgpack_serialize`` files.

Layout (``flax/serialization.py``): one msgpack map, the state dict; nested maps are scopes
(``params/lstm/ii/kernel``); lists are indexed. An array leaf is extension type 1 whose payload is itself
msgpack: ``[shape, dtype name, bin of the C-order bytes]`` (written in the writer's byte order: little-endian
on every machine JAX runs on); type 3 is a numpy scalar in the same layout, type 2 a complex number
``[real, imag]``. Arrays over ``MAX_CHUNK_SIZE`` (1 GiB) are split: ``{"__msgpack_chunked_array__": True,
"shape": {"0": d0, ...}, "chunks": {"0": flat array, ...}}``.

Read lazily (``wire.Walker``): the structure is parsed, every array's bytes are located and none read;
an array is one byte range of the file (a chunked one, its chunks). No msgpack library is needed.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ...dtype_lite import NAMES, LiteDtype, as_numpy, from_typestr, python_values
from ...dtypes import ML_NAMES
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...scopes import join_path
from ...source import open_source, read_exact
from ..tree import is_optimizer_path, to_jsonable
from ..magic import sniff_flax as sniff
from .wire import Bin, Ext, Walker

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["sniff", "read", "FORMAT", "NDARRAY", "COMPLEX", "NPSCALAR", "CHUNKED", "METADATA_KEY"]

FORMAT = "flax"
NDARRAY, COMPLEX, NPSCALAR = 1, 2, 3  # flax.serialization._MsgpackExtType
CHUNKED = "__msgpack_chunked_array__"
METADATA_KEY = "__metadata__"  # a map of strings at the top: the metadata ckptsurgeon's writer stores
OPTIMIZER_SCOPES = ("opt_state",)  # flax.training.train_state.TrainState
_KINDS = frozenset("biufc")  # numeric and bool dtypes; flax refuses object and structured ones
MAX_SCALAR = 64  # bytes of a numpy scalar's payload read into the metadata


class _Array(NamedTuple):
    dtype: np.dtype | LiteDtype
    shape: tuple[int, ...]
    offset: int  # absolute, of the C-order bytes


def _dtype(path: str, name: Any, where: str) -> np.dtype | LiteDtype:
    if isinstance(name, Bin) and name.size <= 32:
        name = bytes(read_exact(path, name.offset, name.size)).decode("ascii", "replace")
    if not isinstance(name, str) or len(name) > 32:
        raise FormatError(f"{path}: array {where!r}: dtype name {str(name)[:40]!r} is not a dtype name")
    try:
        dtype = (LiteDtype(name) if name in NAMES else from_typestr(name)) or np.dtype(name)
    except TypeError:
        raise FormatError(f"{path}: array {where!r}: unknown dtype {name!r}") from None
    if not isinstance(dtype, LiteDtype):  # another spelling ("single", "double"): as its LiteDtype, so that the
        dtype = from_typestr(dtype.str) or dtype  # chunks of one array compare and hash alike however each spells it
    if dtype.kind not in _KINDS and name not in ML_NAMES:
        raise UnsafeCheckpointError(f"{path}: array {where!r}: dtype {name!r} is not a numeric dtype; refusing")
    return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype


def _array(path: str, ext: Ext, where: str) -> _Array:
    """An ndarray extension: ``[shape, dtype name, bin]``, its size checked against its shape."""
    payload = ext.value
    if not (isinstance(payload, list) and len(payload) == 3 and isinstance(payload[0], list)
            and isinstance(payload[2], Bin)):
        raise FormatError(f"{path}: {where!r}: a flax array extension is [shape, dtype, bytes]; this one is not")
    shape = tuple(payload[0])
    if not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"{path}: {where!r}: invalid shape {list(shape)[:8]}")
    dtype = _dtype(path, payload[1], where)
    check_shape(path, where, dtype, shape)
    if math.prod(shape) * dtype.itemsize != payload[2].size:
        raise FormatError(f"{path}: {where!r}: {dtype.name} x {list(shape)} needs {math.prod(shape) * dtype.itemsize:,} "
                          f"bytes, the array holds {payload[2].size:,}")
    return _Array(dtype, shape, payload[2].offset)


def _chunked(path: str, node: dict[Any, Any], where: str) -> tuple[np.dtype | LiteDtype, tuple[int, ...], list[_Array]]:
    """A chunked array (flax's ``_chunk``): its dtype, shape and flat chunks in order."""
    shape_d, chunks_d = node.get("shape"), node.get("chunks")
    if not isinstance(shape_d, dict) or not isinstance(chunks_d, dict) or set(node) != {CHUNKED, "shape", "chunks"}:
        raise FormatError(f"{path}: {where!r}: malformed chunked array (needs exactly shape and chunks)")
    try:
        shape = tuple(shape_d[str(i)] for i in range(len(shape_d)))
        exts = [chunks_d[str(i)] for i in range(len(chunks_d))]
    except KeyError as exc:
        raise FormatError(f"{path}: {where!r}: chunked array lacks entry {exc}") from None
    if not all(type(d) is int and d >= 0 for d in shape) or not all(isinstance(e, Ext) and e.code == NDARRAY for e in exts):
        raise FormatError(f"{path}: {where!r}: malformed chunked array")
    chunks = [_array(path, e, f"{where}/chunks/{i}") for i, e in enumerate(exts)]
    dtypes = {c.dtype for c in chunks}
    if len(dtypes) > 1 or any(len(c.shape) != 1 for c in chunks):
        raise FormatError(f"{path}: {where!r}: chunks of a chunked array must be flat and of one dtype")
    dtype = chunks[0].dtype if chunks else LiteDtype("float32").newbyteorder("<")
    check_shape(path, where, dtype, shape)
    if sum(c.shape[0] for c in chunks) != math.prod(shape):
        raise FormatError(f"{path}: {where!r}: chunks hold {sum(c.shape[0] for c in chunks):,} elements, shape "
                          f"{list(shape)} needs {math.prod(shape):,}")
    return dtype, shape, chunks


def _chunk_loader(path: str, lite: np.dtype | LiteDtype, shape: tuple[int, ...], chunks: list[_Array]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        dtype = as_numpy(lite)
        out = np.empty(math.prod(shape), dtype)
        pos = 0
        for c in chunks:
            out[pos:pos + c.shape[0]] = np.frombuffer(read_exact(path, c.offset, c.shape[0] * dtype.itemsize), dtype)
            pos += c.shape[0]
        return out.reshape(shape)

    return load


def _leaves(node: Any, segs: list[Any]) -> Iterator[tuple[list[Any], Any]]:
    if isinstance(node, dict) and CHUNKED not in node:
        for k, v in node.items():
            yield from _leaves(v, segs + [k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, segs + [i])
    else:
        yield segs, node


def read(path: str) -> CheckpointIndex:
    src = open_source(path)
    walker = Walker(src, inline=frozenset((NDARRAY, COMPLEX, NPSCALAR)))
    try:
        tree = walker.node()
        if walker.pos != src.size:
            raise FormatError(f"{path}: {src.size - walker.pos:,} bytes follow the msgpack object; not a flax msgpack file")
        if not isinstance(tree, dict):
            raise FormatError(f"{path}: a flax msgpack file holds a map (a state dict); this one holds {type(tree).__name__}")
        builder = IndexBuilder(path)
        metadata: dict[str, Any] = {}
        notes: list[str] = []
        stated = tree.get(METADATA_KEY)
        if isinstance(stated, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in stated.items()):
            metadata[METADATA_KEY] = dict(tree.pop(METADATA_KEY))  # ckptsurgeon's writer: provenance, rnn:<scope>
        for segs, leaf in _leaves(tree, []):
            p = join_path(segs)
            optimizer = bool(segs) and (segs[0] in OPTIMIZER_SCOPES or is_optimizer_path(p))
            if isinstance(leaf, Ext) and leaf.code == NDARRAY:
                arr = _array(path, leaf, p)
                builder.add(TensorRef(path=p, key=p, dtype=arr.dtype, shape=arr.shape, file=path, offset=arr.offset,
                                      optimizer=optimizer))
            elif isinstance(leaf, dict):  # a chunked array
                dtype, shape, chunks = _chunked(path, leaf, p)
                builder.add(TensorRef(path=p, key=p, dtype=dtype, shape=shape, file=path, optimizer=optimizer,
                                      loader=_chunk_loader(path, dtype, shape, chunks)))
            else:
                metadata[p] = _value(path, leaf, p, notes)
    finally:
        walker.close()
    return CheckpointIndex(builder.refs, format=FORMAT, files=[path], metadata=metadata, notes=notes, key_sep="/")


def _value(path: str, leaf: Any, where: str, notes: list[str]) -> Any:
    """A non-array leaf as metadata: numbers and strings as they are, numpy scalars and complex numbers decoded."""
    if isinstance(leaf, Ext) and leaf.code == NPSCALAR:
        arr = _array(path, leaf, where)
        if arr.shape != () or arr.dtype.itemsize > MAX_SCALAR:
            raise FormatError(f"{path}: {where!r}: a numpy scalar of shape {list(arr.shape)}")
        raw = read_exact(path, arr.offset, arr.dtype.itemsize)
        plain = python_values(arr.dtype, raw, 1) if type(arr.dtype) is LiteDtype else None
        return to_jsonable(plain[0] if plain is not None else np.frombuffer(raw, as_numpy(arr.dtype))[0])
    if isinstance(leaf, Ext) and leaf.code == COMPLEX:
        pair = leaf.value
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, (int, float)) for x in pair)):
            raise FormatError(f"{path}: {where!r}: a complex extension is [real, imag]; this one is not")
        return {"complex": pair}
    if isinstance(leaf, Ext):
        notes.append(f"{where}: msgpack extension type {leaf.code} ({leaf.size:,} bytes), unknown to flax; listed, not read")
        return f"<msgpack extension type {leaf.code}, {leaf.size} bytes>"
    if isinstance(leaf, Bin):
        return f"<{leaf.size} bytes>"
    return to_jsonable(leaf)
