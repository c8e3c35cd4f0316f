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

__all__ = ["Transform", "parse_transform", "OPS", "normalize_axis"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    """One transform of a rule (``transpose``, ``reshape``, ``cast``, ``split``, ``gates`` ...) with its arguments."""

    op: str
    args: dict[str, Any]
    shape: Callable[[Shape, np.dtype], tuple[Shape, np.dtype]]
    apply: Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
    others: tuple[str, ...] = ()  # target templates of extra source tensors (concat)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items() if k != "op")
        return f"{self.op}({args})" if args else self.op


def normalize_axis(axis: int, ndim: int) -> int:
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
        ax = normalize_axis(axis, len(s))
        n = len(range(*slice(start, stop, step).indices(s[ax])))
        return s[:ax] + (n,) + s[ax + 1:], d

    def apply(x, _):
        index = [slice(None)] * x.ndim
        index[normalize_axis(axis, x.ndim)] = slice(start, stop, step)
        return np.ascontiguousarray(x[tuple(index)])

    return Transform("slice", a, shape, apply)


def _split(a: dict) -> Transform:
    axis, parts, index = a.get("axis", 0), int(a["parts"]), int(a["index"])

    def shape(s: Shape, d: np.dtype):
        ax = normalize_axis(axis, len(s))
        if s[ax] % parts or not 0 <= index < parts:
            raise SelectionError(f"cannot take part {index} of {parts} along axis {axis} of shape {list(s)}")
        return s[:ax] + (s[ax] // parts,) + s[ax + 1:], d

    return Transform("split", a, shape, lambda x, _: np.ascontiguousarray(np.split(x, parts, axis)[index]))


def _concat(a: dict) -> Transform:
    axis = a.get("axis", 0)
    others = tuple(a["with"]) if isinstance(a["with"], list) else (a["with"],)

    def apply(x, rest):  # the dtype numpy promotes to, as the plan computed it
        return np.concatenate([x, *rest], axis=axis).astype(np.result_type(x.dtype, *(r.dtype for r in rest)), copy=False)

    return Transform("concat", a, lambda s, d: (s, d), apply, others)  # the plan adds the others' extents and dtypes


def _gate_orders(kind: str, src: str, dst: str, hidden: int | None) -> tuple[str, str]:
    """The block orders a ``gates`` transform maps between.

    TF1's GRUCell keeps only the reset and update gates [r, u] in ``gates/kernel|bias`` (2H) and the
    candidate in separate ``candidate/kernel|bias`` tensors. Every other layout stacks the candidate
    last, so with ``tf1`` on one side the transform maps exactly those two gate blocks: TF1 [r, u] <->
    the other layout's order without its candidate (PyTorch r, z; Keras and ONNX z, r). Because a
    3-block tensor can also split in two, ``hidden`` is required and checked.
    """
    try:
        order_from, order_to = ORDERS[(src, kind)], ORDERS[(dst, kind)]
    except KeyError:
        raise SelectionError(f"gates: unknown layout pair {src!r} -> {dst!r} for {kind!r} "
                             f"(layouts: {sorted({k for k, _ in ORDERS})})") from None
    if kind == "gru" and "tf1" in (src, dst) and src != dst:
        if hidden is None:
            raise SelectionError("gates: kind = 'gru' with 'tf1' needs hidden = H: TF1's GRUCell keeps only the reset "
                                 "and update gates [r, u] (2H) in gates/kernel|bias and the candidate in candidate/kernel|bias, "
                                 "so this transform maps those two gate blocks and needs H to check the tensor holds exactly them")
        order_from, order_to = order_from.replace("n", ""), order_to.replace("n", "")
    return order_from, order_to


def _gates(a: dict) -> Transform:
    kind, src, dst, axis = a["kind"], a["from"], a["to"], a.get("axis", 0)
    hidden = a.get("hidden")
    if hidden is not None and (not isinstance(hidden, int) or hidden <= 0):
        raise SelectionError(f"gates: hidden must be a positive integer, not {hidden!r}")
    order_from, order_to = _gate_orders(kind, src, dst, hidden)
    pair_tf1_gru = kind == "gru" and "tf1" in (src, dst) and src != dst

    def shape(s: Shape, d: np.dtype):
        ax = normalize_axis(axis, len(s))
        n = len(order_from)
        if hidden is not None and s[ax] != n * hidden:
            extra = ""
            if pair_tf1_gru and s[ax] == 3 * hidden:
                extra = (" (it holds the candidate block too, which TF1 keeps in a separate tensor: every other layout "
                         f"stacks it last, so slice the gates off first with {{op = 'slice', axis = {axis}, stop = "
                         f"{2 * hidden}}} and map the candidate block with its own rule; nothing is dropped silently)")
            elif pair_tf1_gru and s[ax] == hidden:
                extra = " (one block: a candidate kernel or bias needs no gates transform)"
            raise SelectionError(f"gates: axis {axis} of shape {list(s)} should hold {n} gates of hidden {hidden}{extra}")
        if s[ax] % n:
            raise SelectionError(f"gates: axis {axis} of shape {list(s)} does not split into {n} gates")
        return s, d

    return Transform("gates", a, shape, lambda x, _: reorder(x, order_from, order_to, normalize_axis(axis, x.ndim)))


def _arith(name: str, a: dict, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Transform:
    """``scale``/``offset`` by a number or an array that broadcasts to the tensor, kept in the tensor's dtype."""
    by = a["by"]
    raw = np.asarray(by)
    if raw.dtype.kind not in "biuf":
        raise SelectionError(f"{name}: by = {by!r} is not a number or an array of numbers")

    def shape(s: Shape, d: np.dtype):
        try:
            out = np.broadcast_shapes(s, raw.shape)
        except ValueError:
            out = None
        if out != tuple(s):
            raise SelectionError(f"{name}: by of shape {list(raw.shape)} does not broadcast to the tensor's {list(s)}")
        if np.dtype(d).kind in "biu" and not np.array_equal(raw.astype(d), raw):
            raise SelectionError(f"{name}: by = {by!r} is not exact in the tensor's dtype {np.dtype(d).name}")
        return s, d

    return Transform(name, a, shape, lambda x, _: fn(x, np.asarray(by, dtype=x.dtype)).astype(x.dtype))


def _scale(a: dict) -> Transform:
    return _arith("scale", a, lambda x, b: x * b)


def _offset(a: dict) -> Transform:
    return _arith("offset", a, lambda x, b: x + b)


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
