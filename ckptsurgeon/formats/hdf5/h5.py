"""HDF5 files: Keras layouts get human paths; any other HDF5 file lists every dataset at its path.

Also the ``--format h5`` writer: one dataset per tensor at its scope path, provenance as attributes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import FormatError, OutputError
from ...index import CheckpointIndex, IndexBuilder, TensorRef
from ...source import open_source
from .h5tree import Group, H5Source
from .hdf5_safe import dataset_ref, open_h5, walk
from .keras_config import layer_paths, layer_summaries, parse_config
from .keras_h5 import is_keras_h5, keras_h5_refs
from .keras_v3 import is_keras_v3, keras_v3_refs
from ..tree import is_optimizer_path

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["read", "read_source", "write"]


def _attr_text(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:  # a one-element string array
        value = value[0]
    return value if isinstance(value, str) else str(value)


def read_source(source: H5Source, *, file: str, config: dict | None = None, fmt: str | None = None) -> CheckpointIndex:
    """Index the HDF5 image at ``source`` (a file, or the member of a ``.keras`` zip)."""
    metadata: dict[str, Any] = {}
    notes: list[str] = []
    where = source.where
    f = open_h5(source)
    for key in ("keras_version", "backend"):
        if key in f.attrs:
            metadata[key] = _attr_text(f.attrs[key])
    if config is None and "model_config" in f.attrs:
        config = parse_config(_attr_text(f.attrs["model_config"]), where)
    layers = layer_summaries(config) if config else {}
    if config and not layers and isinstance(config, dict):  # a subclassed model: its config does not describe its layers
        metadata["model_class"] = str(config.get("class_name") or "?")
    if layers and config:
        metadata["layers"] = layers
        nested = layer_paths(config)
        if any("/" in p for p in nested):
            metadata["layer_paths"] = nested  # nested models: each layer's config by its full path
    if is_keras_h5(f):
        models = frozenset(p.split("/", 1)[0] for p in (layer_paths(config) if config else {}) if "/" in p)
        refs, name = keras_h5_refs(f, where=where, file=file, source=source, models=models), "keras-h5"
    elif is_keras_v3(f):
        refs, notes = keras_v3_refs(f, where=where, file=file, source=source, layers=layers)
        name = "keras-v3"
    else:
        refs, name = _generic(f, where=where, file=file, source=source), "hdf5"
        stored = {k: v for k, v in f.attrs.plain().items() if isinstance(v, str)}
        if stored:
            metadata["__metadata__"] = stored  # what the h5 writer (or another tool) put in attributes
    builder = IndexBuilder(where)
    for ref in refs:
        builder.add(ref)
    return CheckpointIndex(builder.refs, format=fmt or name, files=[file], metadata=metadata, notes=notes, key_sep="/")


def _generic(f: Group, *, where: str, file: str, source: H5Source) -> list[TensorRef]:
    refs = []
    for rel, dset in walk(f, where):
        path = rel[:-2] if rel.endswith(":0") else rel
        refs.append(dataset_ref(dset, path=path, key=rel, file=file, where=where, source=source,
                                optimizer=is_optimizer_path(path)))
    return refs


def read(path: str, **_: Any) -> CheckpointIndex:
    # a URL too: the child opens it by byte range through its source (h5py's file-object support)
    return read_source(H5Source(path, 0, open_source(path).size, path), file=path)


def write(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """One dataset per tensor at its key's path ('/'-separated groups).

    HDF5 has no bfloat16 or float8 type: such a tensor is refused (h5py and Keras would read its bits as integers)."""
    import h5py  # writing our own data: the only use of libhdf5 in this process

    with h5py.File(fh, "w", track_order=True) as f:
        for key, value in metadata.items():
            f.attrs[key] = value
        for key, arr in tensors.items():
            arr = np.asarray(arr, order="C")  # np.ascontiguousarray makes a 0-d array (1,)
            if arr.dtype.kind == "V" or arr.dtype.name in ("bfloat16",) or arr.dtype.name.startswith("float8"):
                raise OutputError(f"tensor {key!r}: HDF5 has no {arr.dtype.name} type (h5py and Keras would read its bits "
                                  "as integers); write safetensors or a TensorFlow checkpoint, or cast it first (a remap rule "
                                  "with transforms = [{op = \"cast\", dtype = \"float32\"}], exact for bfloat16)")
            name = key.replace(".", "/") if "/" not in key else key
            try:
                f.create_dataset(name, data=arr, track_order=True)
            except (ValueError, TypeError) as exc:
                raise FormatError(f"cannot write tensor {key!r} to HDF5: {exc}") from None
            del arr  # before the next tensor is read: one tensor in memory at a time
