"""A tf.keras SavedModel's ``keras_metadata.pb``: every layer's config, read as data (never deserialized).

``SavedMetadata`` (tf_keras/protobuf/saved_metadata.proto): repeated ``SavedObject nodes = 1`` with ``node_path = 3``
(``root.layer_with_weights-0.forward_layer``: the object-graph path of the layer, the path its variables have in the
checkpoint) and ``metadata = 5`` (JSON: ``class_name``, ``config``; the root's also ``keras_version``). Layers are
keyed by that path (``layer_with_weights-0/forward_layer``), as the checkpoint's variables are.
"""
from __future__ import annotations

import json
import os
from typing import Any

from ...errors import FormatError
from .. import protowire as pw
from ..hdf5.keras_config import _summary

__all__ = ["read_keras_metadata", "MAX_METADATA"]

MAX_METADATA = 64 << 20


def _node(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    fields = pw.decode(raw)
    path = pw.first_bytes(fields, 3).decode("utf-8", "replace")
    text = pw.first_bytes(fields, 5)
    if not path.startswith("root") or not text:
        return None
    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return path, meta if isinstance(meta, dict) else {}


def read_keras_metadata(root: str) -> dict[str, Any]:
    """``{"layer_paths": {path: summary}, "keras_version": ...}`` from ``root/keras_metadata.pb``, or ``{}``."""
    path = os.path.join(root, "keras_metadata.pb")
    if not os.path.isfile(path) or os.path.islink(path):
        return {}
    if os.path.getsize(path) > MAX_METADATA:
        raise FormatError(f"{path}: over {MAX_METADATA >> 20} MiB; refusing to read it")
    with open(path, "rb") as fh:
        raw = fh.read()
    out: dict[str, Any] = {}
    layers: dict[str, dict[str, Any]] = {}
    try:
        nodes = pw.decode(raw).get(1, [])
        for node in nodes:
            found = _node(bytes(node)) if isinstance(node, (bytes, bytearray)) else None
            if found is None:
                continue
            node_path, meta = found
            if node_path == "root":
                for key in ("keras_version", "backend"):
                    if isinstance(meta.get(key), str):
                        out[key] = meta[key]
                if isinstance(meta.get("class_name"), str):  # Sequential, Functional, or a subclassed model's class
                    out["model_class"] = meta["class_name"]
                continue
            if isinstance(meta.get("class_name"), str) and isinstance(meta.get("config"), dict):
                layers[node_path[len("root."):].replace(".", "/")] = _summary({"class_name": meta["class_name"],
                                                                               "config": meta["config"]})
    except FormatError as exc:
        raise FormatError(f"{path}: malformed: {exc}") from None
    if layers:
        out["layer_paths"] = layers
        out["layers"] = {p.rpartition("/")[2]: s for p, s in layers.items()}
    return out
