"""Fold a constant chain feeding one node input, with ``onnx.reference`` on a model of THAT CHAIN ONLY,
and write a new folded value back into the chain's source tensors, exactly or not at all.

Write-back traces where each element of the folded value comes from: the chain is run once more with
every data source replaced by distinct int64 ids (``Cast`` turned into ``Identity``), so each output
element names the source element it was moved from. Every op the chain may hold only moves elements
(``DATA_INPUTS`` below) or casts them, so this is exact; the new sources are then folded again and must
give the requested value bit for bit, else the write-back is refused (a value a ``Cast`` cannot carry
back, one source element asked to hold two different values).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import MissingDependencyError, OutputError
from ...index import TensorRef
from .model import A_FLOAT, A_FLOATS, A_INT, A_INTS, A_STRING, A_STRINGS, Node

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["DATA_INPUTS", "FOLDABLE", "Chain", "fold", "write_back"]

ALL = None
# Ops folded (and inverted for write-back), and which of their inputs carry data; the others (shapes,
# axes, starts/ends, indices, split sizes) are parameters. From the ONNX operator definitions.
DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Identity": (0,),
    "Cast": (0,),  # write-back only when the new value survives the cast back exactly
    "Reshape": (0,),  # 1: shape
    "Transpose": (0,),
    "Squeeze": (0,),  # 1: axes (opset >= 13)
    "Unsqueeze": (0,),  # 1: axes (opset >= 13)
    "Flatten": (0,),
    "Slice": (0,),  # 1-4: starts, ends, axes, steps
    "Concat": ALL,
    "Split": (0,),  # 1: split sizes (opset >= 13)
    "Gather": (0,),  # 1: indices
}
FOLDABLE = frozenset(DATA_INPUTS)


@dataclass(frozen=True)
class Chain:
    """The nodes computing ``output`` from constant ``leaves`` ({value name: lazy TensorRef}); the leaves whose
    elements flow into the output are named in ``data``, the others only parametrize the chain."""

    output: str
    nodes: tuple[Node, ...]  # in evaluation order
    leaves: Mapping[str, TensorRef]
    data: tuple[str, ...]  # leaves that flow into the output's elements
    opset: int
    ir_version: int


def _onnx() -> Any:
    try:
        import onnx
        import onnx.reference  # noqa: F401
    except ImportError:
        raise MissingDependencyError("onnx", "onnx", "folding the constant chain feeding an ONNX node input") from None
    return onnx


def _node_proto(onnx: Any, node: Node, trace: bool) -> Any:
    attrs = {}
    for a in node.attrs.values():
        if a.type not in (A_FLOAT, A_INT, A_STRING, A_FLOATS, A_INTS, A_STRINGS):
            raise OutputError(f"node {node.path!r}: attribute {a.name!r} of type {a.type} cannot be folded")
        attrs[a.name] = a.value
    if trace and node.op_type == "Cast":
        return onnx.helper.make_node("Identity", node.inputs[:1], node.outputs, name=node.name)
    return onnx.helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name, domain=node.domain, **attrs)


def _run(chain: Chain, leaves: Mapping[str, np.ndarray], trace: bool = False) -> np.ndarray:
    onnx = _onnx()
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = [numpy_helper.from_array(np.asarray(v), name) for name, v in leaves.items()]
    graph = helper.make_graph([_node_proto(onnx, n, trace) for n in chain.nodes], "chain", [],
                              [helper.make_empty_tensor_value_info(chain.output)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", chain.opset)])
    model.ir_version = chain.ir_version
    (out,) = ReferenceEvaluator(model).run(None, {})
    return np.asarray(out)


def _leaves(chain: Chain) -> dict[str, np.ndarray]:
    return {name: ref.numpy() for name, ref in chain.leaves.items()}


def fold(chain: Chain) -> np.ndarray:
    """The chain's output value (the chain alone is evaluated, never the model)."""
    return _run(chain, _leaves(chain))


def write_back(chain: Chain, new: np.ndarray, where: str) -> dict[str, np.ndarray]:
    """New values for the chain's data leaves such that folding them gives ``new`` exactly."""
    leaves = _leaves(chain)
    current = _run(chain, leaves)
    new = np.asarray(new)
    if new.shape != current.shape:
        raise OutputError(f"{where}: new value has shape {list(new.shape)}, the folded input {list(current.shape)}")
    cast = new.astype(current.dtype)
    if not np.array_equal(cast.astype(new.dtype), new, equal_nan=True):
        raise OutputError(f"{where}: the new value is not exactly representable as {current.dtype.name}")
    ids: dict[str, np.ndarray] = {}
    ranges: list[tuple[str, int, int]] = []
    base = 0
    for name in chain.data:
        n = leaves[name].size
        ids[name] = np.arange(base, base + n, dtype=np.int64).reshape(leaves[name].shape)
        ranges.append((name, base, n))
        base += n
    traced = _run(chain, {**leaves, **ids}, trace=True).reshape(-1)
    flat_new = cast.reshape(-1)
    out: dict[str, np.ndarray] = {}
    for name, b, n in ranges:
        old = leaves[name]
        mask = (traced >= b) & (traced < b + n)
        idx = traced[mask] - b
        vals = flat_new[mask].astype(old.dtype)
        arr = old.reshape(-1).copy()
        arr[idx] = vals
        if not np.array_equal(arr[idx], vals, equal_nan=True):
            raise OutputError(f"{where}: the chain uses some elements of {name!r} more than once and the new value "
                              "gives them different values; it cannot be written back")
        out[name] = arr.reshape(old.shape)
    again = _run(chain, {**leaves, **out})
    if again.dtype != cast.dtype or again.tobytes() != np.ascontiguousarray(cast).tobytes():
        raise OutputError(f"{where}: writing the new value back into {', '.join(chain.data)} does not reproduce it "
                          "exactly (a cast loses precision); refused")
    return out


def topo_order(nodes: Sequence[Node]) -> list[Node]:
    """Nodes ordered so each comes after the producers of its inputs (input nodes are a DAG)."""
    produced = {o: n for n in nodes for o in n.outputs}
    seen: set[int] = set()
    order: list[Node] = []

    def visit(n: Node) -> None:
        if id(n) in seen:
            return
        seen.add(id(n))
        for i in n.inputs:
            p = produced.get(i)
            if p is not None:
                visit(p)
        order.append(n)

    for n in nodes:
        visit(n)
    return order
