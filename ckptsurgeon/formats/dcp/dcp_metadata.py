"""The ``.metadata`` pickle of a PyTorch Distributed Checkpoint, read without torch and without running it.

``torch.distributed.checkpoint`` pickles a ``Metadata`` dataclass: per state-dict key a
``TensorStorageMetadata`` (dtype, full size, chunks with offsets and sizes) or a
``BytesStorageMetadata``, and per chunk or bytes item a ``_StorageInfo`` (file, offset, length).
The allowlist unpickler (``safepickle``) admits exactly those classes, as the inert records below:
each only stores the fields it is given; nothing of torch is imported and no method of the file's
choosing runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...dtype_lite import LiteDtype
from ...errors import FormatError
from ..pytorch.safepickle import safe_load, torch_dtype_of

__all__ = ["ChunkInfo", "TensorInfo", "StorageInfo", "DcpMetadata", "load_metadata", "STAND_INS"]


class _Record:
    """An inert dataclass stand-in: NEWOBJ makes it, BUILD hands it its fields (a dict, or a tuple)."""

    _tuple_fields: tuple[str, ...] = ()

    def __new__(cls, *_args: Any, **_kw: Any) -> _Record:
        return object.__new__(cls)

    def __init__(self, *_args: Any, **_kw: Any) -> None:  # NEWOBJ passes no args for dataclasses
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)) \
                and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, tuple) and self._tuple_fields and len(state) == len(self._tuple_fields):
            state = dict(zip(self._tuple_fields, state))
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise FormatError(f"malformed {type(self).__name__} record in DCP metadata")
        self.__dict__.update(state)

    def get(self, name: str, default: Any = None) -> Any:
        return self.__dict__.get(name, default)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class _Metadata(_Record):
    pass


class _TensorStorageMetadata(_Record):
    pass


class _BytesStorageMetadata(_Record):
    pass


class _ChunkStorageMetadata(_Record):
    pass


class _TensorProperties(_Record):
    # torch >= 2.1 pickles (dtype, layout, requires_grad, memory-format code, pin_memory)
    _tuple_fields = ("dtype", "layout", "requires_grad", "memory_format", "pin_memory")


class _StorageMeta(_Record):
    pass


class _StorageInfo(_Record):
    pass


class _MetadataIndex(_Record):
    """A dict key in ``storage_data``: hashable by what identifies a chunk (fqn, offset)."""

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _MetadataIndex) and self.key() == other.key()

    def key(self) -> tuple[Any, tuple[int, ...] | None]:
        offset = self.get("offset")
        return self.get("fqn"), None if offset is None else tuple(offset)


def _enum_code(value: Any) -> Any:
    """``_MEM_FORMAT_ENCODING(value)``: kept as its plain value."""
    if not isinstance(value, (int, str)):
        raise FormatError(f"malformed memory-format code {value!r} in DCP metadata")
    return value


def _layout(name: Any) -> str:
    """``torch.serialization._get_layout('torch.strided')``: kept as its name."""
    if not isinstance(name, str):
        raise FormatError(f"malformed layout {name!r} in DCP metadata")
    return name


def _path(*parts: Any) -> str:
    """``pathlib.PosixPath(...)`` (the checkpoint_id torch records): kept as a string."""
    if not all(isinstance(p, str) for p in parts):
        raise FormatError("malformed path in DCP metadata")
    return "/".join(parts)


_DCP = "torch.distributed.checkpoint"
# Exact (module, name) -> stand-in. Module paths as the torch versions that wrote them name them.
STAND_INS: dict[tuple[str, str], Any] = {
    (f"{_DCP}.metadata", "Metadata"): _Metadata,
    (f"{_DCP}.metadata", "TensorStorageMetadata"): _TensorStorageMetadata,
    (f"{_DCP}.metadata", "BytesStorageMetadata"): _BytesStorageMetadata,
    (f"{_DCP}.metadata", "ChunkStorageMetadata"): _ChunkStorageMetadata,
    (f"{_DCP}.metadata", "TensorProperties"): _TensorProperties,
    (f"{_DCP}.metadata", "MetadataIndex"): _MetadataIndex,
    (f"{_DCP}.metadata", "StorageMeta"): _StorageMeta,  # torch >= 2.4
    (f"{_DCP}.metadata", "_MEM_FORMAT_ENCODING"): _enum_code,
    (f"{_DCP}.filesystem", "_StorageInfo"): _StorageInfo,
    # torch 2.1-2.3 kept TensorProperties with ShardedTensor's metadata
    ("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties"): _TensorProperties,
    ("torch.distributed._shard.sharded_tensor.metadata", "MEM_FORMAT_ENCODING"): _enum_code,
    ("torch.serialization", "_get_layout"): _layout,
    ("pathlib", "PosixPath"): _path,
    ("pathlib", "PurePosixPath"): _path,
    ("pathlib._local", "PosixPath"): _path,  # pickled by Python >= 3.13
    ("pathlib._local", "PurePosixPath"): _path,
}


@dataclass(frozen=True)
class StorageInfo:
    """Where one chunk or bytes item is: a file of the folder, an offset and a length."""

    relative_path: str
    offset: int
    length: int
    transforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkInfo:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    storage: StorageInfo


@dataclass(frozen=True)
class TensorInfo:
    fqn: str
    dtype: LiteDtype
    shape: tuple[int, ...]
    chunks: tuple[ChunkInfo, ...]


@dataclass
class DcpMetadata:
    """What the reader needs: tensors with their chunks, bytes items, and each key's nested path."""

    tensors: list[TensorInfo]
    bytes_items: dict[str, StorageInfo]
    paths: dict[str, tuple[Any, ...]]
    version: str | None = None


