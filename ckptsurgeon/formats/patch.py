"""Write a copy of a checkpoint with some tensors' bytes replaced in place.

Everything else stays byte-identical to the template: names, order, dtypes, pickles, headers,
metadata. Zip containers (PyTorch, npz, .keras) get the CRC-32 of every touched member fixed in its
local header or data descriptor and in the central directory.
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import BinaryIO, Union

import numpy as np

from ..atomic import atomic_output, check_output
from ..errors import OutputError
from ..index import CheckpointIndex, TensorRef
from ..source import copy_to, open_source

__all__ = ["patch_copy"]


def _range(ref: TensorRef) -> tuple[int, int]:
    return ref.offset, ref.offset + ref.span()


Value = Union[np.ndarray, Callable[[], np.ndarray]]


def _bytes(path: str, ref: TensorRef, value: Value) -> memoryview:
    """The replacement's bytes in the template tensor's dtype (computed now when ``value`` is lazy)."""
    arr = np.asarray(value() if callable(value) else value)
    if arr.shape != ref.shape:
        raise OutputError(f"{path!r}: replacement has shape {list(arr.shape)}, the template {list(ref.shape)}")
    data = memoryview(np.ascontiguousarray(arr.astype(ref.dtype, copy=False)).reshape(-1).view(np.uint8))
    if len(data) != ref.nbytes:
        raise OutputError(f"{path!r}: replacement is {len(data)} bytes, the template holds {ref.nbytes}")
    return data


def _check(index: CheckpointIndex, replacements: Mapping[str, Value]) -> list[tuple[TensorRef, Value]]:
    patches = []
    for path, value in replacements.items():
        ref = index[path]
        if not ref.in_place or ref.stride is not None or ref.file != index.files[0]:
            raise OutputError(f"{index.files[0]}: template tensor {path!r} is not stored as one plain byte range "
                              "(chunked, compressed, strided or checksummed); it cannot be replaced in place")
        if not callable(value):
            _bytes(path, ref, value)  # arrays in hand are checked before anything is written
        patches.append((ref, value))
    touched = {id(ref) for ref, _ in patches}
    spans = sorted((*_range(r), r.path, id(r) in touched) for r in index.values() if r.in_place and r.numel)
    for (s1, e1, p1, t1), (s2, e2, p2, t2) in zip(spans, spans[1:]):
        if s2 < e1 and (t1 or t2) and not (t1 and t2 and (s1, e1) == (s2, e2)):
            raise OutputError(f"template tensors {p1!r} and {p2!r} share storage; replacing one would change the other")
    return patches


def _fix_zip_crcs(fh: BinaryIO, template: str, offsets: list[int]) -> None:
    with zipfile.ZipFile(template) as zf:
        infos = zf.infolist()
        start_dir = zf.start_dir
    entries = {}
    for info in infos:
        fh.seek(info.header_offset + 26)
        n, m = struct.unpack("<HH", fh.read(4))
        data = info.header_offset + 30 + n + m
        if any(data <= o < data + info.compress_size for o in offsets):
            if info.compress_type != zipfile.ZIP_STORED:
                raise OutputError(f"{template}: member {info.filename!r} is compressed; cannot patch it in place")
            fh.seek(data)
            crc, left = 0, info.compress_size
            while left:
                chunk = fh.read(min(left, 1 << 20))
                crc, left = zlib.crc32(chunk, crc), left - len(chunk)
            entries[info.filename] = (info, data, crc)
    for name, (info, data, crc) in entries.items():
        if info.flag_bits & 0x8:  # data descriptor after the data, optionally signed
            fh.seek(data + info.compress_size)
            sig = fh.read(4)
            fh.seek(data + info.compress_size + (4 if sig == b"PK\x07\x08" else 0))
        else:
            fh.seek(info.header_offset + 14)
        fh.write(struct.pack("<I", crc))
    pos = start_dir
    for _ in infos:
        fh.seek(pos)
        head = fh.read(46)
        if head[:4] != b"PK\x01\x02":
            raise OutputError(f"{template}: unexpected central directory layout")
        n, m, k = struct.unpack("<HHH", head[28:34])
        name = fh.read(n).decode("utf-8", "replace")
        if name in entries:
            fh.seek(pos + 16)
            fh.write(struct.pack("<I", entries[name][2]))
        pos += 46 + n + m + k


def patch_copy(index: CheckpointIndex, out: str, replacements: Mapping[str, Value], *, force: bool = False,
               progress: Callable[[int, int], None] | None = None) -> str:
    """Copy ``index``'s file to ``out`` with the tensors at ``replacements``' paths overwritten.

    A replacement is an array or a function computing it: computed one at a time while writing (a
    misfit then fails the write, and the atomic output leaves nothing behind). The template is copied
    by the kernel where it can be. ``progress(n, total)`` follows the bytes copied and patched.
    """
    template = index.files[0]
    check_output(out, [template], force)
    patches = _check(index, replacements)
    source = open_source(template)
    total = source.size + sum(ref.nbytes for ref, _ in patches)
    step = (lambda n: progress(n, total)) if progress is not None else None
    with atomic_output(out) as fh:
        copy_to(source, fh, 0, source.size, progress=step)
        for ref, value in patches:
            data = _bytes(ref.path, ref, value)
            fh.seek(ref.offset)
            fh.write(data)
            if step is not None:
                step(ref.nbytes)
        if zipfile.is_zipfile(template):
            fh.flush()
            _fix_zip_crcs(fh, template, [ref.offset for ref, _ in patches])
    return out
