"""PyTorch legacy checkpoints (``_use_new_zipfile_serialization=False``) and bare pickles.

Layout: pickles of the magic number, the protocol version and sys-info, then the object pickle
(persistent ids ``('storage', type, key, location, numel, view)``), then a pickle of the storage keys,
then each storage as an int64 element count followed by its little-endian bytes.
"""
from __future__ import annotations

import contextlib
import io
import pickletools
import struct
from collections.abc import Sequence
from typing import Any

from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex
from ...source import ByteSource, open_source
from .pickle_walk import Irregular, first_pickle
from .safepickle import StorageRef, safe_load, storage_from_pid
from .torch_common import StorageBytes, build_torch_index

__all__ = ["sniff", "read", "MAGIC_NUMBER"]

FORMAT = "pytorch-legacy"
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


def sniff(head: bytes) -> bool:
    """A pickle stream (protocol 2+ or 0/1 opcodes at the start)."""
    return head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]", b"c", b"N", b"I")


FAST_SPAN = 1 << 16  # a pickle ending within this is walked in memory (``pickle_walk``); a longer one by genops,
# which streams (walking it in memory first would be work thrown away)


def _pickle_span(fh: Any, start: int, where: str) -> int:
    """Find where the pickle that starts at ``start`` ends (parsing only, nothing executed)."""
    fh.seek(start)
    head = fh.read(FAST_SPAN)
    with contextlib.suppress(Irregular):  # the walk steps over arguments in place: several times faster than genops
        return start + first_pickle(head).end
    fh.seek(start)
    try:
        for op, _arg, _pos in pickletools.genops(fh):
            if op.name == "STOP":
                return fh.tell()
    except Exception as exc:
        raise FormatError(f"{where}: malformed pickle at byte {start}: {exc}") from exc
    raise FormatError(f"{where}: truncated pickle at byte {start}")


def _next_pickle(fh: Any, src: ByteSource, pos: int, digest: Any = None, **kw: Any) -> tuple[Any, int]:
    end = _pickle_span(fh, pos, src.name)
    data = src.read(pos, end - pos)
    if digest is not None:
        digest.update(data)
    return safe_load(data, src.name, **kw), end


def _stream(src: ByteSource) -> io.BufferedReader:
    return io.BufferedReader(src.window(), 1 << 16)


def read(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    src = open_source(path)
    size = src.size
    found: dict[str, StorageRef] = {}

    def persistent(pid: Any) -> StorageRef:
        ref = storage_from_pid(pid)
        root = ref.view[0] if ref.view else ref.key
        if root not in found or ref.view is None:
            found[root] = ref if ref.view is None else StorageRef(root, ref.dtype, ref.numel, ref.location)
        return ref

    import hashlib  # here: scan imports this module for its constants, and a listing of other formats hashes nothing

    digest = hashlib.sha256()  # of the pickles: the file's header, read anyway
    with _stream(src) as fh:
        magic, pos = _next_pickle(fh, src, 0, digest, allow_globals=allow_globals)  # or a bare pickle's whole object
        if magic != MAGIC_NUMBER:
            # Not a torch file: a bare pickle, unpickled whole through the same allowlist.
            return read_plain_pickle(path, allow_globals=allow_globals)
        version, pos = _next_pickle(fh, src, pos, digest)
        if version != PROTOCOL_VERSION:
            raise FormatError(f"{path}: unsupported legacy protocol version {version!r}")
        _sys_info, pos = _next_pickle(fh, src, pos, digest)
        start = pos
        obj, pos = _next_pickle(fh, src, pos, digest, persistent=persistent, allow_globals=allow_globals)
        keys, pos = _next_pickle(fh, src, pos, digest)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise FormatError(f"{path}: malformed storage key list")
    storages: dict[str, StorageBytes] = {}
    for key in keys:
        if key not in found:
            raise FormatError(f"{path}: storage {key!r} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", src.read(pos, 8))
        nbytes = numel * found[key].dtype.itemsize
        if numel < 0 or pos + 8 + nbytes > size:
            raise FormatError(f"{path}: truncated: storage {key!r} declares {numel} elements past the end of the file")
        storages[key] = StorageBytes(path, pos + 8, nbytes)
        pos += 8 + nbytes
    return build_torch_index(obj, storages, file=path, format=FORMAT, byteorder="<", header_sha256=digest.hexdigest(),
                             pickle_bytes=pos - start)


def read_plain_pickle(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    """A bare pickle: unpickled through the allowlist so hostile globals are refused by name."""
    src = open_source(path)
    size = src.size
    if size > 1 << 30:
        raise UnsafeCheckpointError(f"{path}: bare pickle over 1 GiB; refusing")
    with _stream(src) as fh:
        obj, pos = _next_pickle(fh, src, 0, allow_globals=allow_globals)
        count = 1
        while pos < size:  # a hidden pickle after the first: each is vetted, then all refused
            _, pos = _next_pickle(fh, src, pos, allow_globals=allow_globals)
            count += 1
    if count > 1:
        raise UnsafeCheckpointError(f"{path}: {count} pickles concatenated in one file; refusing the hidden ones")
    return build_torch_index(obj, {}, file=path, format="pickle", byteorder="<", pickle_bytes=size)
