"""HDF5 files: Keras layouts get human paths; any other HDF5 file lists every dataset at its path.

Also the ``--format h5`` writer: one dataset per tensor at its scope path, provenance as attributes.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np

from ...errors import FormatError
from ...index import CheckpointIndex, IndexBuilder, TensorRef
from ...source import is_url, open_source
from .hdf5_safe import DTYPE_ATTR, dataset_ref, open_h5, walk
from .keras_config import layer_summaries, parse_config
from .keras_h5 import is_keras_h5, keras_h5_refs
from .keras_v3 import is_keras_v3, keras_v3_refs
from ..tree import is_optimizer_path

__all__ = ["read", "read_source", "write"]


def _attr_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_source(source: str | Callable[[], Any], *, file: str, where: str, config: dict | None = None,
                fmt: str | None = None) -> CheckpointIndex:
    """Index an HDF5 file given as a path or an opener (the member of a ``.keras`` zip)."""
    metadata: dict[str, Any] = {}
    notes: list[str] = []
    with open_h5(source, where) as f:
        try:
            for key in ("keras_version", "backend"):
                if key in f.attrs:
                    metadata[key] = _attr_text(f.attrs[key])
            if config is None and "model_config" in f.attrs:
                config = parse_config(f.attrs["model_config"], where)
            layers = layer_summaries(config) if config else {}
            if layers:
                metadata["layers"] = layers
            if is_keras_h5(f):
                refs, name = keras_h5_refs(f, where=where, file=file, source=source), "keras-h5"
            elif is_keras_v3(f):
                refs, notes = keras_v3_refs(f, where=where, file=file, source=source, layers=layers)
                name = "keras-v3"
            else:
                refs, name = _generic(f, where=where, file=file, source=source), "hdf5"
                stored = {str(k): _attr_text(v) for k, v in f.attrs.items() if isinstance(v, (str, bytes))}
                if stored:
                    metadata["__metadata__"] = stored  # what the h5 writer (or another tool) put in attributes
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise FormatError(f"{where}: damaged HDF5 file: {exc}") from None
    builder = IndexBuilder(where)
    for ref in refs:
        builder.add(ref)
    return CheckpointIndex(builder.refs, format=fmt or name, files=[file], metadata=metadata, notes=notes, key_sep="/")


def _generic(f: h5py.File, *, where: str, file: str, source: Any) -> list[TensorRef]:
    refs = []
    for rel, dset in walk(f, where):
        path = rel[:-2] if rel.endswith(":0") else rel
        refs.append(dataset_ref(dset, path=path, key=rel, file=file, where=where, source=source,
                                optimizer=is_optimizer_path(path)))
    return refs


def read(path: str, **_: Any) -> CheckpointIndex:
    if is_url(path):  # libhdf5 reads a remote file through h5py's file-object support, by byte range
        def opener() -> Any:
            return io.BufferedReader(open_source(path).window(), 1 << 16)

        return read_source(opener, file=path, where=path)
    return read_source(path, file=path, where=path)


def write(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """One dataset per tensor at its key's path ('/'-separated groups); ml_dtypes kept as bits + a tag."""
    with h5py.File(fh, "w", track_order=True) as f:
        for key, value in metadata.items():
            f.attrs[key] = value
        for key, arr in tensors.items():
            arr = np.ascontiguousarray(arr)
            stored = arr
            if arr.dtype.kind == "V" or arr.dtype.name in ("bfloat16",) or arr.dtype.name.startswith("float8"):
                stored = arr.view(f"u{arr.dtype.itemsize}")
            name = key.replace(".", "/") if "/" not in key else key
            try:
                dset = f.create_dataset(name, data=stored, track_order=True)
            except (ValueError, TypeError) as exc:
                raise FormatError(f"cannot write tensor {key!r} to HDF5: {exc}") from None
            if stored is not arr:
                dset.attrs[DTYPE_ATTR] = arr.dtype.name
