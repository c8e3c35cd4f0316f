"""Stacked recurrent layers in an ONNX graph: which node's output ``Y`` feeds which node's input ``X``.

Exporters connect layer k's ``Y`` (``[T, D, B, H]``; ``[B, T, D, H]`` with ``layout=1``) to layer k+1's
``X`` (``[T, B, D*H]``) through ops that only move elements: torch's TorchScript exporter
``Squeeze(axes=[1])`` (one direction) or ``Transpose(perm=[0, 2, 1, 3])`` + ``Reshape([0, 0, -1])``, its
dynamo exporter ``Transpose`` + ``Reshape([T, B, D*H])``. A link is accepted only when that chain, run in
numpy on element ids, puts every element of ``Y`` exactly where stacking puts it (each step's directions
concatenated, forward first). Anything else (a computed shape, another op, two consumers) is no link: the
nodes stay separate groups, which is never wrong, only less convenient.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .graph import RECURRENT_OPS, RecurrentNode, _Scopes
from .model import Graph, Model, Node

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["MOVE_OPS", "layer_links"]

MOVE_OPS = ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
_PARAM = {"Reshape": 1, "Squeeze": 1, "Unsqueeze": 1}  # position of the constant parameter input (opset >= 13 for axes)


def _axes(node: Node, params: list[np.ndarray], rank: int) -> list[int] | None:
    attr = node.attrs.get("axes")
    axes = list(attr.ints) if attr is not None else ([int(a) for a in params[0].reshape(-1)] if params else None)
    return None if axes is None else sorted(a + rank if a < 0 else a for a in axes)


def _apply(node: Node, x: np.ndarray, params: list[np.ndarray]) -> np.ndarray:
    """One element-moving op, as the ONNX operator definitions state it."""
    op = node.op_type
    if op == "Identity":
        return x
    if op == "Transpose":
        perm = node.attrs.get("perm")
        return x.transpose(list(perm.ints) if perm is not None else None)
    if op == "Reshape":
        allowzero = node.attrs.get("allowzero")
        keep = not (allowzero is not None and allowzero.i)
        shape = [x.shape[i] if (s == 0 and keep) else int(s) for i, s in enumerate(params[0].reshape(-1))]
        return x.reshape(shape)
    if op == "Squeeze":
        axes = _axes(node, params, x.ndim)
        return np.squeeze(x, axis=tuple(axes) if axes is not None else None)
    if op == "Unsqueeze":
        attr = node.attrs.get("axes")
        raw = list(attr.ints) if attr is not None else [int(a) for a in params[0].reshape(-1)]
        for a in sorted(a + x.ndim + len(raw) if a < 0 else a for a in raw):
            x = np.expand_dims(x, a)
        return x
    axis = node.attrs.get("axis")  # Flatten
    k = axis.i if axis is not None else 1
    k = k + x.ndim if k < 0 else k
    return x.reshape(int(np.prod(x.shape[:k])), -1)


def _chain(scopes: _Scopes, graph: Graph, x_name: str) -> tuple[Node, list[tuple[Node, list[np.ndarray]]]] | None:
    """The recurrent node whose Y reaches ``x_name`` through MOVE_OPS with constant parameters, and the ops."""
    ops: list[tuple[Node, list[np.ndarray]]] = []
    name = x_name
    while True:
        kind, where, found = scopes.lookup(graph, name)
        if kind != "node" or where is not graph or found.domain not in ("", "ai.onnx"):
            return None
        if found.op_type in RECURRENT_OPS:
            return (found, ops[::-1]) if found.outputs and found.outputs[0] == name else None
        if found.op_type not in MOVE_OPS or not found.inputs:
            return None
        params = []
        for i in found.inputs[1:]:
            if not i:
                continue
            pkind, _, pfound = scopes.lookup(graph, i)
            if pkind != "tensor":
                return None  # a computed parameter (Shape -> Gather -> Concat ...): not checked here
            params.append(np.asarray(pfound[2].numpy()))
        if len(params) > (1 if found.op_type in _PARAM else 0):
            return None
        ops.append((found, params))
        name = found.inputs[0]


_MAX_TRACE = 1 << 22  # elements of Y traced with the model's declared sizes


def _stacks_exactly(ops: list[tuple[Node, list[np.ndarray]]], dirs: int, hidden: int, layout: int,
                    declared: tuple[int, int] | None) -> bool:
    """The chain turns Y into the stacked X for the model's declared (dim 0, dim 1) of X when known (a
    Reshape may hard-code them, as static exports do), else for two unrelated sizes (so a hard-coded
    shape cannot pass by coincidence)."""
    if declared is not None and declared[0] * declared[1] * dirs * hidden <= _MAX_TRACE:
        sizes = [declared]
    else:
        sizes = [(3, 2), (5, 4)]
    for a, b in sizes:
        y_shape = (a, dirs, b, hidden) if layout == 0 else (a, b, dirs, hidden)
        y = np.arange(int(np.prod(y_shape)), dtype=np.int64).reshape(y_shape)
        want = (y.transpose(0, 2, 1, 3) if layout == 0 else y).reshape(a, b, dirs * hidden)
        try:
            got = y
            for node, params in ops:
                got = _apply(node, got, params)
        except (ValueError, IndexError, KeyError, TypeError):
            return False
        if got.shape != want.shape or not np.array_equal(got, want):
            return False
    return True


def _input_dims(graph: Graph, name: str) -> tuple[int | None, ...] | None:
    """A graph input's shape as the model declares it (in this graph or an enclosing one)."""
    g: Graph | None = graph
    while g is not None:
        if name in g.input_dims:
            return g.input_dims[name]
        g = g.parent
    return None


