"""The structure of an ONNX ModelProto, parsed by byte range (``onnx.proto`` field numbers), no tensor bytes.

Graphs, nodes, attributes and TensorProto *locations* are decoded; a tensor's data stays where it is
(``raw_data``, typed fields or an external file) until a TensorRef reads it. Subgraphs (``If``/``Loop``/
``Scan`` bodies) get their node's path as scope. Every message keeps the chain of enclosing length
prefixes (``containers``), so the graft writer can re-encode one tensor and fix the lengths around it.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ...errors import FormatError, UnsafeCheckpointError
from .wire import Field, Wire, decode_packed

__all__ = ["TensorInfo", "SparseInfo", "Attr", "Node", "Graph", "Model", "parse_model", "Span", "MAX_DEPTH"]

MAX_DEPTH = 32  # nested subgraphs (an If in a Loop body in ...); deeper is refused as hostile
MAX_TEXT = 1 << 20  # names, strings and doc strings read into memory
MAX_ATTR = 1 << 26  # an attribute's ints/floats list read into memory

# AttributeProto.AttributeType (onnx.proto)
A_FLOAT, A_INT, A_STRING, A_TENSOR, A_GRAPH, A_FLOATS, A_INTS, A_STRINGS, A_TENSORS, A_GRAPHS = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
A_SPARSE, A_SPARSES = 11, 12


@dataclass(frozen=True)
class Span:
    """A length-delimited message: its tag at ``head``, length prefix at ``lenpos``, payload ``start:end``."""

    head: int
    lenpos: int
    start: int
    end: int

    @staticmethod
    def of(f: Field) -> Span:
        return Span(f.head, f.lenpos, f.start, f.end)


@dataclass
class TensorInfo:
    """A TensorProto's header and where its data is; ``typed`` maps a typed field number to its fields."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    span: Span
    containers: tuple[Span, ...]
    raw: Span | None = None
    typed: dict[int, list[Field]] = field(default_factory=dict)
    external: dict[str, str] | None = None
    segment: bool = False
    doc: str = ""


@dataclass
class SparseInfo:
    """A SparseTensorProto: dense ``dims``, ``values`` [NNZ] and ``indices`` [NNZ] or [NNZ, rank]."""

    values: TensorInfo
    indices: TensorInfo | None
    dims: tuple[int, ...]


@dataclass
class Attr:
    """An AttributeProto, decoded; tensors and graphs stay TensorInfo / Graph."""

    name: str
    type: int
    f: float | None = None
    i: int | None = None
    s: bytes | None = None
    floats: list[float] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    strings: list[bytes] = field(default_factory=list)
    t: TensorInfo | None = None
    sparse: SparseInfo | None = None
    g: Graph | None = None
    graphs: list[Graph] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)
    ref_attr_name: str = ""

    @property
    def value(self) -> object:
        """The attribute's value as ONNX's ``helper.get_attribute_value`` gives it (bytes for strings)."""
        return {A_FLOAT: self.f, A_INT: self.i, A_STRING: self.s, A_TENSOR: self.t, A_GRAPH: self.g,
                A_FLOATS: self.floats, A_INTS: self.ints, A_STRINGS: self.strings, A_TENSORS: self.tensors,
                A_GRAPHS: self.graphs, A_SPARSE: self.sparse}.get(self.type)


@dataclass
class Node:
    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Attr]
    path: str = ""  # scope path of the node (its graph's scope + its name, or op_type_index)
    index: int = 0  # position in its graph


@dataclass
class Graph:
    """A GraphProto at a scope ('' for the main graph, the owning node's path + attribute name below)."""

    scope: str
    name: str = ""
    nodes: list[Node] = field(default_factory=list)
    initializers: list[TensorInfo] = field(default_factory=list)
    sparse: list[SparseInfo] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_dims: dict[str, tuple[int | None, ...]] = field(default_factory=dict)  # declared shapes (None: symbolic)
    parent: Graph | None = None
    owner: Node | None = None
    depth: int = 0

    def walk(self) -> Iterator[Graph]:
        """This graph and every subgraph below it, parents first."""
        yield self
        for node in self.nodes:
            for attr in node.attrs.values():
                for g in ([attr.g] if attr.g is not None else []) + attr.graphs:
                    yield from g.walk()


