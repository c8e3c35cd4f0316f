"""PyTorch Distributed Checkpoint folders (``.metadata`` + ``__{rank}_{n}.distcp``), read without torch.

Opening reads only ``.metadata`` (and the small non-tensor items). Each tensor is a lazy reference
whose loader reassembles the full tensor from its chunks (FSDP / DTensor / ShardedTensor shards)
when it is read: every chunk is a ``torch.save`` archive at an offset of a ``.distcp`` file, read in
place through the zip and pickle allowlists. Chunks must tile the tensor exactly (checked at open).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ... import location as loc
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef
from ...scopes import join_path
from ...source import open_source
from ..pytorch.safepickle import LazyTensor, safe_load, storage_from_pid
from ..pytorch.torch_common import StorageBytes, build_torch_index
from ..tree import flatten, is_optimizer_path, to_jsonable
from ..magic import DCP_METADATA as METADATA, sniff_dcp_folder as sniff_folder
from ..zipsafe import SafeZip
from .dcp_metadata import ChunkInfo, DcpMetadata, StorageInfo, TensorInfo, load_metadata

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["FORMAT", "METADATA", "sniff_folder", "read"]

FORMAT = "dcp"
MAX_METADATA = 1 << 30
MAX_BYTES_ITEM = 16 << 20  # non-tensor items larger than this are listed by size, not read


def _file(folder: str, info: StorageInfo, fqn: str) -> str:
    rel = info.relative_path
    if not rel or "/" in rel or "\\" in rel or rel in (".", "..") or "\0" in rel:
        raise UnsafeCheckpointError(f"{folder}: item {fqn!r} names file {rel!r} outside the checkpoint folder; refusing")
    if info.transforms:
        raise FormatError(f"{folder}: item {fqn!r} is stored with transforms {list(info.transforms)} "
                          "(compression extensions are not supported); re-save without them")
    return loc.join(folder, rel)


def _saved_object(file: str, info: StorageInfo, what: str, allow_globals: Sequence[str] = ()) -> tuple[Any, dict]:
    """The object a ``torch.save`` archive at ``info`` holds, with its storages located in ``file``."""
    zf = SafeZip(file, info.offset, info.length)
    try:
        pkls = [n for n in zf.names() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise FormatError(f"{file}: {what} at byte {info.offset} is not a torch.save archive "
                              "(only DCP's default torch_save serialization is supported)")
        root = pkls[0][: -len("data.pkl")]
        storages = {}
        for name, member in zf.members.items():
            if name.startswith(root + "data/"):
                if not member.stored:
                    raise UnsafeCheckpointError(f"{file}: {what}: storage {name!r} is compressed; refusing")
                storages[name[len(root + "data/"):]] = StorageBytes(file, member.data_offset, member.size)
        obj = safe_load(zf.read(pkls[0]), f"{file}:{what}", storage_from_pid, allow_globals)
    finally:
        zf.close()
    return obj, storages


def _read_chunk(folder: str, t: TensorInfo, chunk: ChunkInfo) -> TensorRef:
    """The chunk's stored tensor as a plain reference into its ``.distcp`` file."""
    file = _file(folder, chunk.storage, t.fqn)
    what = f"chunk of {t.fqn!r} at {list(chunk.offsets)}"
    obj, storages = _saved_object(file, chunk.storage, what)
    if not isinstance(obj, LazyTensor):
        raise FormatError(f"{file}: {what} does not hold a tensor")
    ref = build_torch_index(obj, storages, file=file, format="pytorch", byteorder="<")["_"]
    if ref.shape != chunk.sizes or t.dtype.newbyteorder("=") != ref.dtype_spec.newbyteorder("="):
        raise FormatError(f"{file}: {what} holds {ref.dtype_name} {list(ref.shape)}, the metadata says "
                          f"{t.dtype.name} {list(chunk.sizes)}")
    return ref


