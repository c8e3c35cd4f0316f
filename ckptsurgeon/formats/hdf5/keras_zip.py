"""Keras 3 ``.keras`` archives: ``config.json``, ``metadata.json``, ``model.weights.h5``.

The archive is never extracted: the weights member is read in place (Keras stores it uncompressed)
or, if compressed, decompressed in memory within the zip-bomb limits by the child process that
parses it (``h5tree``). The configuration is read
as JSON data only; no Keras object is ever deserialized.
"""
from __future__ import annotations

import json
from typing import Any

from ...errors import FormatError
from ...index import CheckpointIndex
from ..zipsafe import SafeZip
from .h5 import read_source
from .h5tree import H5Source
from .keras_config import parse_config

__all__ = ["sniff_names", "read"]

KNOWN = ("config.json", "metadata.json", "model.weights.h5")


def sniff_names(names: list[str]) -> bool:
    return "config.json" in names and ("model.weights.h5" in names or "model.weights.npz" in names)


def read(path: str, **_: Any) -> CheckpointIndex:
    zf = SafeZip(path)
    try:
        if "model.weights.h5" not in zf.members:
            raise FormatError(f"{path}: .keras archive without model.weights.h5 (only HDF5 weights are supported)")
        config = parse_config(zf.read("config.json", limit=64 << 20), f"{path}:config.json")
        meta: dict[str, Any] = {}
        if "metadata.json" in zf.members:
            try:
                meta = json.loads(zf.read("metadata.json", limit=1 << 20))
            except (ValueError, RecursionError):
                meta = {}
        member = zf.members["model.weights.h5"]
        if not member.stored and member.size > 8 << 30:
            raise FormatError(f"{path}: compressed model.weights.h5 of {member.size} bytes is over the 8 GiB limit")
        source = H5Source(path, member.data_offset, member.compressed_size, f"{path}:model.weights.h5",
                          inflate=not member.stored, usize=member.size)
        extra = [n for n in zf.names() if n not in KNOWN and not n.startswith("assets/")]
    finally:
        zf.close()
    index = read_source(source, file=path, config=config, fmt="keras")
    if isinstance(meta, dict):
        index.metadata.update({f"keras_{k}": v for k, v in meta.items() if isinstance(v, (str, int, float))})
    if extra:
        index.notes.append(f"archive members not read: {', '.join(extra[:5])}")
    return index
