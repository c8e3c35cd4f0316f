"""Write tensors as Hugging Face shards: ``model-00001-of-00003.safetensors`` + ``model.safetensors.index.json``.

The split follows ``huggingface_hub.serialization.split_state_dict_into_shards_factory`` (re-implemented,
not imported: huggingface_hub and its network stack are not a run-time dependency for thirty lines of
rules; the tests compare our split with the library's on the same sizes):

- tensors are taken in order and never split; a shard is closed when the next tensor would take it
  over ``max_shard_size``; a tensor larger than that gets a shard of its own, placed before the shard
  being filled (as huggingface_hub does);
- sizes parse as huggingface_hub's ``parse_size_to_int``: ``"5GB"`` is 5 * 10**9 bytes (KB, MB, GB, TB);
- one shard is written as ``model.safetensors`` with no index; several are ``{prefix}-{k:05d}-of-{n:05d}``
  with an index ``{"metadata": {"total_size": ...}, "weight_map": {tensor: shard}}``;
- each safetensors shard carries ``{"format": "pt"}`` in its metadata, as transformers requires.

All files are written atomically together (``AtomicFiles``); stale shards of an earlier save with the
same prefix are removed only with ``force``.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...atomic import atomic_files
from ...errors import OutputError

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["SIZE_UNITS", "parse_size", "plan_shards", "shard_names", "ShardedOutput", "write_sharded", "PATTERNS"]

SIZE_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3}  # huggingface_hub's units (decimal)

# writer name -> (file pattern, index name), as huggingface_hub's constants name them
PATTERNS = {
    "safetensors": ("model{suffix}.safetensors", "model.safetensors.index.json"),
    "pt": ("pytorch_model{suffix}.bin", "pytorch_model.bin.index.json"),
}


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000; a plain integer is bytes."""
    if isinstance(text, int):
        return text
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    unit = raw[-2:].upper()
    if unit not in SIZE_UNITS:
        raise OutputError(f"--max-shard-size {text!r}: unit must be one of KB, MB, GB, TB (decimal, as huggingface_hub)")
    try:
        value = float(raw[:-2].strip())
    except ValueError:
        raise OutputError(f"--max-shard-size {text!r}: not a number followed by KB, MB, GB or TB") from None
    if value <= 0:
        raise OutputError(f"--max-shard-size {text!r}: must be positive")
    return int(value * SIZE_UNITS[unit])


def plan_shards(sizes: Sequence[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Tensor names per shard, by huggingface_hub's rules (see the module docstring)."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    for key, size in sizes:
        if size > max_bytes:
            shards.append([key])
            continue
        if current_size + size > max_bytes:
            shards.append(current)
            current, current_size = [], 0
        current.append(key)
        current_size += size
    if current:
        shards.append(current)
    return shards


def shard_names(n: int, pattern: str) -> list[str]:
    if n == 1:
        return [pattern.format(suffix="")]
    return [pattern.format(suffix=f"-{k + 1:05d}-of-{n:05d}") for k in range(n)]


@dataclass
class ShardedOutput:
    folder: str
    files: list[str]
    index: str | None
    total_size: int


class _Subset(Mapping[str, np.ndarray]):
    """The tensors of one shard, still lazy; ``spec`` passes through (dtype and shape without reading)."""

    def __init__(self, tensors: Mapping[str, Any], keys: list[str]) -> None:
        self._tensors, self._keys = tensors, keys

    def __getitem__(self, key: str) -> np.ndarray:
        return self._tensors[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def spec(self, key: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self._tensors.spec(key)  # type: ignore[attr-defined]


def _stale(folder: str, pattern: str, index_name: str, keep: set[str]) -> list[str]:
    prefix, _, suffix = pattern.partition("{suffix}")
    rx = re.compile(re.escape(prefix) + r"(-\d{5}-of-\d{5})?" + re.escape(suffix))
    if not os.path.isdir(folder):
        return []
    return [n for n in os.listdir(folder) if (rx.fullmatch(n) or n == index_name) and n not in keep]


def write_sharded(
    tensors: Mapping[str, np.ndarray],
    nbytes: Callable[[str], int],
    folder: str,
    *,
    max_bytes: int,
    writer: Any,
    metadata: Mapping[str, str],
    force: bool = False,
    inputs: Sequence[str] = (),
) -> ShardedOutput:
    """Split ``tensors`` (lazy, with ``spec``) into shards of at most ``max_bytes`` and write them into ``folder``."""
    if writer.name not in PATTERNS:
        raise OutputError(f"--max-shard-size writes safetensors or .bin shards, not {writer.name}")
    pattern, index_name = PATTERNS[writer.name]
    sizes = [(key, nbytes(key)) for key in tensors]
    groups = plan_shards(sizes, max_bytes)
    names = shard_names(len(groups), pattern)
    targets = names + ([index_name] if len(groups) > 1 else [])
    real_inputs = {os.path.realpath(i) for i in inputs}
    for name in targets:
        path = os.path.join(folder, name)
        if os.path.realpath(path) in real_inputs:
            raise OutputError(f"{path}: is an input of this operation; choose another output folder")
        if os.path.lexists(path) and not force:
            raise OutputError(f"{path}: already exists; pass --force (API: force=True) to replace it")
    stale = _stale(folder, pattern, index_name, set(targets))
    if stale and not force:
        raise OutputError(f"{os.path.join(folder, stale[0])}: a shard of an earlier save is in the way; "
                          "pass --force to replace that save or choose another folder")
    if any(os.path.realpath(os.path.join(folder, n)) in real_inputs for n in stale):
        raise OutputError(f"{folder}: holds the input's own shards; choose another output folder")
    total = sum(size for _, size in sizes)
    shard_meta = {"format": "pt"} if len(groups) > 1 else {"format": "pt", **metadata}
    if writer.name != "safetensors":
        shard_meta = {} if len(groups) > 1 else dict(metadata)
    with atomic_files(folder) as out:
        for name, keys in zip(names, groups):
            with out.open(name) as fh:
                writer.write(_Subset(tensors, keys), fh, shard_meta)
        if len(groups) > 1:
            index = {"metadata": {"total_size": total, **metadata},
                     "weight_map": {key: name for name, keys in zip(names, groups) for key in keys}}
            with out.open(index_name) as fh:
                fh.write(json.dumps(index, indent=2).encode("utf-8"))
    for name in stale:
        os.unlink(os.path.join(folder, name))
    return ShardedOutput(folder, [os.path.join(folder, n) for n in targets],
                         os.path.join(folder, index_name) if len(groups) > 1 else None, total)
