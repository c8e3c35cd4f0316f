"""HDF5 read defensively: no link is followed out of the file, no dataset reads another file,
declared sizes are checked against stored sizes, and h5py/libhdf5 errors become input errors."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import h5py
import numpy as np

from ...dtypes import resolve_dtype
from ...errors import FormatError, UnsafeCheckpointError
from ...index import TensorRef

__all__ = ["open_h5", "child", "walk", "dataset_ref", "DTYPE_ATTR"]

DTYPE_ATTR = "ckptsurgeon_dtype"  # our writer stores bfloat16/float8 bits as uints and names the dtype here
BOMB_RATIO = 100
BOMB_MIN = 16 << 20


def open_h5(source: str | Callable[[], Any], where: str) -> h5py.File:
    """Open read-only; ``source`` is a path or a function returning a file object."""
    try:
        if callable(source):
            return h5py.File(source(), "r")
        return h5py.File(source, "r")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise FormatError(f"{where}: damaged or unreadable HDF5 file: {exc}") from None


def child(group: h5py.Group, name: str, where: str) -> Any:
    """``group[name]`` one segment at a time, refusing external links and never following soft links."""
    node = group
    for seg in [s for s in name.split("/") if s]:
        try:
            link = node.get(seg, getlink=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise FormatError(f"{where}: damaged HDF5 object {node.name}/{seg}: {exc}") from None
        if link is None:
            raise FormatError(f"{where}: {node.name}/{seg} is named but missing")
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeCheckpointError(
                f"{where}: {node.name}/{seg} is an external link to {link.filename}:{link.path}; refusing to read other files")
        if isinstance(link, h5py.SoftLink):
            raise UnsafeCheckpointError(f"{where}: {node.name}/{seg} is a soft link to {link.path}; ckptsurgeon follows no links")
        try:
            node = node[seg]
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise FormatError(f"{where}: damaged HDF5 object {node.name}/{seg}: {exc}") from None
    return node


def walk(group: h5py.Group, where: str, prefix: str = "") -> Iterator[tuple[str, h5py.Dataset]]:
    """Every dataset under ``group`` as (relative path, dataset), links refused, in stored order."""
    try:
        names = list(group.keys())
    except (OSError, RuntimeError) as exc:
        raise FormatError(f"{where}: damaged HDF5 group {group.name}: {exc}") from None
    for name in names:
        node = child(group, name, where)
        rel = f"{prefix}{name}"
        if isinstance(node, h5py.Group):
            yield from walk(node, where, rel + "/")
        elif isinstance(node, h5py.Dataset):
            yield rel, node


def _check(dset: h5py.Dataset, where: str) -> np.dtype:
    name = dset.name
    try:
        if dset.is_virtual:
            raise UnsafeCheckpointError(f"{where}: dataset {name} is a virtual dataset reading other files; refusing")
        if dset.external:
            raise UnsafeCheckpointError(f"{where}: dataset {name} keeps its data in external file(s); refusing")
        dtype = dset.dtype
        shape = dset.shape
        stored = dset.id.get_storage_size()
    except (OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{where}: damaged dataset {name}: {exc}") from None
    if shape is None or dtype.kind not in "biufc" or dtype.fields:
        raise FormatError(f"{where}: dataset {name} holds {dtype} data, not a numeric tensor")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > BOMB_MIN and stored * BOMB_RATIO < declared:
        raise UnsafeCheckpointError(
            f"{where}: dataset {name} declares {declared} bytes but stores {stored}; refusing a shape bomb")
    tag = dset.attrs.get(DTYPE_ATTR)
    if tag is not None:
        real = resolve_dtype(tag.decode() if isinstance(tag, bytes) else str(tag))
        if real.itemsize != dtype.itemsize:
            raise FormatError(f"{where}: dataset {name}: {DTYPE_ATTR}={tag!r} does not fit its {dtype} storage")
        return real
    return dtype


def dataset_ref(dset: h5py.Dataset, *, path: str, key: str, file: str, where: str,
                source: str | Callable[[], Any], optimizer: bool = False) -> TensorRef:
    """A lazy reference: the dataset is read (by name, through h5py) only when asked for."""
    dtype = _check(dset, where)
    name = dset.name

    def load() -> np.ndarray:
        with open_h5(source, where) as f:
            try:
                arr = child(f, name, where)[()]
            except (OSError, ValueError, RuntimeError) as exc:
                raise FormatError(f"{where}: cannot read dataset {name}: {exc}") from None
        arr = np.asarray(arr)
        return arr.view(dtype) if arr.dtype != dtype else arr

    offset = dset.id.get_offset() if dset.chunks is None and not dset.compression else None
    base = getattr(source, "base_offset", 0) if callable(source) else 0
    return TensorRef(path=path, key=key, dtype=dtype, shape=tuple(dset.shape), file=file, optimizer=optimizer,
                     loader=load, offset=(offset or 0) + base, raw=offset is not None)
