"""The nodes of a TF1 Saver's MetaGraph (``PREFIX.meta``) as data: names, ops, inputs, attributes and scalar
constants, in the graph and in the functions of its library (TF 2 control flow puts a loop's body there).

Nothing is built or run: the protobuf is decoded by ``protowire``. Fields read (tensorflow/core/framework):
MetaGraphDef.graph_def = 2; GraphDef.node = 1, .library = 2; FunctionDefLibrary.function = 1; FunctionDef.signature
= 1 (OpDef: name = 1, input_arg = 2 with name = 1), .node_def = 3; NodeDef: name = 1, op = 2, input = 3, attr = 5
(map entries: key = 1, value = 2); AttrValue: s = 2, i = 3, f = 4, b = 5, tensor = 8, func = 10 (name = 1);
TensorProto: dtype = 1, tensor_shape = 2 (dim = 2), tensor_content = 4, float_val = 5, double_val = 6,
string_val = 8.

Inputs are ``name``, ``name:k`` (graph) or ``node:out_arg:k`` and bare argument names (functions); control
inputs (``^name``) are dropped. A tensor is ``(scope, node, k)``, scope ``""`` for the graph or a function's name.
"""
from __future__ import annotations

import gc
import os
import re
import stat
import struct
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ...errors import FormatError
from ..protowire import decode

__all__ = ["Graph", "Node", "Tensor", "load_graph", "META_LIMIT", "VARIABLE_OPS"]

META_LIMIT = 256 << 20  # a MetaGraph larger than this is not read (its constants, not its nodes, make it big)
Tensor = tuple[str, str, int]  # (scope, node name, output index)
# ops that hand their input 0 on unchanged (a variable's value on its way into a cell)
PASS_THROUGH = frozenset({"Identity", "ReadVariableOp", "Enter", "RefEnter", "RefIdentity", "Snapshot"})
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})
# function-calling ops -> (attrs naming the functions, index of the first input bound to the function's arguments)
_CALLS = {"While": (("body",), 0), "StatelessWhile": (("body",), 0), "If": (("then_branch", "else_branch"), 1),
          "StatelessIf": (("then_branch", "else_branch"), 1), "PartitionedCall": (("f",), 0),
          "StatefulPartitionedCall": (("f",), 0)}
_FLOAT_DTYPES = {1: ("<f", 4), 2: ("<d", 8)}  # DT_FLOAT, DT_DOUBLE


@dataclass
class Node:
    scope: str
    name: str
    op: str
    inputs: tuple[Tensor, ...]
    raw_attrs: list  # NodeDef.attr map entries, decoded on first use (most nodes' are never read)
    _attrs: dict[str, bytes] | None = None

    @property
    def attrs(self) -> dict[str, bytes]:
        """Attribute name -> its encoded AttrValue."""
        if self._attrs is None:
            self._attrs = {}
            for entry in self.raw_attrs:
                try:
                    e = decode(entry) if isinstance(entry, bytes) else {}
                except FormatError:
                    continue
                key, value = e.get(1), e.get(2)
                if key and value and isinstance(value[-1], bytes):
                    self._attrs[_text(key[-1])] = value[-1]
        return self._attrs

    def _attr(self, key: str, field: int) -> int | bytes | None:
        """Field ``field`` of attribute ``key`` (a number or bytes), None when absent or damaged."""
        raw = self.attrs.get(key)
        try:
            values = decode(raw).get(field) if raw is not None else None
        except FormatError:
            return None
        return values[-1] if values else None

    def attr_float(self, key: str) -> float | None:
        value = self._attr(key, 4)
        return struct.unpack("<f", struct.pack("<I", value))[0] if isinstance(value, int) and value < 1 << 32 else None

    def attr_int(self, key: str) -> int | None:
        value = self._attr(key, 3)
        return value if isinstance(value, int) else None

    def attr_type(self, key: str) -> int | None:
        """A DataType attribute (``DstT`` of a Cast) as its enum number."""
        value = self._attr(key, 6)
        return value if isinstance(value, int) else None

    def attr_bool(self, key: str) -> bool | None:
        value = self._attr(key, 5)
        return bool(value) if isinstance(value, int) else None

    def attr_func(self, key: str) -> str | None:
        func = self._attr(key, 10)
        try:
            name = decode(func).get(1) if isinstance(func, bytes) else None
        except FormatError:
            return None
        return name[-1].decode("utf-8", "replace") if name and isinstance(name[-1], bytes) else None

    def strings(self) -> list[bytes] | None:
        """A string ``Const`` node's values (TensorProto.string_val), else None."""
        tensor = self._attr("value", 8) if self.op == "Const" else None
        try:
            fields = decode(tensor) if isinstance(tensor, bytes) else {}
        except FormatError:
            return None
        values = fields.get(8)
        if fields.get(1, [0])[-1] != 7 or values is None or not all(isinstance(v, bytes) for v in values):
            return None  # not DT_STRING
        return [bytes(v) for v in values]  # type: ignore[arg-type]

    def scalar(self) -> float | None:
        """A ``Const`` node's value if it is one float or double (any shape of one element), else None."""
        tensor = self._attr("value", 8) if self.op == "Const" else None
        if not isinstance(tensor, bytes):
            return None
        try:
            return _scalar(decode(tensor))
        except (FormatError, struct.error):
            return None


