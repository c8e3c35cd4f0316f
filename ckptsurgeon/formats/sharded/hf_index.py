"""Hugging Face sharded checkpoints: ``model.safetensors.index.json`` (or ``pytorch_model.bin.index.json``)
plus its shards, read as one lazy index in which every tensor knows its shard.

The index is checked against the shards: a missing shard, a tensor the index places in one shard but
that is stored in another, a tensor stored twice, and a listed tensor no shard holds are errors.
Shard names must be plain file names beside the index (no folders, no ``..``).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ... import location as loc
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder

__all__ = ["INDEX_NAMES", "sniff_folder", "sniff_index", "read"]

# Probed in this order in a folder (transformers prefers safetensors when both are present).
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MAX_INDEX = 64 << 20
SHARD_FORMATS = {"safetensors": "sharded-safetensors", "pytorch": "sharded-pytorch"}


def sniff_folder(path: str) -> str | None:
    """The index json inside folder ``path``, if any."""
    for name in INDEX_NAMES:
        cand = loc.join(path, name)
        if loc.isfile(cand):
            return cand
    return None


def sniff_index(head: bytes) -> bool:
    """A JSON object whose first bytes mention a weight map or metadata (HF index files start so)."""
    text = head.lstrip()
    return text.startswith(b"{") and (b'"weight_map"' in text or b'"metadata"' in text)


def _load(index_file: str) -> tuple[dict[str, str], Any]:
    raw = loc.read_small(index_file, MAX_INDEX, "shard index")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{index_file}: not a JSON shard index: {exc}") from None
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
        raise FormatError(f"{index_file}: shard index without a weight_map of tensor name -> shard file")
    for shard in dict.fromkeys(wmap.values()):
        if not shard or "/" in shard or "\\" in shard or shard in (".", "..") or "\0" in shard:
            raise UnsafeCheckpointError(f"{index_file}: shard {shard!r} is not a file beside the index; refusing")
    return wmap, data.get("metadata")


def read(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    from .. import detect, open_checkpoint  # the shards are ordinary checkpoints

    index_file = path if loc.isfile(path) else sniff_folder(path)
    if index_file is None:
        raise FormatError(f"{path}: no {' or '.join(INDEX_NAMES)} in this folder")
    wmap, index_meta = _load(index_file)
    folder = loc.parent(index_file)
    builder = IndexBuilder(index_file)
    stored: dict[str, str] = {}
    files = [index_file]
    kinds: set[str] = set()
    metadata: dict[str, Any] = {"shard_index": index_meta} if isinstance(index_meta, dict) else {}
    notes: list[str] = []
    key_sep = "."
    for shard in sorted(dict.fromkeys(wmap.values())):
        shard_file = loc.join(folder, shard)
        if not loc.isfile(shard_file):
            n = sum(1 for v in wmap.values() if v == shard)
            raise FormatError(f"{index_file}: shard {shard} ({n} tensors) is missing from {folder}")
        kind = detect(shard_file)
        if kind not in SHARD_FORMATS:
            raise FormatError(f"{shard_file}: a shard must be safetensors or a PyTorch checkpoint, this is {kind}")
        kinds.add(kind)
        sub = open_checkpoint(shard_file, allow_globals=allow_globals)
        key_sep = sub.key_sep
        files.append(shard_file)
        for ref in sub.values():
            if ref.key in stored:
                raise FormatError(f"{index_file}: tensor {ref.key!r} is stored in both {stored[ref.key]} and {shard}")
            listed = wmap.get(ref.key)
            if listed is None:
                raise FormatError(f"{shard_file}: holds tensor {ref.key!r}, which {loc.basename(index_file)} does not list")
            if listed != shard:
                raise FormatError(f"{index_file}: lists tensor {ref.key!r} in {listed}, but it is stored in {shard}")
            stored[ref.key] = shard
            builder.add(ref)
        for key, value in sub.metadata.items():
            metadata.setdefault(key, value)
        notes.extend(f"{shard}: {n}" for n in sub.notes)
    absent = [k for k in wmap if k not in stored]
    if absent:
        raise FormatError(f"{index_file}: lists tensor {absent[0]!r} in {wmap[absent[0]]}, which does not hold it"
                          + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
    fmt = SHARD_FORMATS[kinds.pop()] if len(kinds) == 1 else "sharded"
    return CheckpointIndex(builder.refs, format=fmt, files=files, metadata=metadata, notes=notes, key_sep=key_sep)
