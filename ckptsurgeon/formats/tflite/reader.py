"""TensorFlow Lite ``.tflite`` models (flatbuffers, ``TFL3``): their constant tensors, read without TensorFlow.

A model holds subgraphs of tensors (name, shape, type, buffer index, quantization) and one list of buffers.
A tensor whose buffer holds bytes is a constant (a weight); the others (inputs, activations, state) have no
data and are counted, not listed. A buffer's bytes are its ``data`` vector inside the flatbuffer, or, in the
large-model layout (``Buffer.offset``/``size``, written for models over 2 GB), a range after it.

Paths: the tensor's name (subgraph 0), ``<subgraph name>/<tensor name>`` for the others; a name used twice
in one subgraph gets ``#<tensor index>``. Quantized tensors (int8, uint8, int16, int32 biases) are listed as
stored, with ``scale``/``zero_point``/``quantized_dimension`` in the metadata (``quantization``): real value
= scale * (q - zero_point), per channel along ``quantized_dimension`` when there are several scales.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ...errors import FormatError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...source import open_source
from ..magic import sniff_tflite as sniff
from . import schema as S
from .flatbuf import Buffer, Table, root

__all__ = ["sniff", "read", "FORMAT"]

FORMAT = "tflite"
MAX_SCALES = 1 << 16  # per-channel scales kept in the metadata (a conv layer has thousands at most)



def read(path: str) -> CheckpointIndex:
    try:
        return _read(path)
    except FormatError as exc:
        detail = str(exc).removeprefix(f"{path}: ")
        raise FormatError(f"{path}: a TensorFlow Lite flatbuffer (.tflite) that cannot be read: {detail}") from None


def _read(path: str) -> CheckpointIndex:
    buf = Buffer(open_source(path))
    model = root(buf, S.IDENTIFIER)
    buffers = model.tables(S.MODEL["buffers"], "buffers")
    codes = [_opcode(t) for t in model.tables(S.MODEL["operator_codes"], "operator_codes")]
    builder = IndexBuilder(path)
    quant: dict[str, Any] = {}
    unread: list[str] = []
    graphs: list[dict[str, Any]] = []
    recurrent: list[dict[str, Any]] = []
    for s, sub in enumerate(model.tables(S.MODEL["subgraphs"], "subgraphs")):
        name = sub.string(S.SUBGRAPH["name"], f"subgraph {s} name") or f"subgraph_{s}"
        prefix = "" if s == 0 else name + "/"
        tensors = sub.tables(S.SUBGRAPH["tensors"], f"subgraph {s} tensors")
        names = [t.string(S.TENSOR["name"], f"subgraph {s} tensor {i} name") or f"tensor_{i}" for i, t in enumerate(tensors)]
        twice = {n for n, c in Counter(names).items() if c > 1}
        listed = 0
        keys = [prefix + (f"{n}#{i}" if n in twice else n) for i, n in enumerate(names)]
        for i, t in enumerate(tensors):
            key = keys[i]
            ref = _tensor(path, buf, buffers, t, key, quant, unread)
            if ref is not None:
                builder.add(ref)
                listed += 1
        ops = []
        for k, op in enumerate(sub.tables(S.SUBGRAPH["operators"], f"subgraph {s} operators")):
            at = int(op.scalar(S.OPERATOR["opcode_index"], "I"))
            ops.append(codes[at] if at < len(codes) else f"? (operator code {at} of {len(codes)})")
            if ops[-1] in S.RECURRENT_OPTIONS:
                recurrent.append(_recurrent_op(op, ops[-1], s, k, keys))
        graphs.append({"name": name, "tensors": len(tensors), "constants": listed,
                       "inputs": [names[i] for i in sub.scalars(S.SUBGRAPH["inputs"], "i", "inputs") if 0 <= i < len(names)],
                       "outputs": [names[i] for i in sub.scalars(S.SUBGRAPH["outputs"], "i", "outputs") if 0 <= i < len(names)],
                       "operators": ops})
    metadata: dict[str, Any] = {"tflite.version": model.scalar(S.MODEL["version"], "I"), "subgraphs": graphs}
    description = model.string(S.MODEL["description"], "description")
    if description:
        metadata["tflite.description"] = description
    entries = {}
    for m in model.tables(S.MODEL["metadata"], "metadata"):
        b = int(m.scalar(S.METADATA["buffer"], "I"))
        entries[m.string(S.METADATA["name"], "metadata name") or "?"] = _metadata_bytes(buf, buffers, b)
    if entries:
        metadata["tflite.metadata"] = entries
    if quant:
        metadata["quantization"] = quant
    if recurrent:
        metadata["recurrent_ops"] = recurrent
    notes = []
    if quant:
        notes.append(f"{len(quant)} quantized tensor{'s' if len(quant) > 1 else ''}, listed as stored: real value = "
                     "scale * (q - zero_point), per channel along quantized_dimension (scales: ls --json, metadata "
                     "'quantization')")
    dataless = sum(g["tensors"] - g["constants"] for g in graphs) - len(unread)
    if dataless:
        notes.append(f"{dataless} tensor{'s' if dataless > 1 else ''} without data (inputs, activations, state) not listed")
    if unread:
        notes.append(f"{len(unread)} tensor{'s' if len(unread) > 1 else ''} with data not read: " + "; ".join(unread[:8])
                     + (f" and {len(unread) - 8} more" if len(unread) > 8 else ""))
    notes += _unfused_loops(graphs)
    if model.has(S.MODEL["external_buffers"]):
        notes.append("the model refers to external weight files (external_buffers); their tensors are not read")
    return CheckpointIndex(builder.refs, format=FORMAT, files=[path], metadata=metadata, notes=notes, key_sep="/")


_GATE_OPS = {"FULLY_CONNECTED", "LOGISTIC", "TANH"}


def _unfused_loops(graphs: list[dict[str, Any]]) -> list[str]:
    """Subgraphs that compute a recurrence op by op (a WHILE body of matrix products and gate activations: what the
    converter makes of a Keras GRU, SimpleRNN or Keras 3 LSTM), which no recurrent group reads."""
    if not any("WHILE" in g["operators"] for g in graphs):
        return []
    return [f"subgraph {g['name']!r}: a recurrent loop computed op by op (a WHILE body of FULLY_CONNECTED, LOGISTIC, "
            "TANH ...: how the converter writes a Keras GRU or a Keras 3 LSTM); its weights are listed as "
            "tensors, not read as a recurrent group (rnn reads the fused LSTM ops only)"
            for g in graphs[1:] if _GATE_OPS <= set(g["operators"])]


def _recurrent_op(op: Table, name: str, s: int, k: int, keys: list[str]) -> dict[str, Any]:
    """A recurrent op's inputs (tensor paths by position; None: an absent optional input) and options."""
    inputs = op.scalars(S.OPERATOR["inputs"], "i", f"subgraph {s} operator {k} inputs")
    union, fields = S.RECURRENT_OPTIONS[name]
    options: dict[str, Any] = {}
    table = op.table(S.OPERATOR["builtin_options"], f"subgraph {s} operator {k} options")
    stated = table is not None and int(op.scalar(S.OPERATOR["builtin_options_type"], "B")) == union
    for field, index, fmt, default in fields:
        options[field] = table.scalar(index, fmt, default) if stated and table is not None else default
    act = options["fused_activation_function"]
    options["fused_activation_function"] = S.ACTIVATIONS[act] if 0 <= act < len(S.ACTIVATIONS) else f"type {act}"
    return {"op": name, "subgraph": s, "index": k, "options_stated": stated,
            "inputs": [keys[i] if 0 <= i < len(keys) else None for i in inputs], "options": options,
            "outputs": [keys[i] for i in op.scalars(S.OPERATOR["outputs"], "i", "outputs") if 0 <= i < len(keys)]}


