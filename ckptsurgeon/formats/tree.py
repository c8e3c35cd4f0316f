"""Flatten nested checkpoint containers into (scope segments, leaf) pairs."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import UnsafeCheckpointError
from ..lazy import is_ndarray, is_np_generic

__all__ = ["flatten", "work_budget", "short_repr", "to_jsonable", "OPTIMIZER_SCOPES", "is_optimizer_path"]

MIN_WORK = 100_000  # nodes + paths any pickle may expand to
WORK_PER_BYTE = 4  # ... and this many more per byte of pickle

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


def work_budget(pickle_bytes: int) -> int:
    """How many nodes and paths a pickle of this size may expand to: legitimate pickles stay far below
    (every container, key and tensor record costs bytes); shared-container graphs blow past it."""
    return max(MIN_WORK, WORK_PER_BYTE * pickle_bytes)


def flatten(obj: Any, is_leaf: Callable[[Any], bool], budget: int = MIN_WORK,
            where: str = "checkpoint") -> Iterator[tuple[list[Any], Any]]:
    """Yield ``(segments, leaf)`` depth first: dict keys and list indices become segments.

    A container reached twice yields its leaves twice (under both paths), as a state dict that
    holds one tensor under two names does. A container inside itself (a cycle) is refused, and so
    is a graph whose paths outnumber ``budget`` (every node and every path counts).
    """
    work = 0
    on_path: set[int] = set()  # containers enclosing the current node: reaching one again is a cycle
    # Depth first with one iterator per open container (never a list of a container's children: 100,000
    # entries' worth of tuples for a large state dict).
    stack: list[tuple[list[Any], Any, Iterator[tuple[Any, Any]]]] = []
    pending: list[tuple[list[Any], Any]] = [([], obj)]
    while pending or stack:
        if pending:
            segs, node = pending.pop()
        else:
            parent_segs, parent, items = stack[-1]
            item = next(items, _DONE)
            if item is _DONE:
                stack.pop()
                on_path.discard(id(parent))
                continue
            segs, node = parent_segs + [item[0]], item[1]
        work += 1
        if work > budget:
            raise UnsafeCheckpointError(
                f"{where}: the pickle expands to more than {budget:,} nodes and paths (containers shared under "
                "many names); refusing")
        if is_leaf(node):
            yield segs, node
            continue
        if isinstance(node, dict):
            children: Iterator[tuple[Any, Any]] = iter(node.items())
        elif isinstance(node, (list, tuple)) and not _is_plain_sequence(node):
            children = enumerate(node)
        else:
            yield segs, node
            continue
        if id(node) in on_path:
            raise UnsafeCheckpointError(
                f"{where}: the pickle holds a cycle (the container at {'/'.join(map(str, segs)) or '/'} is one of "
                "its own ancestors); refusing")
        on_path.add(id(node))
        stack.append((segs, node, children))


_DONE = object()


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
    if is_ndarray(value) and value.size <= 64:
        return to_jsonable(value.tolist())
    if is_np_generic(value):
        return to_jsonable(value.item())
    return short_repr(value)


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr`` that stops after ``limit`` characters, however large, deep, shared or cyclic ``value`` is."""
    out: list[str] = []
    room = [limit + 1]

    def put(text: str) -> bool:
        out.append(text[: max(room[0], 0)])
        room[0] -= len(text)
        return room[0] > 0

    def items(v: Any) -> tuple[str, str, Any] | None:
        if isinstance(v, dict):
            return "{", "}", v.items()
        if isinstance(v, list):
            return "[", "]", ((None, x) for x in v)
        if isinstance(v, tuple):
            return "(", ")", ((None, x) for x in v)
        if isinstance(v, (set, frozenset)):
            return f"{type(v).__name__}({{", "})", ((None, x) for x in v)
        if isinstance(v, slice):
            return "slice(", ")", ((None, x) for x in (v.start, v.stop, v.step))
        if all(hasattr(v, a) for a in ("name", "args", "state")):  # the unpickler's inert stand-ins
            parts = list(v.args) + ([v.state] if v.state is not None else [])
            return f"{v.name}(", ")", ((None, x) for x in parts)
        return None

    def visit(v: Any, depth: int, path: frozenset[int]) -> bool:
        if depth > 20 or id(v) in path:
            return put("...")
        shape = items(v)
        if shape is None:
            bounded = isinstance(v, (str, bytes, int, float, complex, bool, type(None))) or is_np_generic(v) or (
                is_ndarray(v) and v.size <= 64)
            return put(repr(v)[: limit + 1] if bounded else f"<{type(v).__name__}>")
        open_, close, pairs = shape
        if not put(open_):
            return False
        inner = path | {id(v)}
        for i, (k, x) in enumerate(pairs):
            if i and not put(", "):
                return False
            if k is not None and not (visit(k, depth + 1, inner) and put(": ")):
                return False
            if not visit(x, depth + 1, inner):
                return False
        return put(close)

    visit(value, 0, frozenset())
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."
