"""Write Flax msgpack checkpoints: what ``flax.serialization.msgpack_serialize`` writes for a tree of arrays.

``from_bytes(target_params, data)`` loads the output into a model's params (it ignores keys the target does
not have) and ``msgpack_restore(data)`` reads it as nested dicts. Layout (flax 0.12.8 ``serialization.py``):

- one msgpack map; a ``/`` in a tensor's name nests a map (``lstm/cell/ii/kernel``), any other character is
  part of the name;
- an array is extension type 1 whose payload is ``packb((shape, dtype.name, C-order bytes))``, little-endian;
  a 0-d array is an array of shape ``()`` (flax writes type 3 only for numpy scalars, which tensors are not);
- an array over ``MAX_CHUNK_SIZE`` bytes (1 GiB) is flax's chunked form: ``{"__msgpack_chunked_array__": True,
  "shape": {"0": d0, ...}, "chunks": {"0": flat array, ...}}``, each chunk at most ``MAX_CHUNK_SIZE`` bytes;
- ``metadata`` (the provenance and each converted group's ``rnn:<scope>`` self-description) is one map of
  strings under ``__metadata__``, first: ``from_bytes`` into a model's params skips it, ``msgpack_restore``
  users pop it, and the reader here returns it as the file's metadata.

Hand-written, not the ``msgpack`` package: the reader beside it needs no msgpack library either, and the
encoder writes one array at a time to the output as it is read (``packb`` builds the whole file in memory).
Every choice of encoding is the one msgpack-python's ``Packer`` makes, so the bytes equal flax's own for the
same tree (the fixture script checks ``msgpack_serialize(msgpack_restore(ours)) == ours``).
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from ...dtypes import ML_NAMES
from ...errors import OutputError
from .reader import CHUNKED, METADATA_KEY, NDARRAY

__all__ = ["write", "encode_array", "MAX_CHUNK_SIZE", "METADATA_KEY"]

MAX_CHUNK_SIZE = 2**30  # flax.serialization.MAX_CHUNK_SIZE: larger arrays are written in chunks
_KINDS = frozenset("biufc")  # what flax's msgpack_restore gives back as the same array (its reader's rule too)

_Tree = dict[str, Any]  # name -> subtree or the tensor's full key (a leaf)


def _uint(n: int, small: int, codes: tuple[int, int, int]) -> bytes:
    """A length or count: ``small`` (fix-form) below its bound, else the 8/16/32-bit form msgpack picks."""
    if small >= 0:
        return bytes([small])
    if n < 0x100 and codes[0]:
        return bytes([codes[0], n])
    if n < 0x10000:
        return struct.pack(">BH", codes[1], n)
    if n < 0x100000000:
        return struct.pack(">BI", codes[2], n)
    raise OutputError(f"a msgpack length of {n:,} is over 2**32 - 1")


def _map(n: int) -> bytes:
    return _uint(n, 0x80 | n if n < 16 else -1, (0, 0xDE, 0xDF))


def _array(n: int) -> bytes:
    return _uint(n, 0x90 | n if n < 16 else -1, (0, 0xDC, 0xDD))


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _uint(len(raw), 0xA0 | len(raw) if len(raw) < 32 else -1, (0xD9, 0xDA, 0xDB)) + raw


def _bin(n: int) -> bytes:
    return _uint(n, -1, (0xC4, 0xC5, 0xC6))


def _int(v: int) -> bytes:
    """A non-negative int (a dimension) in msgpack-python's smallest form."""
    if v < 0x80:
        return bytes([v])
    for code, fmt, bound in ((0xCC, ">B", 1 << 8), (0xCD, ">H", 1 << 16), (0xCE, ">I", 1 << 32), (0xCF, ">Q", 1 << 64)):
        if v < bound:
            return bytes([code]) + struct.pack(fmt, v)
    raise OutputError(f"a dimension of {v:,} does not fit msgpack")


_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _ext(code: int, n: int) -> bytes:
    if n in _FIXEXT:
        return bytes([_FIXEXT[n], code])
    return _uint(n, -1, (0xC7, 0xC8, 0xC9)) + bytes([code])