def _opcode(t: Table) -> str:
    code = max(int(t.scalar(S.OPCODE["builtin_code"], "i")), int(t.scalar(S.OPCODE["deprecated_builtin_code"], "b")))
    return S.op_name(code, t.string(S.OPCODE["custom_code"], "custom_code"))


def _data_range(path: str, buf: Buffer, buffers: list[Table], b: int, what: str) -> tuple[int, int] | None:
    """(file offset, size) of buffer ``b``'s bytes, None when it holds none."""
    if not 0 <= b < len(buffers):
        raise FormatError(f"{path}: {what} refers to buffer {b}, the model has {len(buffers)}")
    entry = buffers[b]
    vec = entry.vector(S.BUFFER["data"], 1, f"buffer {b} data")
    if vec is not None and vec[1]:
        return vec
    offset, size = int(entry.scalar(S.BUFFER["offset"], "Q")), int(entry.scalar(S.BUFFER["size"], "Q"))
    if offset > 1 and size:  # the converter writes offset 1 as a placeholder while it lays the file out
        if offset + size > buf.size:
            raise FormatError(f"{path}: buffer {b} ({size:,} bytes at byte {offset:,}) runs past the end of the file "
                              f"({buf.size:,} bytes; truncated?)")
        return offset, size
    return None


