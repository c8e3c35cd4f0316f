"""Write a TensorFlow name-based checkpoint (tensor bundle V2) without TensorFlow.

What ``tf.compat.v1.train.Saver`` / ``tf.raw_ops.SaveV2`` write for the same variables
(tensorflow/core/util/tensor_bundle): ``PREFIX.index``, a table whose key "" holds the
BundleHeaderProto and every other key (sorted bytewise) a BundleEntryProto (dtype, shape, shard,
offset, size, masked crc32c of the bytes); ``PREFIX.data-0000k-of-0000n``, the tensors' little-endian
bytes back to back; and, when the folder has none, a ``checkpoint`` state file naming the prefix so
``tf.train.latest_checkpoint(folder)`` finds it. The tests byte-compare our files with TensorFlow's and
restore ours with TensorFlow.

Every file is written under a temporary name and renamed into place together (the index last).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from ...atomic import atomic_files
from ...dtypes import TF_DTYPES, CodeTable
from ...errors import OutputError
from ...index import TensorRef
from ...source import CHUNK, copy_to, open_source
from .sstable import TableWriter, mask, varint

__all__ = ["DATA_NAME", "write_bundle", "prefix_of", "bundle_files", "entry_proto", "header_proto", "state_file", "TF_CODES"]

TF_CODES = CodeTable(TF_DTYPES)
DATA_NAME = re.compile(r"\.data-\d{5}-of-\d{5}")
_DATA = re.compile(DATA_NAME.pattern + "$")


def prefix_of(path: str) -> str:
    """The bundle prefix an output path names: ``model.ckpt``, ``model.ckpt.index`` or a data shard's name."""
    if path.endswith(".index"):
        return path[: -len(".index")]
    return _DATA.sub("", path)


def bundle_files(prefix: str, shards: int) -> list[str]:
    """The data shards then the index, as TensorFlow names them."""
    return [f"{prefix}.data-{i:05d}-of-{shards:05d}" for i in range(shards)] + [prefix + ".index"]


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value & 0xFFFFFFFFFFFFFFFF)


def header_proto(num_shards: int) -> bytes:
    """BundleHeaderProto: num_shards, little-endian (0, omitted), version {producer: 1}."""
    return _field(1, num_shards) + _field(3, _field(1, 1))


def entry_proto(code: int, shape: Sequence[int], shard: int, offset: int, size: int, crc: int) -> bytes:
    """BundleEntryProto as proto3 serializes it: zero scalars omitted, the shape always present."""
    dims = b"".join(_field(2, _field(1, d) if d else b"") for d in shape)
    out = _field(1, code) + _field(2, dims)
    if shard:
        out += _field(3, shard)
    if offset:
        out += _field(4, offset)
    if size:
        out += _field(5, size)
    return out + varint(6 << 3 | 5) + mask(crc).to_bytes(4, "little")


def state_file(prefix_name: str) -> bytes:
    """The ``checkpoint`` text proto naming ``prefix_name`` (relative to its folder) as the latest."""
    quoted = prefix_name.replace("\\", "\\\\").replace('"', '\\"')
    return f'model_checkpoint_path: "{quoted}"\nall_model_checkpoint_paths: "{quoted}"\n'.encode()


@dataclass(slots=True)
class _Item:
    key: bytes
    value: Any  # np.ndarray | TensorRef
    code: int
    shape: tuple[int, ...]
    nbytes: int


def _code(key: str, dtype: np.dtype) -> int:
    code = TF_CODES.get(dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype)
    if code is None:
        raise OutputError(f"tensor {key!r}: dtype {dtype.name} has no TensorFlow DataType; cast it (remap --cast) "
                          "or write safetensors")
    return code


def _items(tensors: Mapping[str, Any]) -> list[_Item]:
    out = []
    for key, value in tensors.items():
        if not key:
            raise OutputError("a tensor has an empty name, which a TensorFlow index reserves for its header; rename it")
        spec = getattr(tensors, "spec", None)
        if isinstance(value, TensorRef):
            dtype, shape = value.dtype, value.shape
        elif spec is not None:
            dtype, shape = spec(key)
        else:
            value = np.asarray(value)
            dtype, shape = value.dtype, tuple(int(d) for d in value.shape)
        if dtype.kind in "OUS":
            raise OutputError(f"tensor {key!r}: {dtype.name} values are not numbers; TensorFlow string tensors "
                              "are not written (they hold vocabularies, not weights)")
        out.append(_Item(key.encode("utf-8"), value, _code(key, dtype), tuple(shape),
                         int(np.prod(shape, dtype=np.int64)) * dtype.itemsize))
    out.sort(key=lambda item: item.key)
    return out


def _plain(value: Any) -> bool:
    """One little-endian C-order byte range of a source file: copied in chunks, never decoded."""
    return (isinstance(value, TensorRef) and value.in_place and value.stride is None and value.numel > 0
            and (value.dtype.itemsize == 1 or value.dtype.byteorder == "<"
                 or (value.dtype.byteorder == "=" and np.little_endian)))


