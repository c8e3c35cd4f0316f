"""Layout locks: what a checkpoint must look like (paths, shapes, dtypes, recurrent groups, hashes)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, SelectionError
from ..index import CheckpointIndex
from ..rnn.group import RecognizeOptions, RecurrentGroup
from ..rnn.recognize import recognize
from ..source import read_small_file

__all__ = ["make_layout", "load_layout", "group_signature", "tensor_sha256", "LAYOUT_VERSION"]

LAYOUT_VERSION = 1
MAX_LAYOUT = 256 << 20  # bytes of a layout lock
GROUP_FIELDS = ("kind", "input_size", "hidden_size", "proj_size", "num_layers", "directions", "peepholes", "family")


def tensor_sha256(values) -> str:
    return hashlib.sha256(values.tobytes()).hexdigest()


def group_signature(g: RecurrentGroup) -> dict[str, Any]:
    d = g.describe()
    return {"scope": g.scope, "layout": g.layout, **{k: d[k] for k in GROUP_FIELDS}, "members": list(g.members)}


def make_layout(index: CheckpointIndex, *, hash: bool = False, options: RecognizeOptions | None = None,  # noqa: A002
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``progress(n, total)`` is called as tensors are hashed (``hash``)."""
    tensors = []
    total = index.nbytes if hash and progress is not None else 0
    for ref in index.values():
        entry = {"path": ref.path, "key": ref.key, "shape": list(ref.shape), "dtype": ref.dtype_name}
        if hash:
            entry["sha256"] = tensor_sha256(ref.numpy())
            if progress is not None:
                progress(ref.nbytes, total)
        tensors.append(entry)
    return {"version": LAYOUT_VERSION, "format": index.format, "tensors": tensors,
            "groups": [group_signature(g) for g in recognize(index, options)]}


def load_layout(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(read_small_file(str(path), MAX_LAYOUT, "a layout lock"))
    except CheckpointError as exc:
        raise SelectionError(f"not a layout file: {exc}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise SelectionError(f"{path}: not a layout file: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != LAYOUT_VERSION or not isinstance(data.get("tensors"), list):
        raise SelectionError(f"{path}: not a ckptsurgeon layout (version {LAYOUT_VERSION}); make one with 'ckptsurgeon layout'")
    for t in data["tensors"]:
        if not (isinstance(t, dict) and isinstance(t.get("path"), str) and isinstance(t.get("dtype"), str)
                and isinstance(t.get("shape"), list)):
            raise SelectionError(f"{path}: malformed tensor entry {str(t)[:80]} (needs path, shape, dtype)")
    groups = data.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("scope"), str) for g in groups):
        raise SelectionError(f"{path}: malformed recurrent groups (each needs a scope)")
    return data
