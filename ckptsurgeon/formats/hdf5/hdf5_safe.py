"""HDF5 read defensively: a plain file's metadata is read in Python (``h5plain``), any other file's by libhdf5 in a
child process only (``h5tree``/``h5probe``);
no link is followed out of the file, no dataset reads another file, declared sizes are checked
against stored sizes, and plain datasets are read by byte range without libhdf5 at all."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...dtype_lite import LiteDtype, as_numpy
from ...dtypes import resolve_dtype
from ...errors import FormatError, UnsafeCheckpointError
from ...index import TensorRef
from .h5tree import Dataset, ExternalLink, Group, H5Source, HardLink, SoftLink, describe_file, read_dataset_bytes

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["open_h5", "child", "walk", "dataset_ref", "DTYPE_ATTR"]

DTYPE_ATTR = "ckptsurgeon_dtype"  # our writer stores bfloat16/float8 bits as uints and names the dtype here
BOMB_RATIO = 100
BOMB_MIN = 16 << 20


def open_h5(source: H5Source) -> Group:
    """The file's metadata tree (read in Python if the file is plain, else parsed by libhdf5 in a child process
    with time and memory limits)."""
    return describe_file(source)


def child(group: Group, name: str, where: str) -> Any:
    """``group[name]`` one segment at a time, refusing external links and never following soft links."""
    node: Any = group
    for seg in [s for s in name.split("/") if s]:
        if not isinstance(node, Group):
            raise FormatError(f"{where}: {node.name} is not a group (looking for {seg!r})")
        link = node.get(seg, getlink=True)
        if link is None:
            raise FormatError(f"{where}: {node.name.rstrip('/')}/{seg} is named but missing")
        if isinstance(link, ExternalLink):
            raise UnsafeCheckpointError(
                f"{where}: {node.name.rstrip('/')}/{seg} is an external link to {link.filename}:{link.path}; "
                "refusing to read other files")
        if isinstance(link, SoftLink):
            raise UnsafeCheckpointError(
                f"{where}: {node.name.rstrip('/')}/{seg} is a soft link to {link.path}; ckptsurgeon follows no links")
        if not isinstance(link, HardLink):
            raise FormatError(f"{where}: {node.name.rstrip('/')}/{seg} is a link of an unsupported kind")
        node = node.get(seg)
        if node is None:
            raise FormatError(f"{where}: damaged HDF5 object {group.name.rstrip('/')}/{name}")
    return node


def walk(group: Group, where: str, prefix: str = "") -> Iterator[tuple[str, Dataset]]:
    """Every dataset under ``group`` as (relative path, dataset), links refused, in stored order."""
    for name in group.keys():
        node = child(group, name, where)
        rel = f"{prefix}{name}"
        if isinstance(node, Group):
            yield from walk(node, where, rel + "/")
        elif isinstance(node, Dataset):
            yield rel, node


def _check(dset: Dataset, where: str) -> np.dtype | LiteDtype:
    name = dset.name
    if dset.virtual:
        raise UnsafeCheckpointError(f"{where}: dataset {name} is a virtual dataset reading other files; refusing")
    if dset.external:
        raise UnsafeCheckpointError(f"{where}: dataset {name} keeps its data in external file(s); refusing")
    if dset.error:
        raise FormatError(f"{where}: damaged dataset {name}: {dset.error}")
    if dset.shape is None or dset.dtype is None:
        raise FormatError(f"{where}: dataset {name} holds {dset.dtype_text} data, not a numeric tensor")
    dtype = dset.dtype
    declared = math.prod(dset.shape) * dtype.itemsize
    if declared > BOMB_MIN and dset.storage * BOMB_RATIO < declared:
        raise UnsafeCheckpointError(
            f"{where}: dataset {name} declares {declared} bytes but stores {dset.storage}; refusing a shape bomb")
    tag = dset.attrs.get(DTYPE_ATTR)
    if tag is not None:
        if not isinstance(tag, str):
            raise FormatError(f"{where}: dataset {name}: {DTYPE_ATTR}={tag!r} is not a dtype name")
        real = resolve_dtype(tag)
        if real.itemsize != dtype.itemsize:
            raise FormatError(f"{where}: dataset {name}: {DTYPE_ATTR}={tag!r} does not fit its {dtype} storage")
        return real
    return dtype


def dataset_ref(dset: Dataset, *, path: str, key: str, file: str, where: str,
                source: H5Source, optimizer: bool = False) -> TensorRef:
    """A lazy reference. A plain contiguous dataset is one byte range, read directly (no libhdf5);
    any other (chunked, compressed, compact) is read by libhdf5 in a child process when asked for."""
    dtype = _check(dset, where)
    assert dset.shape is not None
    nbytes = math.prod(dset.shape) * dtype.itemsize
    if nbytes == 0:
        shape = dset.shape
        return TensorRef(path=path, key=key, dtype=dtype, shape=shape, file=file, optimizer=optimizer,
                         loader=lambda: np.zeros(shape, as_numpy(dtype)), raw=False)
    if dset.contiguous and source.direct:
        assert dset.offset is not None
        if dset.storage != nbytes or dset.offset < 0 or dset.offset + nbytes > source.size:
            raise FormatError(f"{where}: dataset {dset.name} ({nbytes} bytes at {dset.offset}) does not lie within "
                              f"the file's {source.size} bytes (stored size {dset.storage})")
        return TensorRef(path=path, key=key, dtype=dtype, shape=dset.shape, file=file, optimizer=optimizer,
                         offset=source.offset + dset.offset)

    def load() -> np.ndarray:
        arr, want = read_dataset_bytes(source, dset), as_numpy(dtype)
        return arr.view(want) if arr.dtype != want else arr

    return TensorRef(path=path, key=key, dtype=dtype, shape=dset.shape, file=file, optimizer=optimizer,
                     loader=load, raw=False)
