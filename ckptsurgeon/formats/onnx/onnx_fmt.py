"""ONNX models (``.onnx``): every tensor the model holds, at a scope path, read without the onnx package.

Tensors: graph initializers, sparse initializers (densified when read), the tensors of ``Constant``
nodes (``value``, ``sparse_value``, and ``value_float(s)``/``value_int(s)`` as the float32/int64 tensors
they define; ``value_string(s)`` go to metadata) and every other tensor attribute (``ConstantOfShape``'s
``value`` ...) at ``<node path>/<attribute>``, in the main graph, in every subgraph (``If``/``Loop``/``Scan``
bodies, scoped by their node's path: ``If/then_branch/...``), in local functions (``functions/<name>``) and
in training-info graphs. Listing reads the model's structure only, never a tensor's bytes.
"""
from __future__ import annotations

from typing import Any

from ...index import CheckpointIndex, IndexBuilder, TensorRef
from ...source import open_source
from .model import Graph, Model, TensorInfo, name_segments, parse_model
from .tensors import scalar_ref, sparse_ref, tensor_ref
from .wire import Wire
from ..magic import sniff_onnx as sniff

__all__ = ["sniff", "read", "load_model", "tensor_entries", "FORMAT"]

FORMAT = "onnx"


def load_model(path: str) -> Model:
    """Parse the model's structure (no tensor bytes)."""
    return parse_model(Wire(open_source(path)))


def _path(graph: Graph, name: str) -> str:
    return "/".join(([graph.scope] if graph.scope else []) + name_segments(name))


def tensor_entries(model: Model) -> list[tuple[str, str, Graph, object, str]]:
    """(path, key, graph, what, kind) for every tensor the model holds, in file order per graph.

    ``what`` is a TensorInfo, a SparseInfo, or (attribute, node) for Constant scalars/lists and strings;
    ``kind`` is ``initializer``, ``sparse_initializer``, ``constant`` or ``attribute``. Paths are unique:
    a second tensor normalizing to a taken path gets ``#<n>`` appended.
    """
    rows: list[tuple[str, str, Graph, object, str]] = []
    taken: set[str] = set()

    def add(path: str, name: str, graph: Graph, what: object, kind: str) -> None:
        if path in taken:
            n = 2
            while f"{path}#{n}" in taken:
                n += 1
            path = f"{path}#{n}"
        taken.add(path)
        rows.append((path, name if not graph.scope else path, graph, what, kind))

    for graph in model.graphs():
        for t in graph.initializers:
            add(_path(graph, t.name), t.name, graph, t, "initializer")
        for sp in graph.sparse:
            add(_path(graph, sp.values.name), sp.values.name, graph, sp, "sparse_initializer")
        for node in graph.nodes:
            for attr in node.attrs.values():
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.outputs:
                    add(_path(graph, node.outputs[0]), node.outputs[0], graph, (attr, node), "constant")
                elif attr.t is not None or attr.sparse is not None or attr.tensors:
                    add(f"{node.path}/{attr.name}", f"{node.path}/{attr.name}", graph, (attr, node), "attribute")
    return rows


def _refs(model: Model, path: str, key: str, what: Any, kind: str) -> list[tuple[str, TensorRef | list[str] | str]]:
    """The TensorRefs of one entry (strings: a list for string tensors, a str for ``value_string``)."""
    file = model.path
    if isinstance(what, TensorInfo):
        return [(path, tensor_ref(file, what, path, key))]
    if kind == "sparse_initializer":
        return [(path, sparse_ref(file, what, path, key))]
    attr, _node = what
    if attr.t is not None:
        return [(path, tensor_ref(file, attr.t, path, key))]
    if attr.sparse is not None:
        return [(path, sparse_ref(file, attr.sparse, path, key))]
    if attr.tensors:
        return [(f"{path}/{k}", tensor_ref(file, t, f"{path}/{k}", f"{key}/{k}")) for k, t in enumerate(attr.tensors)]
    if attr.name == "value_float" and attr.f is not None:
        return [(path, scalar_ref(path, key, [attr.f], "float32", (), file))]
    if attr.name == "value_floats":
        return [(path, scalar_ref(path, key, attr.floats, "float32", (len(attr.floats),), file))]
    if attr.name == "value_int" and attr.i is not None:
        return [(path, scalar_ref(path, key, [attr.i], "int64", (), file))]
    if attr.name == "value_ints":
        return [(path, scalar_ref(path, key, attr.ints, "int64", (len(attr.ints),), file))]
    if attr.name == "value_string" and attr.s is not None:
        return [(path, attr.s.decode("utf-8", "replace"))]
    if attr.name == "value_strings":
        return [(path, [s.decode("utf-8", "replace") for s in attr.strings])]
    return []


def read(path: str, **_: Any) -> CheckpointIndex:
    """A lazy index of every tensor in the ONNX model at ``path``; model metadata in ``index.metadata``."""
    model = load_model(path)
    builder = IndexBuilder(path)
    metadata: dict[str, Any] = dict(model.metadata)
    files = [path]
    notes: list[str] = []
    for tpath, key, _graph, what, kind in tensor_entries(model):
        for p, ref in _refs(model, tpath, key, what, kind):
            if not isinstance(ref, TensorRef):
                metadata[p] = ref
                continue
            if ref.file not in files:
                files.append(ref.file)
            builder.add(ref)
    if any("#" in r.path for r in builder.refs):
        notes.append("some tensor names normalize to the same scope path; later ones got '#<n>' appended")
    return CheckpointIndex(builder.refs, format=FORMAT, files=files, metadata=metadata, notes=notes, key_sep="/")
