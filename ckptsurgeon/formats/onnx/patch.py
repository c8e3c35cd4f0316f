"""Graft into an ONNX template: a copy of the model (and of its external data) with tensors replaced.

- ``raw_data``, packed ``float_data``/``double_data`` and external data are overwritten in place: every
  other byte is unchanged.
- varint-coded typed fields (``int32_data``, ``int64_data``, ``uint64_data``) are re-encoded; when the new
  encoding has another length, that field's length prefix and those of every enclosing message (tensor,
  attribute, node, graph, model field) are rewritten, exactly as protobuf would encode them.
- External data files are copied beside the output under their own relative locations (patched where
  touched), so the output's ``location`` strings stay valid and byte-identical. Writing into the template's
  own folder is allowed only when no external tensor is replaced (the output then shares the data files).
- Refused: sparse tensors, Constant ``value_floats``/``value_ints`` lists, packed sub-byte types, computed
  tensors (use ``NodeInput.write_back`` for folded inputs: it gives source tensors to replace).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from ...atomic import atomic_output, check_output
from ...dtypes import ONNX_PACKED_BITS
from ...errors import OutputError
from ...index import CheckpointIndex
from ...source import open_source
from .model import Span, TensorInfo
from .onnx_fmt import load_model, tensor_entries
from .tensors import INT32_DATA, INT64_DATA, TYPED_FIELD, UINT64_DATA

__all__ = ["patch_onnx", "input_replacements"]

Edit = tuple[int, int, bytes]  # replace bytes start:end of a file with these


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _typed_payload(info: TensorInfo, arr: np.ndarray) -> bytes:
    """The packed varint payload of ``arr`` in the tensor's typed field, as protobuf encodes it."""
    field = TYPED_FIELD[info.data_type]
    flat = arr.reshape(-1)
    if field == INT64_DATA:
        vals = flat.astype(np.int64).view(np.uint64).tolist()
    elif field == UINT64_DATA:
        vals = flat.astype(np.uint64).tolist()
    else:  # int32_data: int32 values sign-extended to 64 bits; 16/8-bit float and bool types as their bits
        if arr.dtype.itemsize == 2 and arr.dtype.kind not in "iu":
            i32 = flat.view(np.uint16).astype(np.int32)
        elif arr.dtype == np.bool_ or (arr.dtype.itemsize == 1 and arr.dtype.kind not in "iu"):
            i32 = flat.view(np.uint8).astype(np.int32)
        else:
            i32 = flat.astype(np.int32)
        vals = i32.astype(np.int64).view(np.uint64).tolist()
    return b"".join(_varint(v) for v in vals)


def _model_edits(info: TensorInfo, path: str, arr: np.ndarray, where: str) -> list[Edit]:
    field = TYPED_FIELD.get(info.data_type)
    fields = info.typed.get(field, []) if field else []
    if field not in (INT32_DATA, INT64_DATA, UINT64_DATA) or len(fields) != 1 or fields[0].wire != 2:
        raise OutputError(f"{where}: tensor {path!r} is not stored as one byte range nor as one packed typed "
                          "field; it cannot be replaced")
    f = fields[0]
    return [(f.start, f.end, _typed_payload(info, arr))]


def _length_edits(edits: list[Edit], containers: list[Span]) -> list[Edit]:
    """Re-encode the length prefix of every container whose payload size changes (innermost first)."""
    out = list(edits)
    for span in sorted(containers, key=lambda s: s.end - s.start):
        delta = sum(len(new) - (e - s) for s, e, new in out if span.start <= s and e <= span.end)
        if delta:
            out.append((span.lenpos, span.start, _varint(span.end - span.start + delta)))
    return out


def _write(fh: BinaryIO, source: str, edits: list[Edit]) -> None:
    src = open_source(source)
    pos = 0
    for s, e, new in sorted(edits):
        if s < pos:
            raise OutputError(f"{source}: two replacements overlap at byte {s}")
        _copy(fh, src, pos, s)
        fh.write(new)
        pos = e
    _copy(fh, src, pos, src.size)


def _copy(fh: BinaryIO, src: Any, start: int, end: int) -> None:
    while start < end:
        n = min(end - start, 1 << 24)
        fh.write(src.read(start, n))
        start += n