def _declared(scopes: _Scopes, graph: Graph, name: str) -> tuple[int, int] | None:
    """Dims 0 and 1 of the first layer's X as the model declares them: a graph input, or one moved by MOVE_OPS
    with constant parameters (a batch-first model's ``Transpose(perm=[1, 0, 2])``), its shape followed through."""
    ops: list[tuple[Node, list[np.ndarray]]] = []
    while True:
        dims = _input_dims(graph, name)
        if dims is not None:
            break
        kind, where, found = scopes.lookup(graph, name)
        if kind != "node" or where is not graph or found.op_type not in MOVE_OPS or found.domain not in ("", "ai.onnx") \
                or not found.inputs:
            return None
        params = []
        for i in found.inputs[1:]:
            pkind, _, pfound = scopes.lookup(graph, i) if i else ("absent", None, None)
            if pkind == "tensor":
                params.append(np.asarray(pfound[2].numpy()))
            elif i:
                return None
        ops.append((found, params))
        name = found.inputs[0]
    if not dims or any(not d for d in dims) or int(np.prod(dims)) > _MAX_TRACE:
        return None
    x = np.zeros(tuple(int(d) for d in dims), np.int8)  # type: ignore[arg-type]
    try:
        for node, params in reversed(ops):
            x = _apply(node, x, params)
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    return (x.shape[0], x.shape[1]) if x.ndim == 3 and x.shape[0] and x.shape[1] else None


def layer_links(model: Model, nodes: Sequence[RecurrentNode], hidden: Sequence[int]) -> dict[int, int]:
    """``{k: j}``: node ``k``'s X is node ``j``'s Y stacked exactly (both of ``nodes``, in graph order;
    ``hidden[j]`` is node j's hidden size). A node whose Y feeds more than one recurrent node links to none."""
    scopes = _Scopes(model)
    by_scope: dict[str, Graph] = {}
    for g in model.graphs():
        by_scope.setdefault(g.scope, g)
    index = {(n.graph_scope, n.outputs[0]): j for j, n in enumerate(nodes) if n.outputs and n.outputs[0]}
    found: dict[int, int] = {}
    sizes: dict[int, tuple[int, int] | None] = {}
    for k, node in enumerate(nodes):
        graph = by_scope.get(node.graph_scope)
        x = node.inputs["X"].name
        if graph is None or not x:
            continue
        if k not in sizes:
            sizes[k] = _declared(scopes, graph, x)
        hit = _chain(scopes, graph, x)
        if hit is None:
            continue
        producer, ops = hit
        j = index.get((node.graph_scope, producer.outputs[0]))
        if j is None or j == k:
            continue
        if _stacks_exactly(ops, nodes[j].num_directions, hidden[j], nodes[j].layout, sizes.get(j)):
            found[k] = j
            sizes[k] = sizes.get(j)
    feeders = list(found.values())
    return {k: j for k, j in found.items() if feeders.count(j) == 1}