def _dtype(key: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` little-endian and C-contiguous, or refused when flax would not read it back as the same array."""
    dt = arr.dtype
    if dt.kind not in _KINDS and dt.name not in ML_NAMES:
        raise OutputError(f"tensor {key!r}: a Flax msgpack file holds numeric arrays; {dt} is not one "
                          "(flax refuses object and structured dtypes): leave it out (--exclude) or write safetensors")
    if dt.byteorder == ">":
        arr = arr.astype(dt.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)


def encode_array(arr: np.ndarray) -> tuple[bytes, memoryview]:
    """Extension type 1 of ``arr`` (flax's ``_ndarray_to_bytes``): its header bytes and the array's own bytes."""
    data = arr.reshape(-1).view(np.uint8).data  # bytes of any dtype (ml_dtypes' too, which have no buffer format)
    inner = _array(3) + _array(arr.ndim) + b"".join(_int(d) for d in arr.shape) + _str(arr.dtype.name) + _bin(arr.nbytes)
    return _ext(NDARRAY, len(inner) + arr.nbytes) + inner, data


def _tree(keys: list[str], reserved: bool) -> _Tree:
    """Nested maps from ``/``-separated keys; a key that is both a tensor and a scope, or that flax would read as
    something else, is refused."""
    root: _Tree = {}
    for key in keys:
        segs = key.split("/")
        if any(not s for s in segs):
            raise OutputError(f"tensor {key!r}: an empty scope name ('/' at either end or twice); rename it")
        if CHUNKED in segs:
            raise OutputError(f"tensor {key!r}: {CHUNKED!r} marks flax's chunked arrays; rename it")
        if reserved and segs[0] == METADATA_KEY:
            raise OutputError(f"tensor name {METADATA_KEY!r} is reserved in Flax msgpack outputs for the metadata; rename it")
        node = root
        for i, s in enumerate(segs[:-1]):
            child = node.setdefault(s, {})
            if not isinstance(child, dict):
                raise OutputError(f"tensor {key!r}: {'/'.join(segs[:i + 1])!r} is a tensor and a scope at once; "
                                  "a msgpack map cannot hold both: rename one")
            node = child
        if segs[-1] in node:
            raise OutputError(f"tensor {key!r}: {key!r} is a tensor and a scope at once; a msgpack map cannot hold "
                              "both: rename one")
        node[segs[-1]] = key
    return root


def _write_leaf(fh: BinaryIO, key: str, arr: np.ndarray) -> None:
    arr = _dtype(key, np.asarray(arr))
    if arr.nbytes > MAX_CHUNK_SIZE:  # flax's _chunk: flat chunks of at most MAX_CHUNK_SIZE bytes
        per = max(1, MAX_CHUNK_SIZE // arr.dtype.itemsize)
        flat = arr.reshape(-1)
        starts = range(0, flat.size, per)
        fh.write(_map(3) + _str(CHUNKED) + b"\xc3" + _str("shape") + _map(arr.ndim))
        for i, d in enumerate(arr.shape):
            fh.write(_str(str(i)) + _int(d))
        fh.write(_str("chunks") + _map(len(starts)))
        for i, at in enumerate(starts):
            head, data = encode_array(flat[at:at + per])
            fh.write(_str(str(i)) + head)
            fh.write(data)
        return
    head, data = encode_array(arr)
    fh.write(head)
    fh.write(data)


def _write_entries(fh: BinaryIO, node: _Tree, tensors: Mapping[str, np.ndarray]) -> None:
    """A map's entries (its header written by the caller), each tensor read when its turn comes."""
    for name, child in node.items():
        fh.write(_str(name))
        if isinstance(child, dict):
            fh.write(_map(len(child)))
            _write_entries(fh, child, tensors)
        else:
            arr = tensors[child]
            _write_leaf(fh, child, arr)
            del arr  # before the next tensor is read: one tensor in memory at a time


def write(tensors: Mapping[str, np.ndarray], fh: BinaryIO, metadata: Mapping[str, str]) -> None:
    """The tensors as one msgpack map (``/`` nests maps), the metadata first under ``__metadata__``."""
    tree = _tree(list(tensors), reserved=bool(metadata))
    fh.write(_map(len(tree) + (1 if metadata else 0)))
    if metadata:
        fh.write(_str(METADATA_KEY) + _map(len(metadata)))
        for k, v in metadata.items():
            fh.write(_str(str(k)) + _str(str(v)))
    _write_entries(fh, tree, tensors)