def patch_onnx(index: CheckpointIndex, out: str, replacements: Mapping[str, np.ndarray], *, force: bool = False) -> str:
    """Write ``out``: the template model with the tensors at ``replacements``' paths replaced."""
    template = index.files[0]
    model = load_model(template)
    entries = {path: (what, kind) for path, _, _, what, kind in tensor_entries(model)}
    check_output(out, list(index.files), force)
    same_dir = os.path.realpath(os.path.dirname(os.path.abspath(out))) == os.path.realpath(os.path.dirname(os.path.abspath(template)))
    model_edits: list[Edit] = []
    containers: dict[int, Span] = {}
    ext_edits: dict[str, list[Edit]] = {}
    for path, value in replacements.items():
        ref = index[path]
        what, kind = entries.get(path, (None, ""))
        info = what if isinstance(what, TensorInfo) else getattr(what[0], "t", None) if isinstance(what, tuple) else None
        if info is None or kind not in ("initializer", "constant", "attribute"):
            raise OutputError(f"{template}: tensor {path!r} is a {kind or 'computed value'} (sparse or a decoded "
                              "attribute list), not a stored tensor; it cannot be replaced")
        if info.data_type in ONNX_PACKED_BITS:
            raise OutputError(f"{template}: tensor {path!r} holds packed {ref.dtype.name} values; replacing them is not supported")
        arr = np.asarray(value)
        if arr.shape != ref.shape:
            raise OutputError(f"{path!r}: replacement has shape {list(arr.shape)}, the template {list(ref.shape)}")
        arr = np.ascontiguousarray(arr.astype(ref.dtype, copy=False))
        if ref.in_place:
            data = arr.astype(arr.dtype.newbyteorder("<")).tobytes() if arr.dtype.itemsize > 1 and arr.dtype.kind in "fiuc" \
                else arr.tobytes()
            target = model_edits if ref.file == template else ext_edits.setdefault(ref.file, [])
            target.append((ref.offset, ref.offset + len(data), data))
            continue
        model_edits.extend(_model_edits(info, path, arr, template))
        for span in (*info.containers, info.span):
            containers[span.lenpos] = span
        f = info.typed[TYPED_FIELD[info.data_type]][0]
        containers[f.lenpos] = Span(f.head, f.lenpos, f.start, f.end)
    externals = list(index.files[1:])
    if ext_edits and same_dir:
        raise OutputError(f"{out}: replacing tensors held in external data ({', '.join(sorted(ext_edits))}) needs an output "
                          "in another folder: the data files are copied beside it under their own names")
    edits = _length_edits(model_edits, list(containers.values()))
    with contextlib.ExitStack() as stack:  # the model's temporary file is renamed last, after its data files
        fh = stack.enter_context(atomic_output(out))
        _write(fh, template, edits)
        if not same_dir:
            base_in = os.path.dirname(template)
            for file in externals:
                rel = os.path.relpath(file, base_in or ".")
                dest = os.path.join(os.path.dirname(out), rel)
                check_output(dest, list(index.files), force)
                os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
                data = stack.enter_context(atomic_output(dest))
                _write(data, file, ext_edits.get(file, []))
    return out


def input_replacements(template: str, values: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Source-tensor replacements for recurrent node inputs: ``{node scope: {role: new value}}`` ->
    ``{tensor path: array}`` through ``NodeInput.write_back`` (exact, or refused)."""
    from .graph import describe_recurrent

    nodes = {n.scope: n for n in describe_recurrent(template)}
    out: dict[str, np.ndarray] = {}
    for scope, roles in values.items():
        if scope not in nodes:
            raise OutputError(f"{template}: no recurrent node {scope!r}; nodes: {', '.join(nodes) or '(none)'}")
        for role, value in roles.items():
            inp = nodes[scope].inputs.get(role)
            if inp is None:
                raise OutputError(f"{template}: node {scope!r} has no input {role!r}")
            for path, arr in inp.write_back(value).items():
                if path in out and not np.array_equal(out[path], arr):
                    raise OutputError(f"{template}: two inputs ask different values of {path!r}")
                out[path] = arr
    return out