def _scalar(fields: dict[int, list[int | bytes]]) -> float | None:
    dtype = fields.get(1, [0])[-1]
    if dtype not in _FLOAT_DTYPES:
        return None
    fmt, size = _FLOAT_DTYPES[dtype]
    shape = fields.get(2)
    dims = [decode(d).get(1, [1])[-1] if isinstance(d, bytes) else 0
            for d in decode(shape[-1]).get(2, [])] if shape and isinstance(shape[-1], bytes) else []
    if any(d != 1 for d in dims):
        return None
    content = fields.get(4)
    if content and isinstance(content[-1], bytes) and len(content[-1]) == size:
        return struct.unpack(fmt, content[-1])[0]
    vals = fields.get(5 if dtype == 1 else 6)
    if not vals:
        return None
    last = vals[-1]
    if isinstance(last, bytes):  # packed
        return struct.unpack(fmt, last[-size:])[0] if len(last) >= size and len(last) % size == 0 else None
    return struct.unpack(fmt, struct.pack("<I" if size == 4 else "<Q", last))[0]


class Graph:
    """Every node of a MetaGraph's graph and function library, with who consumes each tensor."""

    def __init__(self, nodes: list[Node], args: dict[str, tuple[str, ...]]) -> None:
        self.nodes = {(n.scope, n.name): n for n in nodes}
        self.args = args  # function name -> its input argument names
        self._consumers: dict[Tensor, list[tuple[Node, int]]] = defaultdict(list)
        for node in nodes:
            for pos, tensor in enumerate(node.inputs):
                self._consumers[tensor].append((node, pos))

    def consumers(self, tensor: Tensor) -> list[tuple[Node, int]]:
        """(node, input position) of every node that reads ``tensor``."""
        return self._consumers.get(tensor, [])

    def producer(self, tensor: Tensor) -> Node | None:
        return self.nodes.get(tensor[:2])

    def source(self, tensor: Tensor) -> Node | None:
        """The node that makes ``tensor``, looking through pass-through ops (``Identity``, ``Enter`` ...)."""
        for _ in range(64):
            node = self.producer(tensor)
            if node is None or node.op not in PASS_THROUGH or not node.inputs:
                return node
            tensor = node.inputs[0]
        return None

    def saved_as(self) -> dict[str, str]:
        """Checkpoint name -> the graph variable the graph's Saver wrote under it (its ``SaveV2`` ops: tensor_names,
        then one tensor each), for ``Saver(var_list={name: variable})``; a name two Savers give different variables
        is left out."""
        out: dict[str, str] = {}
        clash: set[str] = set()
        for node in self.nodes.values():
            if node.op != "SaveV2" or node.scope or len(node.inputs) < 3:
                continue
            names_node = self.source(node.inputs[1])
            names = names_node.strings() if names_node is not None else None
            if names is None or len(names) != len(node.inputs) - 3:
                continue
            for raw, tensor in zip(names, node.inputs[3:]):
                var = self.source(tensor)
                name = raw.decode("utf-8", "replace")
                if var is None or var.op not in VARIABLE_OPS:
                    continue
                if out.setdefault(name, var.name) != var.name:
                    clash.add(name)
        return {k: v for k, v in out.items() if k not in clash}

    def uses(self, variable: str) -> list[tuple[Node, int]]:
        """Every (node, input position) that reads the value of the graph's variable ``variable``, through
        pass-through ops and into the functions a loop or call binds it to."""
        start = self.nodes.get(("", variable))
        if start is None or start.op not in VARIABLE_OPS:
            return []
        todo: list[Tensor] = [("", variable, 0)]
        seen: set[Tensor] = set(todo)
        out: list[tuple[Node, int]] = []

        def carry(tensor: Tensor) -> None:
            if tensor not in seen:
                seen.add(tensor)
                todo.append(tensor)

        while todo:
            for node, pos in self.consumers(todo.pop()):
                if node.op in PASS_THROUGH and pos == 0:
                    carry((node.scope, node.name, 0))
                elif node.op in _CALLS:
                    keys, first = _CALLS[node.op]
                    for key in keys:
                        func = node.attr_func(key)
                        names = self.args.get(func or "", ())
                        if first <= pos < first + len(names):
                            carry((func or "", names[pos - first], 0))
                else:
                    out.append((node, pos))
        return out