def _local_crc(path: str, offset: int, size: int) -> int:
    """crc32c of a byte range of a local file, read in ``CHUNK`` pieces (``os.pread`` gives bytes: no copy)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        crc = 0
        for at in range(offset, offset + size, CHUNK):
            piece = os.pread(fd, min(CHUNK, offset + size - at), at)
            if not piece:
                raise OutputError(f"{path}: truncated while reading bytes {offset}..{offset + size}")
            crc = google_crc32c.extend(crc, piece)
        return crc
    finally:
        os.close(fd)


def _chunks(value: Any, read: Callable[[str], np.ndarray] | None, key: str) -> Any:
    """The tensor's little-endian bytes, in pieces of at most ``CHUNK``."""
    if _plain(value):
        src = open_source(value.file)
        for at in range(value.offset, value.offset + value.nbytes, CHUNK):
            yield bytes(src.read(at, min(CHUNK, value.offset + value.nbytes - at)))
        return
    arr = value.numpy() if isinstance(value, TensorRef) else read(key) if read is not None else np.asarray(value)
    if arr.dtype.itemsize > 1 and (arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian)):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data
    for at in range(0, len(flat), CHUNK):
        yield flat[at : at + CHUNK]


def _plan_shards(items: list[_Item], max_bytes: int | None) -> list[list[_Item]]:
    """Items in key order, cut into shards of at most ``max_bytes`` (a larger tensor alone in its shard)."""
    if not max_bytes:
        return [items]
    shards: list[list[_Item]] = [[]]
    size = 0
    for item in items:
        if shards[-1] and size + item.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    return shards


def _check_targets(paths: Sequence[str], inputs: Sequence[str], force: bool) -> None:
    real_inputs = {os.path.realpath(i) for i in inputs}
    for path in paths:
        if os.path.realpath(path) in real_inputs:
            raise OutputError(f"{path}: is an input of this operation; choose another output prefix")
        if os.path.isdir(path):
            raise OutputError(f"{path}: is a directory; give a checkpoint prefix such as {os.path.join(path, 'model.ckpt')}")
        if os.path.lexists(path) and not force:
            raise OutputError(f"{path}: already exists; pass --force (API: force=True) to replace it")


def _stale(prefix: str, keep: set[str]) -> list[str]:
    """Data shards of an earlier save under the same prefix with another shard count."""
    folder, base = os.path.split(prefix)
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.startswith(base + ".data-") and _DATA.search(n)
            and n[len(base):] == _DATA.search(n).group(0) and os.path.join(folder, n) not in keep]  # type: ignore[union-attr]


def write_bundle(tensors: Mapping[str, Any], path: str, metadata: Mapping[str, str] | None = None, *,
                 force: bool = False, inputs: Sequence[str] = (), max_shard_size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> list[str]:
    """Write ``tensors`` (arrays or TensorRefs, by key) as the bundle ``path`` names; returns the files written.

    ``metadata`` has no place in a bundle and is not written (TensorFlow would restore it as a variable).
    """
    prefix = prefix_of(os.fspath(path))
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.basename(prefix):
        raise OutputError(f"{path}: give a checkpoint prefix such as {os.path.join(path, 'model.ckpt')}")
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: folder {folder} does not exist")
    items = _items(tensors)
    shards = _plan_shards(items, max_shard_size)
    files = bundle_files(prefix, len(shards))
    _check_targets(files, inputs, force)
    stale = _stale(prefix, set(files))
    if any(os.path.realpath(s) in {os.path.realpath(i) for i in inputs} for s in stale):
        raise OutputError(f"{prefix}: holds the input's own data shards; choose another output prefix")
    state = os.path.join(folder, "checkpoint")
    write_state = not os.path.lexists(state)
    read = getattr(tensors, "__getitem__", None) if hasattr(tensors, "spec") else None
    table = TableWriter()
    table.add(b"", header_proto(len(shards)))
    entries: list[tuple[bytes, bytes]] = []
    from concurrent.futures import ThreadPoolExecutor  # writing only: listing commands never import it

    with atomic_files(folder) as out, ThreadPoolExecutor(1) as pool:
        for shard_id, (shard, name) in enumerate(zip(shards, files)):
            offset = 0
            with out.open(os.path.basename(name)) as fh:
                for item in shard:
                    crc, size = 0, 0
                    local = open_source(item.value.file).local_path if _plain(item.value) else None
                    if local is not None:  # the kernel copies the bytes while a thread checksums them (2 cores)
                        pending = pool.submit(_local_crc, local, item.value.offset, item.nbytes)
                        copy_to(open_source(item.value.file), fh, item.value.offset, item.nbytes)
                        crc, size = pending.result(), item.nbytes
                        if progress is not None:
                            progress(size)
                    for piece in _chunks(item.value, read, item.key.decode()) if local is None else ():
                        piece = piece if isinstance(piece, bytes) else bytes(piece)
                        crc = google_crc32c.extend(crc, piece)
                        fh.write(piece)
                        size += len(piece)
                        if progress is not None:
                            progress(len(piece))
                    if size != item.nbytes:
                        raise OutputError(f"tensor {item.key.decode()!r}: {size} bytes read, its shape needs {item.nbytes}")
                    entries.append((item.key, entry_proto(item.code, item.shape, shard_id, offset, size, crc)))
                    offset += size
        for key, entry in sorted(entries):
            table.add(key, entry)
        if write_state:
            with out.open("checkpoint") as fh:
                fh.write(state_file(os.path.basename(prefix)))
        with out.open(os.path.basename(files[-1])) as fh:
            fh.write(table.finish())
    for name in stale:
        os.unlink(name)
    return files + ([state] if write_state else [])
