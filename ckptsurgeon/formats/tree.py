"""Flatten nested checkpoint containers into (scope segments, leaf) pairs."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import UnsafeCheckpointError

__all__ = ["flatten", "to_jsonable", "OPTIMIZER_SCOPES", "is_optimizer_path"]

MAX_LEAVES = 10_000_000

# Top-level containers that hold optimizer state, by framework.
OPTIMIZER_SCOPES = (
    "optimizer_states",  # PyTorch Lightning
    "optimizer",  # plain PyTorch training scripts, TF2 object checkpoints
    "optimizers",
    "optimizer_state_dict",
    "optimizer_state",  # Resemblyzer, Real-Time-Voice-Cloning and other training scripts
    "optim",
    "optimizer_weights",  # Keras full-model .h5
)


def is_optimizer_path(path: str) -> bool:
    return path.split("/", 1)[0] in OPTIMIZER_SCOPES


def flatten(obj: Any, is_leaf: Callable[[Any], bool]) -> Iterator[tuple[list[Any], Any]]:
    """Yield ``(segments, leaf)`` depth first: dict keys and list indices become segments.

    A container reached twice yields its leaves twice (under both paths), as a state dict that
    holds one tensor under two names does; the count of leaves is bounded.
    """
    count = 0
    stack: list[tuple[list[Any], Any]] = [([], obj)]
    while stack:
        segs, node = stack.pop()
        if is_leaf(node):
            count += 1
            if count > MAX_LEAVES:
                raise UnsafeCheckpointError(f"checkpoint holds more than {MAX_LEAVES} leaves; refusing")
            yield segs, node
        elif isinstance(node, dict):
            stack.extend((segs + [k], v) for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)) and not _is_plain_sequence(node):
            stack.extend((segs + [i], v) for i, v in reversed(list(enumerate(node))))
        else:
            count += 1
            yield segs, node


def _is_plain_sequence(node: Any) -> bool:
    """Short lists of numbers/strings are metadata values, not containers."""
    return len(node) <= 64 and all(isinstance(v, (int, float, str, bool, type(None))) for v in node)


def to_jsonable(value: Any) -> Any:
    """A JSON-friendly rendering of a metadata leaf (numbers, strings, lists; else its repr)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace") if len(value) < 4096 else f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
