"""Keras HDF5 with ``layer_names`` / ``weight_names`` attributes: tf.keras 2 and Keras 2 full models
(``model_weights/...``) and weights-only files (same tree at the root), Keras 3 legacy ``.h5``,
Keras 2.2 (``lstm_1/kernel:0``) and Keras 1 per-gate names (``lstm_1_W_i``)."""
from __future__ import annotations

from typing import Any

from ...errors import FormatError
from ...index import TensorRef
from .h5tree import Dataset, Group, H5Source, HardLink
from .hdf5_safe import child, dataset_ref, walk

__all__ = ["is_keras_h5", "keras_h5_refs", "attr_list"]


def attr_list(obj: Any, name: str) -> list[str]:
    """A string-list attribute, joining Keras's chunks ``name0, name1 ...`` when the list was long."""
    if name in obj.attrs:
        values = _flat(obj.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:
            values.extend(_flat(obj.attrs[f"{name}{i}"]))
            i += 1
    return [str(v) for v in values]


def _flat(value: Any) -> list[Any]:
    """A (nested) list attribute as one flat list; a single value as a list of one."""
    if not isinstance(value, list):
        return [value]
    out: list[Any] = []
    for v in value:
        out.extend(_flat(v))
    return out


def weights_root(f: Group) -> Group | None:
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return f
    mw = f.get("model_weights", getlink=True)
    if isinstance(mw, HardLink):
        group = f["model_weights"]
        if isinstance(group, Group) and ("layer_names" in group.attrs or "layer_names0" in group.attrs):
            return group
    return None


def is_keras_h5(f: Group) -> bool:
    return weights_root(f) is not None


def _path(layer: str, weight: str, models: frozenset[str] = frozenset()) -> str:
    """A weight's scope path: its name carries its layer's (``lstm/lstm_cell/kernel``), except Keras 1 names
    (no scope) and the weights of a nested model (``layer_0/lstm_cell/kernel`` under the model ``enc``),
    which go under the layer's group as they sit in the file: ``enc/layer_0/lstm_cell/kernel``."""
    weight = weight[:-2] if weight.endswith(":0") else weight
    if "/" not in weight or (layer in models and weight.split("/", 1)[0] != layer):
        return f"{layer}/{weight}"
    return weight


def keras_h5_refs(f: Group, *, where: str, file: str, source: H5Source,
                  models: frozenset[str] = frozenset()) -> list[TensorRef]:
    """Tensors in Keras's own order (``layer_names``, then each layer's ``weight_names``); ``models``: the
    top-level layers the stored config says are models themselves (their weights' names omit them)."""
    root = weights_root(f)
    if root is None:
        raise FormatError(f"{where}: not a Keras HDF5 weights file")
    refs = []
    for layer in attr_list(root, "layer_names"):
        group = child(root, layer, where)
        for weight in attr_list(group, "weight_names"):
            dset = child(group, weight, where)
            if not isinstance(dset, Dataset):
                raise FormatError(f"{where}: weight {weight!r} of layer {layer!r} is not a dataset")
            refs.append(dataset_ref(dset, path=_path(layer, weight, models), key=weight, file=file, where=where, source=source))
    if isinstance(f.get("optimizer_weights", getlink=True), HardLink) and isinstance(f["optimizer_weights"], Group):
        for rel, dset in walk(f["optimizer_weights"], where):
            rel = rel[:-2] if rel.endswith(":0") else rel
            refs.append(dataset_ref(dset, path=f"optimizer_weights/{rel}", key=f"optimizer_weights/{rel}",
                                    file=file, where=where, source=source, optimizer=True))
    return refs