def _check_tiling(folder: str, t: TensorInfo) -> None:
    """Chunks inside the tensor, not overlapping, covering every element."""
    where = f"{folder}/{METADATA}"
    if not t.chunks:
        raise FormatError(f"{where}: tensor {t.fqn!r} has no chunks")
    total = 0
    boxes = []
    for c in t.chunks:
        if len(c.offsets) != len(t.shape) or len(c.sizes) != len(t.shape):
            raise FormatError(f"{where}: chunk of {t.fqn!r} has {len(c.offsets)} dimensions, the tensor {len(t.shape)}")
        if any(o + s > n for o, s, n in zip(c.offsets, c.sizes, t.shape)):
            raise FormatError(f"{where}: chunk of {t.fqn!r} at {list(c.offsets)} size {list(c.sizes)} "
                              f"lies outside the tensor {list(t.shape)}")
        total += math.prod(c.sizes)
        boxes.append(c)
    boxes.sort(key=lambda c: c.offsets)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if t.shape and b.offsets[0] >= a.offsets[0] + a.sizes[0]:
                break
            if math.prod(a.sizes) and math.prod(b.sizes) and all(
                    bo < ao + asz and ao < bo + bsz for ao, asz, bo, bsz in zip(a.offsets, a.sizes, b.offsets, b.sizes)):
                raise FormatError(f"{where}: chunks of {t.fqn!r} at {list(a.offsets)} and {list(b.offsets)} overlap")
    if total != math.prod(t.shape):
        raise FormatError(f"{where}: chunks of {t.fqn!r} cover {total} of its {math.prod(t.shape)} elements")


def _read_into(ref: TensorRef, out: np.ndarray) -> None:
    """Fill ``out`` (a C-contiguous block of the full tensor) with the chunk's bytes, copying once."""
    src = open_source(ref.file)
    readinto = getattr(src, "readinto", None)
    if ref.stride is None and readinto is not None and ref.dtype.isnative:
        readinto(ref.offset, out.reshape(-1).view(np.uint8))
    else:
        out[...] = ref.numpy()


def _assembler(folder: str, t: TensorInfo):
    def load() -> np.ndarray:
        if len(t.chunks) == 1:
            return _read_chunk(folder, t, t.chunks[0]).numpy()
        full = np.empty(t.shape, dtype=t.dtype.newbyteorder("=").resolve())
        for chunk in t.chunks:
            ref = _read_chunk(folder, t, chunk)
            box = full[tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes))]
            if box.flags.c_contiguous:
                _read_into(ref, box)
            else:
                box[...] = ref.numpy()
        return full

    return load


def _segments(md: DcpMetadata, fqn: str) -> list[str]:
    segs = md.paths.get(fqn) or (fqn,)
    out: list[str] = []
    for s in segs:
        out.extend(str(s).split(".") if isinstance(s, str) else [str(s)])
    return out


def _bytes_item(folder: str, fqn: str, info: StorageInfo, allow_globals: Sequence[str]) -> Any:
    if info.length > MAX_BYTES_ITEM:
        return f"<{info.length} bytes, not read>"
    file = _file(folder, info, fqn)
    head = bytes(open_source(file).read(info.offset, min(4, info.length)))
    if head != b"PK\x03\x04":
        return f"<{info.length} bytes>"
    obj, _ = _saved_object(file, info, f"item {fqn!r}", allow_globals)
    leaves = list(flatten(obj, lambda v: isinstance(v, LazyTensor)))
    if len(leaves) == 1 and not leaves[0][0]:
        return to_jsonable(obj) if not isinstance(obj, LazyTensor) else "<tensor>"
    return {".".join(map(str, s)) or "_": ("<tensor>" if isinstance(v, LazyTensor) else to_jsonable(v)) for s, v in leaves}


def read(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    folder = path.rstrip("/") or path
    meta_file = loc.join(folder, METADATA)
    md = load_metadata(loc.read_small(meta_file, MAX_METADATA, "DCP metadata"), meta_file, allow_globals)
    builder = IndexBuilder(folder)
    files: dict[str, None] = {}
    for t in md.tensors:
        _check_tiling(folder, t)
        for c in t.chunks:
            files[_file(folder, c.storage, t.fqn)] = None
        p = join_path(_segments(md, t.fqn)) or "_"
        builder.add(TensorRef(path=p, key=t.fqn, dtype=t.dtype, shape=t.shape, file=_file(folder, t.chunks[0].storage, t.fqn),
                              optimizer=is_optimizer_path(p), loader=_assembler(folder, t), raw=False))
    metadata: dict[str, Any] = {}
    for fqn, info in md.bytes_items.items():
        metadata[join_path(_segments(md, fqn)) or "_"] = _bytes_item(folder, fqn, info, allow_globals)
    if md.version:
        metadata["dcp_version"] = md.version
    shards = sorted(files)
    return CheckpointIndex(builder.refs, format=FORMAT, files=[folder, meta_file, *shards], metadata=metadata,
                           key_sep=".")
