"""numpy ``.npz`` archives and ``.npy`` files, read without pickle (object arrays are refused)."""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import FormatError, OutputError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef
from ...scopes import join_path, split_key
from ...source import open_source
from ..tree import is_optimizer_path
from ..zipsafe import SafeZip

__all__ = ["sniff_npy", "sniff_names", "read_npz", "read_npy", "write_npz"]

NPY_MAGIC = b"\x93NUMPY"


def sniff_npy(head: bytes) -> bool:
    return head.startswith(NPY_MAGIC)


def sniff_names(names: list[str]) -> bool:
    return bool(names) and all(n.endswith(".npy") for n in names)


def _parse_header(stream: Any, where: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Parse a .npy header from ``stream``; returns dtype, shape, fortran order, header length."""
    try:
        version = np.lib.format.read_magic(stream)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(stream, max_header_size=100_000)
    except Exception as exc:  # numpy raises ValueError/SyntaxError on damaged headers
        raise FormatError(f"{where}: invalid .npy header: {exc}") from None
    if dtype.hasobject:
        raise UnsafeCheckpointError(f"{where}: object array (needs pickle); refusing")
    return dtype, tuple(shape), bool(fortran), stream.tell()


def _fortran_stride(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(shape) < 2:
        return None
    stride, acc = [], 1
    for n in shape:
        stride.append(acc)
        acc *= n
    return tuple(stride)


def _key_sep(keys: list[str]) -> str:
    return "/" if any("/" in k for k in keys) and not any("." in k for k in keys) else "."


METADATA_MEMBER = "__metadata__"  # a 0-d unicode array holding a JSON object of strings (no pickle needed)


def _metadata(path: str, zf: SafeZip) -> dict[str, str] | None:
    """The writer's metadata member, if it is one (a small unicode JSON object of strings)."""
    name = METADATA_MEMBER + ".npy"
    if name not in zf.members or zf.members[name].size > 64 << 20:
        return None
    arr = _load_member(path, name, f"{path}:{name}")
    if arr.dtype.kind != "U" or arr.shape != ():
        return None
    try:
        meta = json.loads(str(arr))
    except ValueError:
        return None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return None
    return meta


def read_npz(path: str) -> CheckpointIndex:
    zf = SafeZip(path)
    builder = IndexBuilder(path)
    try:
        meta = _metadata(path, zf)
        names = [n for n in zf.names() if meta is None or n != METADATA_MEMBER + ".npy"]
        keys = [n[:-4] for n in names]
        sep = _key_sep(keys)
        digest = zf.directory_sha256()
        for name, key in zip(names, keys):
            member = zf.members[name]
            where = f"{path}:{name}"
            head = io.BytesIO(zf.read_head(name, min(member.size, 100_016)))
            dtype, shape, fortran, hlen = _parse_header(head, where)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if hlen + nbytes != member.size:
                raise FormatError(f"{where}: member holds {member.size - hlen} data bytes, {dtype} x {list(shape)} needs {nbytes}")
            p = join_path(split_key(key, sep))
            common = dict(path=p, key=key, dtype=dtype, shape=shape, file=path, optimizer=is_optimizer_path(p))
            if member.stored:
                builder.add(TensorRef(offset=member.data_offset + hlen, stride=_fortran_stride(shape) if fortran else None, **common))
            else:
                builder.add(TensorRef(loader=lambda n=name, w=where: _load_member(path, n, w), **common))
    finally:
        zf.close()
    return CheckpointIndex(builder.refs, format="npz", files=[path], key_sep=sep, header_sha256=digest,
                           metadata={} if meta is None else {"__metadata__": meta})


def _load_member(path: str, name: str, where: str) -> np.ndarray:
    zf = SafeZip(path)
    try:
        return zf.read_with(name, lambda fh: np.lib.format.read_array(fh, allow_pickle=False))
    except ValueError as exc:
        raise FormatError(f"{where}: {exc}") from None
    finally:
        zf.close()


def read_npy(path: str) -> CheckpointIndex:
    src = open_source(path)
    with io.BufferedReader(src.window(), 1 << 16) as fh:
        dtype, shape, fortran, hlen = _parse_header(fh, path)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if hlen + nbytes > src.size:
        raise FormatError(f"{path}: truncated .npy: {dtype} x {list(shape)} needs {nbytes} bytes")
    key = os.path.splitext(os.path.basename(path))[0]
    ref = TensorRef(path=join_path([key]), key=key, dtype=dtype, shape=shape, file=path, offset=hlen,
                    stride=_fortran_stride(shape) if fortran else None)
    return CheckpointIndex([ref], format="npy", files=[path])


def write_npz(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """Uncompressed npz (members stay readable in place). Dtypes numpy cannot name are refused.

    ``metadata`` goes into a ``__metadata__`` member: a 0-d unicode array of JSON, which
    ``numpy.load(..., allow_pickle=False)`` reads (``json.loads(str(npz["__metadata__"]))``).
    One pass: each tensor is read once, checked, written (a refusal fails the atomic write, nothing is left).
    """
    if METADATA_MEMBER in tensors:
        raise OutputError(f"tensor name {METADATA_MEMBER!r} is reserved in .npz outputs for the metadata; rename it")
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        if metadata:
            text = json.dumps({str(k): str(v) for k, v in metadata.items()}, sort_keys=True)
            with zf.open(METADATA_MEMBER + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.array(text), allow_pickle=False)
        for key, arr in tensors.items():
            if arr.dtype.kind == "V" or arr.dtype.name in _ML_DTYPE_NAMES:
                raise OutputError(
                    f"tensor {key!r}: .npz cannot hold {arr.dtype.name} faithfully (numpy.load would return raw bytes); "
                    "write safetensors instead (-o out.safetensors)"
                )
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)


_ML_DTYPE_NAMES = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"}
