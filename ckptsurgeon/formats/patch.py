"""Write a copy of a checkpoint with some tensors' bytes replaced in place.

Everything else stays byte-identical to the template: names, order, dtypes, pickles, headers,
metadata. Zip containers (PyTorch, npz, .keras) get the CRC-32 of every touched member fixed in its
local header or data descriptor and in the central directory.
"""
from __future__ import annotations

import shutil
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

from ..atomic import atomic_output, check_output
from ..errors import OutputError
from ..index import CheckpointIndex, TensorRef

__all__ = ["patch_copy"]


def _range(ref: TensorRef) -> tuple[int, int]:
    return ref.offset, ref.offset + ref.span()


def _check(index: CheckpointIndex, replacements: Mapping[str, np.ndarray],
           file: str | None = None) -> list[tuple[TensorRef, bytes]]:
    file = file or index.files[0]
    patches = []
    for path, arr in replacements.items():
        ref = index[path]
        if not ref.in_place or ref.stride is not None or ref.file != file:
            raise OutputError(f"{index.files[0]}: template tensor {path!r} is not stored as one plain byte range "
                              "(chunked, compressed, strided or checksummed); it cannot be replaced in place")
        arr = np.asarray(arr)
        if arr.shape != ref.shape:
            raise OutputError(f"{path!r}: replacement has shape {list(arr.shape)}, the template {list(ref.shape)}")
        data = np.ascontiguousarray(arr.astype(ref.dtype, copy=False)).tobytes()
        if len(data) != ref.nbytes:
            raise OutputError(f"{path!r}: replacement is {len(data)} bytes, the template holds {ref.nbytes}")
        patches.append((ref, data))
    touched = {id(ref) for ref, _ in patches}
    spans = sorted((*_range(r), r.path, id(r) in touched) for r in index.values()
                   if r.in_place and r.numel and r.file == file)
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


def _copy_patched(fh: BinaryIO, template: str, patches: list[tuple[TensorRef, bytes]]) -> None:
    with open(template, "rb") as src:
        shutil.copyfileobj(src, fh, 1 << 20)
    for ref, data in patches:
        fh.seek(ref.offset)
        fh.write(data)
    if zipfile.is_zipfile(template):
        fh.flush()
        _fix_zip_crcs(fh, template, [ref.offset for ref, _ in patches])


def patch_copy(index: CheckpointIndex, out: str, replacements: Mapping[str, np.ndarray], *, force: bool = False) -> str:
    """Copy ``index``'s file to ``out`` with the tensors at ``replacements``' paths overwritten.

    A sharded template (HF index + shards) is copied into the folder ``out``: the index and every
    shard, each shard with its own replaced tensors, all committed together. ONNX templates have their
    own writer (protobuf lengths, external data files).
    """
    if index.format.startswith("sharded"):
        return _patch_sharded(index, out, replacements, force)
    if index.format == "onnx":
        from .onnx.patch import patch_onnx

        return patch_onnx(index, out, replacements, force=force)
    template = index.files[0]
    check_output(out, [template], force)
    patches = _check(index, replacements)
    with atomic_output(out) as fh:
        _copy_patched(fh, template, patches)
    return out


def _patch_sharded(index: CheckpointIndex, out: str, replacements: Mapping[str, np.ndarray], force: bool) -> str:
    import os

    from ..atomic import atomic_files

    if any(f.startswith(("http://", "https://")) or "://" in f for f in index.files):
        raise OutputError(f"{index.files[0]}: a remote sharded template cannot be copied; download it first")
    names = [os.path.basename(f) for f in index.files]
    inputs = {os.path.realpath(f) for f in index.files}
    for name in names:
        target = os.path.join(out, name)
        if os.path.realpath(target) in inputs:
            raise OutputError(f"{target}: is an input of this operation; choose another output folder")
        if os.path.lexists(target) and not force:
            raise OutputError(f"{target}: already exists; pass --force to replace it")
    by_file: dict[str, dict[str, np.ndarray]] = {}
    for path, arr in replacements.items():
        by_file.setdefault(index[path].file, {})[path] = arr
    plans = {f: _check(index, by_file.get(f, {}), f) for f in index.files[1:]}
    with atomic_files(out) as files:
        for f, name in list(zip(index.files, names))[1:] + [(index.files[0], names[0])]:  # the index last
            with files.open(name) as fh:
                _copy_patched(fh, f, plans.get(f, []))
    return os.path.join(out, names[0])
