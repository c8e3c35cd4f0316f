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
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np

from ..atomic import atomic_output, check_output
from ..errors import OutputError
from ..index import CheckpointIndex, TensorRef
from ..source import copy_to, open_source

__all__ = ["patch_copy", "aliased", "Alias"]


def _range(ref: TensorRef) -> tuple[int, int]:
    return ref.offset, ref.offset + ref.span()


@dataclass(frozen=True)
class Alias:
    """A template tensor that shares stored bytes with replaced tensors, and whether writing them changes it."""

    path: str
    shares_with: tuple[str, ...]
    changes: bool


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


def _check(index: CheckpointIndex, replacements: Mapping[str, Value], file: str | None = None
           ) -> list[tuple[TensorRef, Value]]:
    """(template tensor, value) per replacement; arrays in hand are checked before anything is written."""
    file = file or index.files[0]
    patches = []
    for path, value in replacements.items():
        ref = index[path]
        if not ref.in_place or ref.stride is not None or ref.file != file:
            raise OutputError(f"{index.files[0]}: template tensor {path!r} is not stored as one plain byte range "
                              "(chunked, compressed, strided or checksummed); it cannot be replaced in place")
        if not callable(value):
            _bytes(path, ref, value)
        patches.append((ref, value))
    return patches


def _decode(ref: TensorRef, buf: bytes | bytearray, base: int) -> np.ndarray:
    """``ref``'s values from ``buf``, which holds the file's bytes from offset ``base``."""
    start = ref.offset - base
    flat = np.frombuffer(buf, dtype=ref.dtype, count=ref.span() // ref.dtype.itemsize, offset=start)
    if ref.stride is None:
        return flat.reshape(ref.shape)
    item = ref.dtype.itemsize
    return np.lib.stride_tricks.as_strided(flat, ref.shape, tuple(x * item for x in ref.stride), writeable=False)


def _aliases(index: CheckpointIndex, patches: list[tuple[TensorRef, Value]], file: str | None = None) -> list[Alias]:
    """Every template tensor whose byte span overlaps a replaced tensor's (all pairs, not only neighbours).

    Whether it changes is decided exactly: its span is read, every patch is applied to it in write order,
    and its values are compared. A replaced tensor that does not read back its own replacement (two
    overlapping replacements that disagree) is an error. Only the replacements that overlap another
    tensor are computed here.
    """
    if not patches:
        return []
    file = file or index.files[0]
    others = [r for r in index.values() if r.in_place and r.numel and r.file == file]
    starts = np.array([r.offset for r in others], dtype=np.int64)
    ends = np.array([r.offset + r.span() for r in others], dtype=np.int64)
    touching: dict[int, list[int]] = {}
    for k, (ref, _data) in enumerate(patches):
        s, e = _range(ref)
        for i in np.nonzero((starts < e) & (ends > s))[0]:
            touching.setdefault(int(i), []).append(k)
    own = {ref.path: k for k, (ref, _) in enumerate(patches)}
    computed: dict[int, memoryview] = {}

    def data_of(k: int) -> memoryview:
        if k not in computed:
            ref, value = patches[k]
            computed[k] = _bytes(ref.path, ref, value)
        return computed[k]

    out = []
    with open(file, "rb") as fh:
        for i, ks in touching.items():
            ref = others[i]
            if ks == [own.get(ref.path)]:
                continue  # only its own patch touches it
            a, b = int(starts[i]), int(ends[i])
            fh.seek(a)
            before = fh.read(b - a)
            buf = bytearray(before)
            for k in ks:
                pref, data = patches[k][0], data_of(k)
                lo, hi = max(pref.offset, a), min(pref.offset + len(data), b)
                buf[lo - a:hi - a] = data[lo - pref.offset:hi - pref.offset]
            after = _decode(ref, buf, a)
            if ref.path in own:
                if after.tobytes() != bytes(data_of(own[ref.path])):
                    rivals = [patches[k][0].path for k in ks if patches[k][0].path != ref.path]
                    raise OutputError(f"{file}: template tensors {ref.path!r} and {', '.join(map(repr, rivals))} "
                                      "share storage and are replaced with values that disagree; replace only one of them")
                continue
            changed = after.tobytes() != _decode(ref, before, a).tobytes()
            out.append(Alias(ref.path, tuple(patches[k][0].path for k in ks), changed))
    return out


def aliased(index: CheckpointIndex, replacements: Mapping[str, Value]) -> list[Alias]:
    """Template tensors sharing stored bytes with the replaced ones (views, transposes, tied weights)."""
    if index.format in ("onnx", "tensorflow"):
        return []  # ONNX TensorProtos and TensorFlow bundle entries never share bytes: each holds its own
    by_file: dict[str, dict[str, Value]] = {}
    for path, value in replacements.items():
        by_file.setdefault(index[path].file, {})[path] = value
    return [a for f, reps in by_file.items() for a in _aliases(index, _check(index, reps, f), f)]


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


def _copy_patched(fh: BinaryIO, template: str, patches: list[tuple[TensorRef, Value]],
                  step: Callable[[int], None] | None = None) -> None:
    """The template copied (by the kernel where it can be), then each replacement computed and written."""
    source = open_source(template)
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


def _refuse_aliases(template: str, changed: list[Alias]) -> None:
    if changed:
        raise OutputError(f"{template}: " + "; ".join(f"replacing {', '.join(map(repr, a.shares_with))} would also change "
                                                      f"{a.path!r} (shared storage)" for a in changed)
                          + "; nothing written (allow it explicitly to write and report every changed tensor)")


def patch_copy(index: CheckpointIndex, out: str, replacements: Mapping[str, Value], *, force: bool = False,
               allow_aliased: bool = False, progress: Callable[[int, int], None] | None = None) -> str:
    """Copy ``index``'s file to ``out`` with the tensors at ``replacements``' paths overwritten.

    A replacement that would change another template tensor through shared storage is refused
    unless ``allow_aliased`` (the caller then reports ``aliased(...)``). A sharded template (HF index +
    shards) is copied into the folder ``out``: the index and every shard, each shard with its own
    replaced tensors, all committed together. ONNX templates have their own writer (protobuf lengths,
    external data files). A replacement is an array or a function computing it: computed one at a time
    while writing (a misfit then fails the write, and the atomic output leaves nothing behind).
    ``progress(n, total)`` follows the bytes copied and patched.
    """
    if index.format.startswith("sharded"):
        return _patch_sharded(index, out, replacements, force, allow_aliased)
    if index.format == "tensorflow":
        from .tensorflow.patch import patch_bundle

        return patch_bundle(index, out, replacements, force=force, progress=progress)
    if index.format == "onnx":
        from .onnx.patch import patch_onnx

        return patch_onnx(index, out, {k: v() if callable(v) else v for k, v in replacements.items()}, force=force)
    template = index.files[0]
    check_output(out, [template], force)
    patches = _check(index, replacements)
    if not allow_aliased:
        _refuse_aliases(template, [a for a in _aliases(index, patches) if a.changes])
    total = open_source(template).size + sum(ref.nbytes for ref, _ in patches)
    step = (lambda n: progress(n, total)) if progress is not None else None
    with atomic_output(out) as fh:
        _copy_patched(fh, template, patches, step)
    return out


def _patch_sharded(index: CheckpointIndex, out: str, replacements: Mapping[str, Value], force: bool,
                   allow_aliased: bool) -> str:
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
            raise OutputError(f"{target}: already exists; pass --force (API: force=True) to replace it")
    by_file: dict[str, dict[str, Value]] = {}
    for path, value in replacements.items():
        by_file.setdefault(index[path].file, {})[path] = value
    plans = {f: _check(index, by_file.get(f, {}), f) for f in index.files[1:]}
    if not allow_aliased:
        _refuse_aliases(index.files[0], [a for f, p in plans.items() for a in _aliases(index, p, f) if a.changes])
    with atomic_files(out) as files:
        for f, name in list(zip(index.files, names))[1:] + [(index.files[0], names[0])]:  # the index last
            with files.open(name) as fh:
                _copy_patched(fh, f, plans.get(f, []))
    return os.path.join(out, names[0])