@dataclass
class Model:
    path: str
    graph: Graph
    metadata: dict[str, object]
    functions: list[Graph] = field(default_factory=list)
    extra_graphs: list[Graph] = field(default_factory=list)  # training_info initialization/algorithm

    def graphs(self) -> Iterator[Graph]:
        for g in [self.graph, *self.extra_graphs, *self.functions]:
            yield from g.walk()


def name_segments(name: str) -> list[str]:
    """Scope segments of an ONNX name: ``/cell/Slice_output_0`` and ``cell.weight_ih`` both split."""
    segs = [s for s in name.replace(".", "/").split("/") if s]
    return segs or ["_"]


class _Parser:
    def __init__(self, wire: Wire) -> None:
        self.w = wire
        self.name = wire.name

    def text(self, f: Field, what: str) -> str:
        return self.w.read(f.start, f.end, MAX_TEXT, what).decode("utf-8", "replace")

    def ints(self, fields: list[Field], what: str) -> list[int]:
        return [v - (1 << 64) if v >= 1 << 63 else v for v in decode_packed(self.w, fields, "varint", MAX_ATTR, what)]

    def tensor(self, span: Span, containers: tuple[Span, ...]) -> TensorInfo:
        info = TensorInfo("", 0, (), span, containers)
        dims: list[Field] = []
        for f in self.w.fields(span.start, span.end):
            n = f.number
            if n == 1:
                dims.append(f)
            elif n == 2 and f.wire == 0:
                info.data_type = f.value
            elif n == 3:
                info.segment = True
            elif n in (4, 5, 6, 7, 10, 11):
                info.typed.setdefault(n, []).append(f)
            elif n == 8 and f.wire == 2:
                info.name = self.text(f, "tensor name")
            elif n == 9 and f.wire == 2:
                info.raw = Span.of(f)
            elif n == 12 and f.wire == 2:
                info.doc = self.text(f, "tensor doc_string")
            elif n == 13 and f.wire == 2:
                info.external = info.external or {}
                key, value = self.entry(f)
                info.external[key] = value
            elif n == 14 and f.wire == 0:
                if f.value == 1:
                    info.external = info.external or {}
                elif f.value != 0:
                    raise FormatError(f"{self.name}: tensor at byte {span.start}: unknown data_location {f.value}")
        info.dims = tuple(self.ints(dims, "tensor dims"))
        if any(d < 0 for d in info.dims):
            raise FormatError(f"{self.name}: tensor {info.name!r}: negative dimension in {list(info.dims)}")
        return info

    def entry(self, f: Field) -> tuple[str, str]:
        key = value = ""
        for e in self.w.fields(f.start, f.end):
            if e.number == 1 and e.wire == 2:
                key = self.text(e, "key")
            elif e.number == 2 and e.wire == 2:
                value = self.text(e, "value")
        return key, value

    def sparse(self, span: Span, containers: tuple[Span, ...]) -> SparseInfo:
        values = indices = None
        dims: list[Field] = []
        inner = containers + (span,)
        for f in self.w.fields(span.start, span.end):
            if f.number == 1 and f.wire == 2:
                values = self.tensor(Span.of(f), inner)
            elif f.number == 2 and f.wire == 2:
                indices = self.tensor(Span.of(f), inner)
            elif f.number == 3:
                dims.append(f)
        if values is None:
            raise FormatError(f"{self.name}: sparse tensor at byte {span.start} has no values")
        return SparseInfo(values, indices, tuple(self.ints(dims, "sparse dims")))

    def attr(self, span: Span, containers: tuple[Span, ...], node_path: str, depth: int, parent: Graph) -> Attr:
        a = Attr("", 0)
        inner = containers + (span,)
        floats: list[Field] = []
        ints: list[Field] = []
        graphs: list[Field] = []
        for f in self.w.fields(span.start, span.end):
            n = f.number
            if n == 1 and f.wire == 2:
                a.name = self.text(f, "attribute name")
            elif n == 20 and f.wire == 0:
                a.type = f.value
            elif n == 21 and f.wire == 2:
                a.ref_attr_name = self.text(f, "ref_attr_name")
            elif n == 2 and f.wire == 5:
                a.f = struct.unpack("<f", struct.pack("<I", f.value))[0]
            elif n == 3 and f.wire == 0:
                a.i = f.value - (1 << 64) if f.value >= 1 << 63 else f.value
            elif n == 4 and f.wire == 2:
                a.s = self.w.read(f.start, f.end, MAX_TEXT, "attribute string")
            elif n == 5 and f.wire == 2:
                a.t = self.tensor(Span.of(f), inner)
            elif n == 22 and f.wire == 2:
                a.sparse = self.sparse(Span.of(f), inner)
            elif n in (6, 11) and f.wire == 2:
                graphs.append(f)
            elif n == 7:
                floats.append(f)
            elif n == 8:
                ints.append(f)
            elif n == 9 and f.wire == 2:
                a.strings.append(self.w.read(f.start, f.end, MAX_TEXT, "attribute strings"))
            elif n == 10 and f.wire == 2:
                a.tensors.append(self.tensor(Span.of(f), inner))
        bits = decode_packed(self.w, floats, "fixed32", MAX_ATTR, f"attribute {a.name!r} floats")
        a.floats = list(struct.unpack(f"<{len(bits)}f", struct.pack(f"<{len(bits)}I", *bits))) if bits else []
        a.ints = self.ints(ints, f"attribute {a.name!r} ints")
        for k, f in enumerate(graphs):
            scope = f"{node_path}/{a.name or 'graph'}" + (f"/{k}" if f.number == 11 else "")
            g = self.graph(Span.of(f), inner, scope, depth + 1, parent)
            if f.number == 6:
                a.g = g
            else:
                a.graphs.append(g)
        if not a.type:  # IR < 3 files may omit the type: infer it from the field present, as onnx does
            a.type = next((t for t, v in ((A_FLOAT, a.f), (A_INT, a.i), (A_STRING, a.s), (A_TENSOR, a.t),
                                          (A_GRAPH, a.g), (A_SPARSE, a.sparse)) if v is not None), 0) or next(
                (t for t, v in ((A_FLOATS, a.floats), (A_INTS, a.ints), (A_STRINGS, a.strings),
                                (A_TENSORS, a.tensors), (A_GRAPHS, a.graphs)) if v), 0)
        return a

    def node(self, span: Span, containers: tuple[Span, ...], graph: Graph, index: int, taken: set[str]) -> Node:
        node = Node("", "", "", [], [], {}, index=index)
        attrs: list[Field] = []
        for f in self.w.fields(span.start, span.end):
            n = f.number
            if n == 1 and f.wire == 2:
                node.inputs.append(self.text(f, "node input"))
            elif n == 2 and f.wire == 2:
                node.outputs.append(self.text(f, "node output"))
            elif n == 3 and f.wire == 2:
                node.name = self.text(f, "node name")
            elif n == 4 and f.wire == 2:
                node.op_type = self.text(f, "op_type")
            elif n == 7 and f.wire == 2:
                node.domain = self.text(f, "domain")
            elif n == 5 and f.wire == 2:
                attrs.append(f)
        segs = name_segments(node.name) if node.name else [f"{node.op_type or 'node'}_{index}"]
        path = "/".join(([graph.scope] if graph.scope else []) + segs)
        if path in taken:
            path = f"{path}#{index}"
        taken.add(path)
        node.path = path
        for f in attrs:
            a = self.attr(Span.of(f), containers + (span,), path, graph.depth, graph)
            node.attrs[a.name] = a
        for a in node.attrs.values():
            for g in ([a.g] if a.g is not None else []) + a.graphs:
                g.owner = node
        return node

    def graph(self, span: Span, containers: tuple[Span, ...], scope: str, depth: int, parent: Graph | None) -> Graph:
        if depth > MAX_DEPTH:
            raise UnsafeCheckpointError(f"{self.name}: subgraphs nested over {MAX_DEPTH} deep at {scope!r}; refusing")
        g = Graph(scope, parent=parent, depth=depth)
        inner = containers + (span,)
        taken: set[str] = set()
        for f in self.w.fields(span.start, span.end):
            n = f.number
            if n == 1 and f.wire == 2:
                g.nodes.append(self.node(Span.of(f), inner, g, len(g.nodes), taken))
            elif n == 2 and f.wire == 2:
                g.name = self.text(f, "graph name")
            elif n == 5 and f.wire == 2:
                g.initializers.append(self.tensor(Span.of(f), inner))
            elif n == 15 and f.wire == 2:
                g.sparse.append(self.sparse(Span.of(f), inner))
            elif n in (11, 12) and f.wire == 2:
                name = next((self.text(e, "value name") for e in self.w.fields(f.start, f.end)
                             if e.number == 1 and e.wire == 2), "")
                (g.inputs if n == 11 else g.outputs).append(name)
                if n == 11:
                    dims = self.tensor_dims(f)
                    if dims is not None:
                        g.input_dims[name] = dims
        return g

    def tensor_dims(self, value_info: Field) -> tuple[int | None, ...] | None:
        """The declared shape of a ValueInfoProto's tensor type (``None`` per symbolic dimension), if any."""
        msg = value_info
        for number in (2, 1, 2):  # ValueInfoProto.type -> TypeProto.tensor_type -> Tensor.shape
            msg = next((e for e in self.w.fields(msg.start, msg.end) if e.number == number and e.wire == 2), None)
            if msg is None:
                return None
        dims: list[int | None] = []
        for d in self.w.fields(msg.start, msg.end):
            if d.number == 1 and d.wire == 2:
                value = next((e.value for e in self.w.fields(d.start, d.end) if e.number == 1 and e.wire == 0), None)
                dims.append(value)
        return tuple(dims)

    def function(self, span: Span, index: int) -> Graph:
        """A FunctionProto as a graph of its nodes (scope ``functions/<domain>.<name>``)."""
        name = domain = ""
        for f in self.w.fields(span.start, span.end):
            if f.number == 1 and f.wire == 2:
                name = self.text(f, "function name")
            elif f.number == 10 and f.wire == 2:
                domain = self.text(f, "function domain")
        g = Graph(f"functions/{domain + '.' if domain else ''}{name or index}", name=name, depth=1)
        taken: set[str] = set()
        for f in self.w.fields(span.start, span.end):
            if f.number == 7 and f.wire == 2:
                g.nodes.append(self.node(Span.of(f), (span,), g, len(g.nodes), taken))
            elif f.number in (4, 5) and f.wire == 2:
                (g.inputs if f.number == 4 else g.outputs).append(self.text(f, "function io"))
        return g