def _ints(value: Any, what: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                       for v in value):
        raise FormatError(f"{where}: malformed {what} {value!r}")
    return tuple(value)


def _storage(info: Any, fqn: str, where: str) -> StorageInfo:
    if not isinstance(info, _StorageInfo):
        raise FormatError(f"{where}: storage entry of {fqn!r} is not a _StorageInfo record")
    rel, offset, length = info.get("relative_path"), info.get("offset"), info.get("length")
    if not isinstance(rel, str) or not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise FormatError(f"{where}: malformed storage entry of {fqn!r}: {info!r}")
    transforms = info.get("transform_descriptors") or ()
    if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, str) for t in transforms):
        raise FormatError(f"{where}: malformed transform descriptors of {fqn!r}")
    return StorageInfo(rel, offset, length, tuple(transforms))


def load_metadata(data: bytes, where: str, allow_globals: Sequence[str] = ()) -> DcpMetadata:
    """Unpickle ``.metadata`` through the allowlist and check its structure."""
    md = safe_load(data, where, allow_globals=allow_globals, extra_globals=STAND_INS)
    if not isinstance(md, _Metadata):
        raise FormatError(f"{where}: not a torch.distributed.checkpoint Metadata pickle")
    sdm, storage = md.get("state_dict_metadata"), md.get("storage_data")
    if not isinstance(sdm, dict) or not isinstance(storage, dict):
        raise FormatError(f"{where}: Metadata lacks state_dict_metadata or storage_data")
    by_key: dict[tuple[Any, Any], StorageInfo] = {}
    for idx, info in storage.items():
        if not isinstance(idx, _MetadataIndex) or not isinstance(idx.get("fqn"), str):
            raise FormatError(f"{where}: malformed storage_data key {idx!r}")
        by_key[idx.key()] = _storage(info, idx.get("fqn"), where)
    planner = md.get("planner_data")
    paths = {k: tuple(v) for k, v in planner.items() if isinstance(k, str) and isinstance(v, (tuple, list))} \
        if isinstance(planner, dict) else {}
    tensors: list[TensorInfo] = []
    items: dict[str, StorageInfo] = {}
    for fqn, entry in sdm.items():
        if not isinstance(fqn, str):
            raise FormatError(f"{where}: state_dict_metadata key {fqn!r} is not a string")
        if isinstance(entry, _BytesStorageMetadata):
            if (fqn, None) not in by_key:
                raise FormatError(f"{where}: bytes item {fqn!r} has no storage entry")
            items[fqn] = by_key[(fqn, None)]
            continue
        if not isinstance(entry, _TensorStorageMetadata):
            raise FormatError(f"{where}: entry {fqn!r} is neither tensor nor bytes metadata")
        props = entry.get("properties")
        dtype = torch_dtype_of(props.get("dtype")) if isinstance(props, _TensorProperties) else None
        if dtype is None:
            raise FormatError(f"{where}: tensor {fqn!r} has no dtype torch can name")
        shape = _ints(entry.get("size"), f"size of {fqn!r}", where)
        chunks = []
        for chunk in entry.get("chunks") or []:
            if not isinstance(chunk, _ChunkStorageMetadata):
                raise FormatError(f"{where}: tensor {fqn!r} has a malformed chunk record")
            offsets = _ints(chunk.get("offsets"), f"chunk offsets of {fqn!r}", where)
            sizes = _ints(chunk.get("sizes"), f"chunk sizes of {fqn!r}", where)
            info = by_key.get((fqn, offsets))
            if info is None:
                raise FormatError(f"{where}: chunk of {fqn!r} at offsets {list(offsets)} has no storage entry")
            chunks.append(ChunkInfo(offsets, sizes, info))
        tensors.append(TensorInfo(fqn, dtype, shape, tuple(chunks)))
    version = md.get("version")
    return DcpMetadata(tensors, items, paths, version if isinstance(version, str) else None)