def _tensor(path: str, buf: Buffer, buffers: list[Table], t: Table, key: str, quant: dict[str, Any],
            unread: list[str]) -> TensorRef | None:
    code = int(t.scalar(S.TENSOR["type"], "b"))
    where = _data_range(path, buf, buffers, int(t.scalar(S.TENSOR["buffer"], "I")), f"tensor {key!r}")
    if where is None:
        return None
    offset, size = where
    type_name = S.TYPE_NAMES[code] if 0 <= code < len(S.TYPE_NAMES) else f"type {code}"
    dtype = S.TENSOR_TYPES.lite(code)
    if dtype is None:
        unread.append(f"{key} ({type_name})")
        return None
    if t.has(S.TENSOR["sparsity"]):
        unread.append(f"{key} (sparse: its buffer holds the compressed values)")
        return None
    shape = tuple(int(d) for d in t.scalars(S.TENSOR["shape"], "i", f"tensor {key!r} shape"))
    check_shape(path, key, dtype, shape)
    if math.prod(shape) * dtype.itemsize != size:
        raise FormatError(f"{path}: tensor {key!r}: {type_name} x {list(shape)} needs {math.prod(shape) * dtype.itemsize:,} "
                          f"bytes, its buffer holds {size:,}")
    q = t.table(S.TENSOR["quantization"], f"tensor {key!r} quantization")
    if q is not None:
        scales = q.scalars(S.QUANT["scale"], "f", f"tensor {key!r} scales")
        if scales:
            zeros = q.scalars(S.QUANT["zero_point"], "q", f"tensor {key!r} zero points")
            entry: dict[str, Any] = {"scale": scales[:MAX_SCALES], "zero_point": zeros[:MAX_SCALES],
                                     "quantized_dimension": int(q.scalar(S.QUANT["quantized_dimension"], "i"))}
            if len(scales) > MAX_SCALES:
                entry["channels"] = len(scales)
            for name in ("min", "max"):
                values = q.scalars(S.QUANT[name], "f", f"tensor {key!r} {name}")
                if values:
                    entry[name] = values[:MAX_SCALES]
            quant[key] = entry
    return TensorRef(path=key, key=key, dtype=dtype, shape=shape, file=path, offset=offset)


def _metadata_bytes(buf: Buffer, buffers: list[Table], b: int) -> Any:
    """A metadata entry's buffer: short text (``min_runtime_version``) as text, else its size."""
    try:
        where = _data_range(buf.name, buf, buffers, b, "metadata")
    except FormatError:
        return None
    if where is None:
        return ""
    offset, size = where
    if size <= 64:
        raw = buf.read(offset, size, "metadata").rstrip(b"\0")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            pass
    return f"<{size:,} bytes>"