def parse_model(wire: Wire) -> Model:
    """Parse the ModelProto in ``wire`` (structure only). Raises FormatError on a malformed file."""
    p = _Parser(wire)
    meta: dict[str, object] = {}
    opsets: dict[str, int] = {}
    props: dict[str, str] = {}
    graph = None
    functions: list[Graph] = []
    extra: list[Graph] = []
    training = 0
    for f in wire.fields(0, wire.size):
        n = f.number
        if n == 1 and f.wire == 0:
            meta["ir_version"] = f.value
        elif n in (2, 3, 4, 6) and f.wire == 2:
            key = {2: "producer_name", 3: "producer_version", 4: "domain", 6: "doc_string"}[n]
            text = p.text(f, key) if f.end - f.start <= MAX_TEXT else ""
            meta[key] = text if len(text) <= 4096 else text[:4096] + f"... ({len(text)} characters)"
        elif n == 5 and f.wire == 0:
            meta["model_version"] = f.value
        elif n == 7 and f.wire == 2:
            graph = p.graph(Span.of(f), (), "", 0, None)
        elif n == 8 and f.wire == 2:
            domain, version = "", 0
            for e in wire.fields(f.start, f.end):
                if e.number == 1 and e.wire == 2:
                    domain = p.text(e, "opset domain")
                elif e.number == 2 and e.wire == 0:
                    version = e.value
            opsets[domain or "ai.onnx"] = version
        elif n == 14 and f.wire == 2:
            key, value = p.entry(f)
            props[key] = value
        elif n == 20 and f.wire == 2:
            k, training = training, training + 1
            for e in wire.fields(f.start, f.end):
                if e.number in (1, 2) and e.wire == 2:
                    part = "initialization" if e.number == 1 else "algorithm"
                    extra.append(p.graph(Span.of(e), (Span.of(f),), f"training_info/{k}/{part}", 1, None))
        elif n == 25 and f.wire == 2:
            functions.append(p.function(Span.of(f), len(functions)))
    if graph is None:
        raise FormatError(f"{wire.name}: ONNX model without a graph")
    meta["opset_import"] = opsets
    if props:
        meta["metadata_props"] = props
    if graph.name:
        meta["graph_name"] = graph.name
    return Model(wire.name, graph, meta, functions, extra)
