"""The safetensors writer: header first, then each tensor's bytes, streamed in the given order.

Not ``safetensors.serialize_file``: that needs every tensor's bytes in memory at once and reorders
tensors by dtype. Here a value is an array or a lazy ``TensorRef``:

- a byte-exact tensor (one plain little-endian byte range of its source) is copied, never decoded:
  by the kernel when it is larger than ``HASHED_COPY_MAX`` and its source is a local file (its bytes
  never enter this process), otherwise through one reused-size buffer, adjacent small tensors in one read;
- any other tensor (strided, big-endian, converted, checksummed) is read as an array, one at a time.

Every tensor whose bytes pass through memory gets its sha256 (of the bytes as written) in
``__metadata__["tensor_sha256"]``, a JSON object key -> hex digest; the header is written with
placeholder digests of the same length and patched in place at the end. The tests read every output
back with the safetensors library itself.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...dtypes import SAFETENSORS_CODES
from ...errors import OutputError
from ...index import TensorRef
from ...source import CHUNK, copy_to, open_source

__all__ = ["write", "HASHED_COPY_MAX", "SHA256_KEY"]

HASHED_COPY_MAX = 16 << 20  # byte-exact tensors up to this size are copied through memory and hashed
SHA256_KEY = "tensor_sha256"


@dataclass(slots=True)
class _Item:
    key: str
    value: Any  # np.ndarray | TensorRef
    dtype: np.dtype
    shape: tuple[int, ...]
    nbytes: int
    plain: bool  # one little-endian byte range of a source: copied, not decoded
    hashed: bool


def _is_plain(value: Any) -> bool:
    """One little-endian C-order byte range of its file (``in_place``: also HDF5's contiguous datasets)."""
    return (isinstance(value, TensorRef) and value.in_place and value.stride is None and value.numel > 0
            and (value.dtype.itemsize == 1 or value.dtype.byteorder == "<"
                 or (value.dtype.byteorder == "=" and np.little_endian)))


def _code(dtype: np.dtype) -> str | None:
    """The safetensors dtype code of ``dtype`` in any byte order (cached: numpy's calls are slow)."""
    if dtype not in _CODES:
        _CODES[dtype] = SAFETENSORS_CODES.get(dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype)
    return _CODES[dtype]


_CODES: dict[np.dtype, str | None] = {}


def _items(tensors: Mapping[str, Any]) -> list[_Item]:
    out = []
    for key, value in tensors.items():
        if not isinstance(value, TensorRef):
            value = np.asarray(value)
        dtype = value.dtype
        if _code(dtype) is None:
            raise OutputError(f"tensor {key!r}: dtype {dtype.name} has no safetensors code; cast it or use --format npz")
        shape = value.shape if isinstance(value, TensorRef) else tuple(int(d) for d in value.shape)
        nbytes = math.prod(shape) * dtype.itemsize
        plain = _is_plain(value)
        kernel = plain and nbytes > HASHED_COPY_MAX and open_source(value.file).local_path is not None
        out.append(_Item(key, value, dtype, shape, nbytes, plain, hashed=not kernel))
    return out


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with arguments makes one per call


def _encode(data: Any) -> str:
    return _ENCODER.encode(data)


_key_json = json.encoder.encode_basestring_ascii  # a key as JSON: what json.dumps(key) returns, in C


def _tensor_pieces(items: list[_Item], opening: bytes = b"{") -> Iterator[bytes]:
    """The tensors' part of the header (a JSON object; ``opening`` replaces its ``{``), one entry at a time."""
    yield opening
    offset, sep = 0, b""
    for item in items:
        shape = ",".join(map(str, item.shape))
        yield sep + (f'{_key_json(item.key)}:{{"dtype":"{_code(item.dtype)}","shape":[{shape}],'
                     f'"data_offsets":[{offset},{offset + item.nbytes}]}}').encode("utf-8")
        offset, sep = offset + item.nbytes, b","
    yield b"}"


def _tensors_json(items: list[_Item]) -> bytearray:
    """The tensors' part of the header as one buffer."""
    out = bytearray()
    for piece in _tensor_pieces(items):
        out += piece
    return out


def _metadata_pieces(metadata: Mapping[str, str], keys: Iterable[str], digest: Callable[[int, str], bytes | str]
                     ) -> Iterator[bytes]:
    """``__metadata__`` as JSON: the string entries, then ``tensor_sha256`` (when there are ``keys``), itself a JSON
    object held as a string, ``digest(k, key)`` the k-th (raw, or hex). Written out piece by piece (the inner keys
    escaped once more by hand: ``"`` and ``\\`` are all an ASCII JSON text holds to escape) rather than json.dumps
    of json.dumps, which held three copies of 100,000 digests (40 MB). The bytes are the same."""
    keys = iter(keys)
    first = next(keys, None)
    meta = {str(k): str(v) for k, v in metadata.items() if not (first is not None and str(k) == SHA256_KEY)}
    head = _encode(meta).encode("utf-8")
    if first is None:
        yield head
        return
    yield head[:-1] + (b',"' if meta else b'"') + SHA256_KEY.encode() + b'":"{'
    for k, key in enumerate(itertools.chain((first,), keys)):
        value = digest(k, key)
        yield ((b"," if k else b"") + _key_json(key).replace("\\", "\\\\").replace('"', '\\"').encode("ascii")
               + b':\\"' + (value if isinstance(value, str) else value.hex()).encode("ascii") + b'\\"')
    yield b'}"}'


def _metadata_json(metadata: Mapping[str, str], digests: Mapping[str, bytes] | Mapping[str, str]) -> bytearray:
    """``__metadata__`` as one buffer, from a mapping key -> digest (raw 32 bytes, or hex)."""
    out = bytearray()
    for piece in _metadata_pieces(metadata, digests, lambda _k, key: digests[key]):
        out += piece
    return out


class _Pieces:
    """Pieces written to a file through one buffer of at most ``FLUSH`` bytes; ``size`` counts them all. A header of
    100,000 tensors goes out without being held whole (10 MB of tensor entries, 10 MB of digests)."""

    FLUSH = 1 << 20

    def __init__(self, fh: Any) -> None:
        self.fh, self.size, self._buf = fh, 0, bytearray()

    def extend(self, pieces: Iterable[bytes]) -> int:
        """Write ``pieces``; how many bytes they were."""
        before = self.size + len(self._buf)
        buf = self._buf
        for piece in pieces:
            buf += piece
            if len(buf) >= self.FLUSH:
                self.flush()
        return self.size + len(buf) - before

    def flush(self) -> None:
        self.fh.write(self._buf)
        self.size += len(self._buf)
        self._buf.clear()


def _runs(items: list[_Item]) -> Iterator[list[_Item]]:
    """Consecutive hashed byte-exact tensors adjacent in one source, at most CHUNK bytes a run; yielded one at a
    time (a list of 100,000 one-tensor runs held 8 MB)."""
    last: list[_Item] | None = None
    for item in items:
        if (last and item.plain and item.hashed and last[0].plain and last[0].hashed
                and last[-1].value.file == item.value.file
                and last[-1].value.offset + last[-1].nbytes == item.value.offset
                and item.value.offset + item.nbytes - last[0].value.offset <= CHUNK):
            last.append(item)
        else:
            if last:
                yield last
            last = [item]
    if last:
        yield last


def _array_bytes(item: _Item) -> memoryview:
    value = item.value
    arr = value.numpy() if isinstance(value, TensorRef) else value
    if _code(arr.dtype) != _code(item.dtype):
        raise OutputError(f"tensor {item.key!r}: read as {arr.dtype.name}, declared {item.dtype.name}")
    if arr.dtype.itemsize > 1 and arr.dtype.byteorder not in ("<", "|") and not (arr.dtype.byteorder == "=" and np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8))


