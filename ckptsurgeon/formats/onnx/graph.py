"""Recurrent nodes of an ONNX model, described for recognition from the graph (not from names).

For every ``LSTM``/``GRU``/``RNN`` node, in the main graph and in every subgraph: its scope (the node's
path), every attribute exactly as stored plus the ONNX default for each one the file leaves out
(``stated`` says which the file states), and for each weight/state input where its value comes from:

- ``initializer`` / ``constant``: a tensor of the model, at its scope path (``path``);
- ``folded``: a chain of element-moving ops (``fold.DATA_INPUTS``) and ``Cast`` from constants, folded with
  ``onnx.reference`` on that chain alone; ``sources`` are the tensors its elements come from, ``params``
  the constants that only shape it (axes, starts, indices); ``writable`` says whether a new value can be
  written back into the sources exactly (and ``reason`` why not): ``also_feeds`` names every other node
  whose input would change with them (a consumer of a source, of the chain's intermediate values or of
  its result), ``blocker`` any other reason;
- ``graph_input`` (fed at run time), ``computed`` (depends on one, or on an op outside the table) or
  ``absent``.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ...errors import FormatError, OutputError
from ...index import TensorRef
from .fold import DATA_INPUTS, FOLDABLE, Chain, fold, topo_order, write_back
from .model import Graph, Model, Node, SparseInfo, TensorInfo
from .onnx_fmt import _refs, load_model, tensor_entries

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["QUANTIZED_RECURRENT", "quantized_recurrent", "RECURRENT_OPS", "INPUT_ROLES", "ATTRIBUTE_DEFAULTS", "SourceTensor", "NodeInput", "RecurrentNode",
           "describe_recurrent"]

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# Operator inputs by position (onnx/defs/rnn/defs.cc).
INPUT_ROLES: dict[str, tuple[str, ...]] = {
    "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
    "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# Defaults of the attributes a file may leave out (ONNX operator definitions, opsets 7-22). The default
# activations are per direction: f, g, h for LSTM; f, g for GRU; f for RNN.
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ATTRIBUTE_DEFAULTS: dict[str, Any] = {
    "direction": "forward", "activation_alpha": (), "activation_beta": (), "clip": None,
    "input_forget": 0, "linear_before_reset": 0, "layout": 0,
}


@dataclass(frozen=True)
class SourceTensor:
    """A tensor of the model a node input is made from: its scope path, ONNX name and kind
    (``initializer``, ``sparse_initializer``, ``constant``: a Constant node's value)."""

    path: str
    name: str
    kind: str


@dataclass
class NodeInput:
    """Where one input of a recurrent node comes from (see the module docstring for ``origin``)."""

    role: str
    name: str
    origin: str
    path: str | None = None
    sources: tuple[SourceTensor, ...] = ()
    params: tuple[SourceTensor, ...] = ()
    ops: tuple[str, ...] = ()  # the folded chain's op types, in evaluation order
    chain_nodes: tuple[str, ...] = ()  # and the chain nodes' paths
    writable: bool = False
    reason: str = ""
    also_feeds: tuple[str, ...] = ()  # other nodes (paths) whose inputs change when the sources are rewritten
    blocker: str = ""  # why the sources cannot be rewritten at all (storage form, data used as a parameter)
    _chain: Chain | None = field(default=None, repr=False)
    _ref: TensorRef | None = field(default=None, repr=False)

    def value(self) -> np.ndarray:
        """The input's value: the tensor read, or the chain folded (with ``onnx.reference``)."""
        if self._ref is not None:
            return self._ref.numpy()
        if self._chain is not None:
            return fold(self._chain)
        raise OutputError(f"input {self.role} ({self.name!r}) is {self.origin}: it has no value in the file")

    def value_with(self, refs: Mapping[str, TensorRef]) -> np.ndarray:
        """The input's value with its data sources read from ``refs`` (scope path -> TensorRef) where
        given, else from the model: what the input becomes once those tensors are replaced."""
        if self._ref is not None:
            return refs.get(self.path or "", self._ref).numpy()
        if self._chain is not None:
            paths = {s.name: s.path for s in self.sources}
            leaves = {n: refs.get(paths[n], ref) if n in paths else ref for n, ref in self._chain.leaves.items()}
            return fold(replace(self._chain, leaves=leaves))
        return self.value()

    def blocked(self, shared: Collection[str] = ()) -> str:
        """Why a new value cannot be written back ('' if it can), when the ``shared`` nodes may change too."""
        if self.origin not in ("initializer", "constant", "folded"):
            return self.reason or f"it is {self.origin}"
        rest = [c for c in self.also_feeds if c not in set(shared)]
        return self.blocker or (_feeds_reason(self.sources, rest) if rest else "")

    def write_back(self, new: np.ndarray, shared: Collection[str] = ()) -> dict[str, np.ndarray]:
        """{source scope path: new array} that makes this input equal ``new`` exactly; refused if not writable.

        ``shared``: nodes that may change with the sources (the caller checks them: other nodes computing with
        the same tensors, ``onnx_graph``)."""
        why = self.blocked(shared)
        if why:
            raise OutputError(f"input {self.role} ({self.name!r}) cannot be written back: {why}")
        if self._ref is not None:
            arr = np.asarray(new)
            if arr.shape != self._ref.shape:
                raise OutputError(f"input {self.role}: new value has shape {list(arr.shape)}, the model {list(self._ref.shape)}")
            return {self.path or "": arr}
        assert self._chain is not None
        by_name = {s.name: s.path for s in self.sources}
        out = write_back(self._chain, new, f"input {self.role} ({self.name!r})")
        return {by_name[name]: arr for name, arr in out.items()}


@dataclass
class RecurrentNode:
    """One ONNX ``LSTM``/``GRU``/``RNN`` node: attributes exactly, inputs with their origins."""

    scope: str
    op_type: str
    name: str
    opset: int
    attributes: dict[str, Any]  # exactly as stored (strings decoded, lists as tuples)
    stated: frozenset[str]  # the attributes the file states; the others below are ONNX defaults
    direction: str
    hidden_size: int | None
    activations: tuple[str, ...]
    activation_alpha: tuple[float, ...]
    activation_beta: tuple[float, ...]
    clip: float | None
    input_forget: int
    linear_before_reset: int
    layout: int
    inputs: dict[str, NodeInput]
    outputs: tuple[str, ...]
    graph_scope: str

    @property
    def kind(self) -> str:
        return self.op_type.lower()

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def gates(self) -> int:
        return GATES[self.op_type]


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return tuple(_attr_value(x) for x in v)
    return v


class _Scopes:
    """Name resolution across a model's graphs: producers, tensors and graph inputs per graph."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.tensors: dict[tuple[int, str], tuple[str, str, TensorRef]] = {}
        for path, key, graph, what, kind in tensor_entries(model):
            if kind == "attribute":
                continue
            name = what.name if isinstance(what, TensorInfo) else what.values.name if isinstance(what, SparseInfo) \
                else what[1].outputs[0]
            refs = [r for _, r in _refs(model, path, key, what, kind) if isinstance(r, TensorRef)]
            if refs:
                self.tensors[(id(graph), name)] = (path, kind, refs[0])
        self.producers: dict[tuple[int, str], Node] = {}
        self.inputs: set[tuple[int, str]] = set()
        self.consumers: dict[str, list[str]] = {}
        for g in model.graphs():
            for n in g.nodes:
                for o in n.outputs:
                    if o:
                        self.producers[(id(g), o)] = n
                for i in n.inputs:
                    self.consumers.setdefault(i, []).append(n.path)
            for i in g.inputs:
                self.inputs.add((id(g), i))
            for o in g.outputs:
                self.consumers.setdefault(o, []).append(f"{g.scope or 'graph'} output")

    def lookup(self, graph: Graph | None, name: str) -> tuple[str, Graph | None, Any]:
        """('node', graph, Node) | ('tensor', graph, (path, kind, ref)) | ('input', graph, None) | ('missing' ...)."""
        g = graph
        while g is not None:
            key = (id(g), name)
            if key in self.tensors:  # initializers and Constant nodes' values; an initializer that is also
                return "tensor", g, self.tensors[key]  # a graph input is a default value: noted by the caller
            if key in self.producers:
                return "node", g, self.producers[key]
            if key in self.inputs:
                return "input", g, None
            g = g.parent
        return "missing", None, None


def _describe_input(scopes: _Scopes, graph: Graph, node: Node, role: str, name: str) -> NodeInput:
    if not name:
        return NodeInput(role, name, "absent")
    kind, g, found = scopes.lookup(graph, name)
    if kind == "tensor":
        path, tkind, ref = found
        blocker = "" if tkind in ("initializer", "constant") and ref.in_place else \
            f"{path!r} is not stored as one byte range (a typed varint field, a packed sub-byte type, a sparse " \
            "tensor or a Constant's value_floats/value_ints); it cannot be rewritten in place"
        source = SourceTensor(path, name, tkind)
        others = tuple(dict.fromkeys(c for c in scopes.consumers.get(name, []) if c != node.path))
        reason = blocker or (_feeds_reason((source,), others) if others else "")
        note = " (also a graph input: a run-time feed overrides it)" if (id(g), name) in scopes.inputs else ""
        return NodeInput(role, name, "constant" if tkind == "constant" else "initializer", path, (source,),
                         writable=not reason, reason=reason + note, also_feeds=others, blocker=blocker, _ref=ref)
    if kind == "input":
        return NodeInput(role, name, "graph_input", reason=f"{name!r} is fed at run time")
    if kind == "missing":
        raise FormatError(f"{scopes.model.path}: node {node.path!r} input {role} names {name!r}, which nothing defines")
    return _describe_chain(scopes, graph, node, role, name)


def _feeds_reason(sources: tuple[SourceTensor, ...], others: Collection[str]) -> str:
    shown = ", ".join(list(others)[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    names = ", ".join(repr(s.path) for s in sources)
    return f"{names} also feeds {shown} (through the same values): rewriting it would change what that computes too"


def _describe_chain(scopes: _Scopes, graph: Graph, node: Node, role: str, name: str) -> NodeInput:
    nodes: dict[int, tuple[Node, Graph]] = {}
    leaves: dict[str, tuple[str, str, TensorRef]] = {}
    data_leaves: set[str] = set()
    param_leaves: set[str] = set()
    stack: list[tuple[str, Graph, bool]] = [(name, graph, True)]
    seen: set[tuple[str, int, bool]] = set()
    while stack:
        value, g, is_data = stack.pop()
        if (value, id(g), is_data) in seen or not value:
            continue
        seen.add((value, id(g), is_data))
        kind, where, found = scopes.lookup(g, value)
        if kind == "tensor":
            leaves[value] = found
            (data_leaves if is_data else param_leaves).add(value)
        elif kind == "node":
            n = found
            if n.op_type not in FOLDABLE or n.domain not in ("", "ai.onnx"):
                return NodeInput(role, name, "computed", reason=f"made by {n.op_type} node {n.path!r}, "
                                 f"which ckptsurgeon does not fold (folds: {', '.join(sorted(FOLDABLE))})")
            nodes[id(n)] = (n, where)
            data_pos = DATA_INPUTS[n.op_type]
            for k, i in enumerate(n.inputs):
                stack.append((i, where, is_data and (data_pos is None or k in data_pos)))
        else:
            return NodeInput(role, name, "computed", reason=f"depends on {value!r}, which is fed at run time")
    chain_nodes = [n for n, _ in sorted(nodes.values(), key=lambda t: (t[1].depth, t[0].index))]
    chain_nodes = topo_order(chain_nodes)
    values = {v: ref for v, (_, _, ref) in leaves.items()}
    opset = int(scopes.model.metadata.get("opset_import", {}).get("ai.onnx", 0))  # type: ignore[union-attr]
    chain = Chain(name, tuple(chain_nodes), values, tuple(sorted(data_leaves)), opset,
                  int(scopes.model.metadata.get("ir_version", 8)))  # type: ignore[arg-type]
    sources = tuple(SourceTensor(leaves[v][0], v, leaves[v][1]) for v in sorted(data_leaves))
    params = tuple(SourceTensor(leaves[v][0], v, leaves[v][1]) for v in sorted(param_leaves - data_leaves))
    blocker = ""
    chain_paths = {n.path for n in chain_nodes}
    if data_leaves & param_leaves:
        blocker = f"{', '.join(sorted(data_leaves & param_leaves))} is both data and a parameter of the chain"
    for v in sorted(data_leaves):
        path, tkind, ref = leaves[v]
        if not blocker and (tkind not in ("initializer", "constant") or not ref.in_place):
            blocker = f"source {path!r} is not stored as one byte range; it cannot be rewritten in place"
    # Every value that changes with the data sources: the sources, each chain node's outputs (only data-carrying
    # chain nodes exist: parameters are leaves) and the result. Their consumers outside the chain change too.
    changed = [*sorted(data_leaves), *(o for n in chain_nodes for o in n.outputs if o)]
    others = tuple(dict.fromkeys(c for v in changed for c in scopes.consumers.get(v, [])
                                 if c not in chain_paths and c != node.path))
    reason = blocker or (_feeds_reason(sources, others) if others else "")
    return NodeInput(role, name, "folded", sources=sources, params=params, ops=tuple(n.op_type for n in chain_nodes),
                     chain_nodes=tuple(n.path for n in chain_nodes), writable=not reason, reason=reason,
                     also_feeds=others, blocker=blocker, _chain=chain)


def _describe_node(scopes: _Scopes, graph: Graph, node: Node, opset: int) -> RecurrentNode:
    attrs = {name: _attr_value(a.value) for name, a in node.attrs.items()}
    get = lambda k: attrs.get(k, ATTRIBUTE_DEFAULTS.get(k))  # noqa: E731
    direction = get("direction")
    dirs = 2 if direction == "bidirectional" else 1
    inputs = {}
    roles = INPUT_ROLES[node.op_type]
    for k, role in enumerate(roles):
        name = node.inputs[k] if k < len(node.inputs) else ""
        inputs[role] = _describe_input(scopes, graph, node, role, name)
    clip = attrs.get("clip")
    return RecurrentNode(
        scope=node.path, op_type=node.op_type, name=node.name, opset=opset, attributes=attrs,
        stated=frozenset(attrs), direction=direction,
        hidden_size=attrs.get("hidden_size"),
        activations=tuple(attrs.get("activations", DEFAULT_ACTIVATIONS[node.op_type] * dirs)),
        activation_alpha=tuple(get("activation_alpha")), activation_beta=tuple(get("activation_beta")),
        clip=None if clip is None else float(clip), input_forget=int(get("input_forget")),
        linear_before_reset=int(get("linear_before_reset")), layout=int(get("layout")),
        inputs=inputs, outputs=tuple(node.outputs), graph_scope=graph.scope)


def describe_recurrent(model: str | Model) -> list[RecurrentNode]:
    """Every LSTM/GRU/RNN node of the model (main graph first, then subgraphs), described."""
    m = load_model(model) if isinstance(model, str) else model
    opset = int(m.metadata.get("opset_import", {}).get("ai.onnx", 0))  # type: ignore[union-attr]
    scopes = _Scopes(m)
    out = []
    for graph in m.graphs():
        for node in graph.nodes:
            if node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx"):
                out.append(_describe_node(scopes, graph, node, opset))
    return out


# Recurrent operators of other domains that hold quantized weights: listed and extracted, never converted.
QUANTIZED_RECURRENT = {("com.microsoft", "DynamicQuantizeLSTM"): "int8 W and R with per-direction scales and zero points"}


def quantized_recurrent(model: str | Model) -> list[tuple[str, str, list[str], str]]:
    """(node path, op type, the initializers it reads, what they hold) for quantized recurrent nodes."""
    m = load_model(model) if isinstance(model, str) else model
    out = []
    for graph in m.graphs():
        for node in graph.nodes:
            what = QUANTIZED_RECURRENT.get((node.domain, node.op_type))
            if what is not None:
                out.append((node.path, node.op_type, [name for name in node.inputs if name], what))
    return out
