"""Turn an allowlist-unpickled PyTorch object into a CheckpointIndex (zip and legacy share this)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ...dtype_lite import LiteDtype
from ...errors import FormatError
from ...lazy import is_ndarray
from ...index import CheckpointIndex, IndexBuilder, TensorRef
from ...scopes import join_path
from .safepickle import LazyTensor
from ..tree import flatten, is_optimizer_path, to_jsonable, work_budget

__all__ = ["StorageBytes", "build_torch_index", "optimizer_entries"]


class StorageBytes(NamedTuple):  # a tuple: one per storage, 100,000 in a large checkpoint
    """Where one storage's bytes are: absolute offset in ``file`` and their length."""

    file: str
    offset: int
    nbytes: int


def _segments(segs: list[Any]) -> list[str]:
    out: list[str] = []
    for s in segs:
        out.extend(str(s).split(".") if isinstance(s, str) else [str(s)])
    return out


def _path_and_key(segs: list[Any]) -> tuple[str, str]:
    """The scope path (every '.' of a string key is a scope) and the original dotted key."""
    if len(segs) == 1 and type(segs[0]) is str or all(type(s) is str for s in segs):
        key = ".".join(segs)
        if key and ".." not in key and key[0] != "." and key[-1] != ".":  # no empty segment: the fast path
            return key.replace(".", "/"), key
    return join_path(_segments(segs)) or "_", ".".join(str(s) for s in segs) or "_"


_ORDERED: dict[tuple[LiteDtype, str], LiteDtype] = {}  # (dtype, byte order) -> dtype in that order


def _tensor_ref(path: str, key: str, t: LazyTensor, where: StorageBytes, byteorder: str, optimizer: bool) -> TensorRef:
    st = t.storage
    logical = t.dtype if t.dtype is not None else st.dtype
    dtype = _ORDERED.get((logical, byteorder))
    if dtype is None:
        dtype = logical.newbyteorder(byteorder) if logical.itemsize > 1 and logical.kind != "b" else logical
        _ORDERED[(logical, byteorder)] = dtype
    item = dtype.itemsize
    if st.numel * st.dtype.itemsize > where.nbytes:
        raise FormatError(
            f"{where.file}: storage {st.key!r} declares {st.numel} elements ({st.numel * st.dtype.itemsize} bytes) "
            f"but holds {where.nbytes} bytes (tensor {key!r})"
        )
    view_offset = 0
    numel = 1
    for n in t.shape:
        numel *= n
    contiguous = _is_contiguous(t.shape, t.stride)
    if contiguous:
        extent = numel
    else:
        extent = 0 if numel == 0 else 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
    if st.view is not None:
        view_offset, view_size = st.view[1], st.view[2]
        if numel and t.offset + extent > view_size:
            raise FormatError(f"{where.file}: tensor {key!r} (shape {list(t.shape)}, offset {t.offset}) reaches past "
                              f"its storage view ({view_size} elements)")
    first = view_offset + t.offset
    if numel and (first + extent) * item > where.nbytes:
        raise FormatError(
            f"{where.file}: tensor {key!r} (shape {list(t.shape)}, offset {t.offset}) reaches past the end of "
            f"storage {st.key!r} ({where.nbytes} bytes)"
        )
    return TensorRef(path, key, dtype, t.shape, where.file, where.offset + first * item,
                     None if contiguous else t.stride, optimizer)


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(stride)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _is_optimizer_state(value: Any) -> bool:
    """``torch.optim.Optimizer.state_dict()``: ``{"state": {...}, "param_groups": [...]}``."""
    return isinstance(value, dict) and "state" in value and isinstance(value.get("param_groups"), list) \
        and isinstance(value["state"], dict)


def optimizer_entries(obj: Any) -> set[Any]:
    """Top-level entries holding optimizer state by structure, whatever their name (``optimizer_state``,
    ``opt``): an optimizer's state dict, or a list of them (Lightning's ``optimizer_states``)."""
    if not isinstance(obj, dict):
        return set()
    return {k for k, v in obj.items() if _is_optimizer_state(v)
            or (isinstance(v, (list, tuple)) and v and all(_is_optimizer_state(x) for x in v))}


def build_torch_index(
    obj: Any, storages: Mapping[str, StorageBytes], *, file: str, format: str, byteorder: str,
    header_sha256: str | Callable[[], str] = "", pickle_bytes: int = 0,
) -> CheckpointIndex:
    """Every LazyTensor (and plain numpy array) becomes a TensorRef; other leaves become metadata.

    The walk is bounded by the size of the pickle (``pickle_bytes``): cycles and graphs of shared
    containers that expand to far more paths than the pickle has bytes are refused. One tensor shared
    under several paths gets one location (or one loader), so listings show it once with its aliases.
    """
    builder = IndexBuilder(file)
    metadata: dict[str, Any] = {}
    states = optimizer_entries(obj)
    loaders: dict[int, Any] = {}
    leaves = flatten(obj, lambda v: isinstance(v, LazyTensor) or is_ndarray(v), work_budget(pickle_bytes), file)
    for segs, leaf in leaves:
        path, key = _path_and_key(segs)
        optimizer = is_optimizer_path(path) or (bool(segs) and segs[0] in states)
        if isinstance(leaf, LazyTensor):
            where = storages.get(leaf.storage.view[0] if leaf.storage.view else leaf.storage.key)
            if where is None:
                raise FormatError(f"{file}: tensor {key!r} refers to storage {leaf.storage.key!r}, which the file lacks")
            builder.add(_tensor_ref(path, key, leaf, where, byteorder, optimizer))
        elif is_ndarray(leaf):
            arr = leaf
            loader = loaders.setdefault(id(arr), lambda a=arr: a)
            builder.add(TensorRef(path=path, key=key, dtype=arr.dtype, shape=arr.shape, file=file,
                                  optimizer=optimizer, loader=loader))
        else:
            metadata[path] = to_jsonable(leaf)
    stored = getattr(obj, "_metadata", None)  # state_dict._metadata: ckptsurgeon's writer keeps its metadata there
    ours = stored.get("ckptsurgeon") if isinstance(stored, dict) else None
    if isinstance(ours, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in ours.items()):
        metadata["__metadata__"] = dict(ours)
    return builder.build(format=format, files=[file], metadata=metadata, key_sep=".",
                         header_sha256=header_sha256)