def write(tensors: Mapping[str, Any], fh: Any, metadata: Mapping[str, str], *,
          progress: Callable[[int], None] | None = None) -> None:
    """Write ``tensors`` (arrays or TensorRefs, in the given order) to the open binary file ``fh``."""
    items = _items(tensors)
    hashed = [i.key for i in items if i.hashed]
    digests = bytearray(32 * len(hashed))  # raw, in ``hashed`` order (zeros until known: the placeholder's hex)
    start = fh.tell()
    fh.write(bytes(8))  # the header's length, once it is known
    out = _Pieces(fh)
    meta_at = meta_len = 0
    if metadata or hashed:
        opening = b'{"__metadata__":'
        out.extend((opening,))
        meta_at = 8 + len(opening)
        meta_len = out.extend(_metadata_pieces(metadata, hashed, lambda k, _key: digests[32 * k:32 * k + 32]))
        out.extend(_tensor_pieces(items, b"," if items else b""))
    else:
        out.extend(_tensor_pieces(items))
    out.flush()
    pad = -out.size % 8  # align the buffer to 8 bytes like the reference writer
    fh.write(b" " * pad)
    end = fh.tell()
    fh.seek(start)
    fh.write(struct.pack("<Q", out.size + pad))
    fh.seek(end)
    sources: dict[str, Any] = {}  # file -> its source, opened once (not once per tensor: a stat each)
    slot = 0  # where the next hashed tensor's digest goes in ``digests``
    for run in _runs(items):
        first = run[0]
        if first.plain and first.hashed and first.nbytes <= CHUNK:
            source = sources.get(first.value.file) or sources.setdefault(first.value.file, open_source(first.value.file))
            data = memoryview(source.read(first.value.offset, sum(i.nbytes for i in run)))
            pos = 0
            for item in run:
                digests[slot:slot + 32] = hashlib.sha256(data[pos:pos + item.nbytes]).digest()
                slot, pos = slot + 32, pos + item.nbytes
            fh.write(data)
            if progress is not None:
                progress(pos)
        elif first.plain:
            digest = hashlib.sha256() if first.hashed else None
            copy_to(open_source(first.value.file), fh, first.value.offset, first.nbytes, digest=digest, progress=progress)
            if digest is not None:
                digests[slot:slot + 32] = digest.digest()
                slot += 32
        else:
            data = _array_bytes(first)
            if len(data) != first.nbytes:
                raise OutputError(f"tensor {first.key!r}: read {len(data)} bytes, expected {first.nbytes}")
            digests[slot:slot + 32] = hashlib.sha256(data).digest()
            slot += 32
            fh.write(data)
            del data  # before the next tensor is read: never two converted tensors in memory at once
            if progress is not None:
                progress(first.nbytes)
    del items  # the header patch needs only the digests: 100,000 items are 10 MB
    if hashed:
        if slot != 32 * len(hashed) or len(digests) != slot:
            raise OutputError("internal error: safetensors writer hashed another number of tensors than it announced")
        end = fh.tell()
        fh.seek(start + meta_at)
        patch = _Pieces(fh)
        written = patch.extend(_metadata_pieces(metadata, hashed, lambda k, _key: digests[32 * k:32 * k + 32]))
        patch.flush()
        if written != meta_len:  # digests are fixed-length hex: cannot happen
            raise OutputError("internal error: safetensors header changed length while patching digests")
        fh.seek(end)
