"""Tensor transforms for remap rules: each is a pure function plus a shape rule, so a plan can be
checked (shapes, dtypes) before any tensor is read.

Spelled in rules files as tables: ``{op = "transpose"}``, ``{op = "cast", dtype = "float16"}`` ...
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dtypes import resolve_dtype
from ..errors import SelectionError
from ..rnn.gates import ORDERS, reorder

__all__ = ["Transform", "parse_transform", "OPS"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    op: str
    args: dict[str, Any]
    shape: Callable[[Shape, np.dtype], tuple[Shape, np.dtype]]
    apply: Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
    others: tuple[str, ...] = ()  # target templates of extra source tensors (concat)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items() if k != "op")
        return f"{self.op}({args})" if args else self.op


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise SelectionError(f"axis {axis} out of range for {ndim} dimensions")
    return axis % ndim


def _transpose(a: dict) -> Transform:
    axes = a.get("axes")

    def shape(s: Shape, d: np.dtype):
        perm = tuple(axes) if axes is not None else tuple(reversed(range(len(s))))
        if sorted(perm) != list(range(len(s))):
            raise SelectionError(f"transpose axes {list(perm)} do not fit shape {list(s)}")
        return tuple(s[i] for i in perm), d

    return Transform("transpose", a, shape, lambda x, _: np.ascontiguousarray(np.transpose(x, axes)))


def _reshape(a: dict) -> Transform:
    target = tuple(a["shape"])

    def shape(s: Shape, d: np.dtype):
        if -1 in target:
            known = math.prod(t for t in target if t != -1)
            if known == 0 or math.prod(s) % known:
                raise SelectionError(f"cannot reshape {list(s)} to {list(target)}")
            out = tuple(math.prod(s) // known if t == -1 else t for t in target)
        else:
            out = target
        if math.prod(out) != math.prod(s):
            raise SelectionError(f"cannot reshape {list(s)} ({math.prod(s)} elements) to {list(target)}")
        return out, d

    return Transform("reshape", a, shape, lambda x, _: x.reshape(target))


def _cast(a: dict) -> Transform:
    dtype = resolve_dtype(a["dtype"])
    return Transform("cast", a, lambda s, d: (s, dtype), lambda x, _: x.astype(dtype))


def _slice(a: dict) -> Transform:
    axis, start, stop, step = a.get("axis", 0), a.get("start"), a.get("stop"), a.get("step")

    def shape(s: Shape, d: np.dtype):
        ax = _axis(axis, len(s))
        n = len(range(*slice(start, stop, step).indices(s[ax])))
        return s[:ax] + (n,) + s[ax + 1:], d

    def apply(x, _):
        index = [slice(None)] * x.ndim
        index[_axis(axis, x.ndim)] = slice(start, stop, step)
        return np.ascontiguousarray(x[tuple(index)])

    return Transform("slice", a, shape, apply)


def _split(a: dict) -> Transform:
    axis, parts, index = a.get("axis", 0), int(a["parts"]), int(a["index"])

    def shape(s: Shape, d: np.dtype):
        ax = _axis(axis, len(s))
        if s[ax] % parts or not 0 <= index < parts:
            raise SelectionError(f"cannot take part {index} of {parts} along axis {axis} of shape {list(s)}")
        return s[:ax] + (s[ax] // parts,) + s[ax + 1:], d

    return Transform("split", a, shape, lambda x, _: np.ascontiguousarray(np.split(x, parts, axis)[index]))


def _concat(a: dict) -> Transform:
    axis = a.get("axis", 0)
    others = tuple(a["with"]) if isinstance(a["with"], list) else (a["with"],)
    return Transform("concat", a, lambda s, d: (s, d),  # the plan adds the others' extents
                     lambda x, rest: np.concatenate([x, *rest], axis=axis), others)


def _gates(a: dict) -> Transform:
    kind, src, dst, axis = a["kind"], a["from"], a["to"], a.get("axis", 0)
    try:
        order_from, order_to = ORDERS[(src, kind)], ORDERS[(dst, kind)]
    except KeyError:
        raise SelectionError(f"gates: unknown layout pair {src!r} -> {dst!r} for {kind!r} "
                             f"(layouts: {sorted({k for k, _ in ORDERS})})") from None

    def shape(s: Shape, d: np.dtype):
        ax = _axis(axis, len(s))
        if s[ax] % len(order_from):
            raise SelectionError(f"gates: axis {axis} of shape {list(s)} does not split into {len(order_from)} gates")
        return s, d

    return Transform("gates", a, shape, lambda x, _: reorder(x, order_from, order_to, _axis(axis, x.ndim)))


def _scale(a: dict) -> Transform:
    by = a["by"]
    return Transform("scale", a, lambda s, d: (s, d), lambda x, _: (x * np.asarray(by, dtype=x.dtype)).astype(x.dtype))


def _offset(a: dict) -> Transform:
    by = a["by"]
    return Transform("offset", a, lambda s, d: (s, d), lambda x, _: (x + np.asarray(by, dtype=x.dtype)).astype(x.dtype))


OPS: dict[str, Callable[[dict], Transform]] = {
    "transpose": _transpose, "permute": _transpose, "reshape": _reshape, "cast": _cast, "slice": _slice,
    "split": _split, "concat": _concat, "gates": _gates, "scale": _scale, "offset": _offset,
}


def parse_transform(spec: dict[str, Any], where: str) -> Transform:
    if not isinstance(spec, dict) or spec.get("op") not in OPS:
        raise SelectionError(f"{where}: transform {spec!r} needs op = one of {', '.join(OPS)}")
    try:
        return OPS[spec["op"]]({k: v for k, v in spec.items() if k != "op"})
    except KeyError as exc:
        raise SelectionError(f"{where}: transform {spec['op']!r} needs {exc}") from None