def _input(text: str, scope: str) -> Tensor | None:
    if text.startswith("^"):
        return None
    parts = text.split(":")
    if not scope:
        return ("", parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0)
    if len(parts) == 1:
        return (scope, parts[0], 0)  # an argument of the function
    return (scope, parts[0], int(parts[-1]) if parts[-1].isdigit() else 0)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


# a name tf.gradients gives its ops: gradients/..., tower_0/gradients_1/...
_GRADIENTS = re.compile(rb"(?:^|/)gradients(?:_\d+)?/")


def _backward(raw: bytes) -> bool:
    """Whether a NodeDef's name (field 1, serialized first) is one tf.gradients gave, read without decoding it."""
    if len(raw) < 2 or raw[0] != 0x0A or raw[1] >= 0x80:
        return False
    name = raw[2:2 + raw[1]]
    return b"gradients" in name and _GRADIENTS.search(name) is not None


def _nodes(raw_nodes: list, scope: str, out: list[Node]) -> None:
    for raw in raw_nodes:
        if not isinstance(raw, bytes):
            raise FormatError("a node is not a message")
        if _backward(raw):
            continue  # tf.gradients' ops (most of a training graph) never run a cell forward: not decoded
        f = decode(raw)
        inputs = tuple(t for t in (_input(_text(v), scope) for v in f.get(3, [])) if t is not None)
        out.append(Node(scope, _text(f.get(1, [b""])[-1]), _text(f.get(2, [b""])[-1]), inputs, f.get(5, [])))


def parse(meta: bytes) -> Graph:
    """The Graph of a serialized MetaGraphDef; a damaged one is a ``FormatError``."""
    collect = gc.isenabled()
    gc.disable()  # a large graph is hundreds of thousands of small objects that all live on: no cycle to collect,
    try:  # and the collector's passes over them cost twice the parsing itself (3.5 s instead of 1.3 s for 38 MB)
        return _parse(meta)
    finally:
        if collect:
            gc.enable()


def _parse(meta: bytes) -> Graph:
    nodes: list[Node] = []
    args: dict[str, tuple[str, ...]] = {}
    for graph in decode(meta).get(2) or []:
        if not isinstance(graph, bytes):
            raise FormatError("graph_def is not a message")
        g = decode(graph)
        _nodes(g.get(1, []), "", nodes)
        for lib in g.get(2, []):
            for func in decode(lib).get(1, []) if isinstance(lib, bytes) else []:
                fd = decode(func) if isinstance(func, bytes) else {}
                sig = decode(fd[1][-1]) if fd.get(1) and isinstance(fd[1][-1], bytes) else {}
                name = _text(sig.get(1, [b""])[-1])
                names = tuple(_text(decode(a).get(1, [b""])[-1]) for a in sig.get(2, []) if isinstance(a, bytes))
                args[name] = names
                _nodes(fd.get(3, []), name, nodes)
    return Graph(nodes, args)


@lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> Graph | None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        return None
    try:
        return parse(data)
    except FormatError:
        return None


def load_graph(meta_path: str) -> Graph | None:
    """The Graph of the MetaGraph at ``meta_path``; None when there is none, it is a link, too large or damaged."""
    try:
        st = os.stat(meta_path, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size > META_LIMIT:
            return None
        return _load(meta_path, st.st_size, st.st_mtime_ns)
    except OSError:
        return None
