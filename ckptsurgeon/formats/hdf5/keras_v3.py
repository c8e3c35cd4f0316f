"""Keras 3 weights layout (``.weights.h5``, ``model.weights.h5`` in ``.keras``):
``layers/<class>[_N]/[cell|forward_layer|backward_layer|layers/...]/vars/<i>``.

A subclassed model has no ``layers`` list at the root: Keras saves each layer under the attribute
that holds it (``fc/vars/0``, ``encoder/lstm/cell/vars/0``, ``blocks/dense_1/vars/0``), beside the
root's own (often empty) ``vars`` group named after the model.

Human paths come from the ``name`` attribute of each layer's ``vars`` group (the layer's own name), the
attribute names of subclassed models, and a table of variable names by class: ``encoder_lstm/cell/kernel``,
``bi/forward_layer/cell/bias``, ``fc/kernel``. A layer's class is its group name (``layers/lstm_1``), else
its ``vars`` name when Keras gave the default (``dense_1``); when neither names a known class, two
variables shaped like a kernel and its bias are named so, with a note, and anything else keeps its
stored index ``vars/<i>``, with a note.
"""
from __future__ import annotations

import re
from typing import Any

from ...index import TensorRef
from .h5tree import Dataset, Group, H5Source, HardLink
from .hdf5_safe import child, dataset_ref
from .keras_names import CELL_OF, VAR_NAMES, class_key, var_names

__all__ = ["is_keras_v3", "keras_v3_refs"]


def is_keras_v3(f: Group) -> bool:
    """A ``layers`` list at the root, or (subclassed models) the root model's own named ``vars`` group."""
    if isinstance(f.get("layers", getlink=True), HardLink) and isinstance(f.get("layers"), Group):
        return True
    return isinstance(f.get("vars", getlink=True), HardLink) and isinstance(f.get("vars"), Group) \
        and "name" in f["vars"].attrs


def _vars_name(group: Group) -> str | None:
    if not isinstance(group.get("vars", getlink=True), HardLink) or not isinstance(group.get("vars"), Group):
        return None
    value = group["vars"].attrs.get("name")
    return None if value is None else str(value)


def _snake(class_name: str) -> str:
    """``SimpleRNN`` -> ``simple_rnn``, ``CuDNNLSTM`` -> ``cu_dnnlstm`` (as Keras names its groups)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()


class _Walker:
    def __init__(self, where: str, file: str, source: Any, layers: dict[str, dict]) -> None:
        self.where, self.file, self.source, self.layers = where, file, source, layers
        self.refs: list[TensorRef] = []
        self.notes: list[str] = []
        self.unnamed: list[str] = []

    def obj(self, group: Group, path: str, cls: str, optimizer: bool) -> None:
        """One Keras object: its own variables, then its sub-objects."""
        for key in group.keys():
            node = child(group, key, self.where)
            if not isinstance(node, Group):
                continue
            sub = f"{path}/{key}" if path else key
            if key == "vars":
                self.variables(node, path, cls, optimizer)
            elif key == "layers":
                self.layer_list(node, path, optimizer)
            elif key == "cell":
                own = _vars_name(node)
                self.obj(node, sub, own if own in VAR_NAMES else CELL_OF.get(cls, "cell"), optimizer)
            else:
                self.obj(node, sub, class_key(key), optimizer)

    def layer_list(self, group: Group, prefix: str, optimizer: bool) -> None:
        found = []
        for key in group.keys():
            node = child(group, key, self.where)
            if isinstance(node, Group):
                name = _vars_name(node)
                if name is None:
                    name = key
                    self.unnamed.append(key)
                found.append((key, node, name))
        order = {name: i for i, name in enumerate(self.layers)}  # the model config's layer order
        found.sort(key=lambda item: order.get(item[2], len(order)))
        for key, node, name in found:
            config_class = (self.layers.get(name) or {}).get("class_name")
            cls = _snake(config_class) if config_class else class_key(key)
            self.obj(node, f"{prefix}/{name}" if prefix else name, cls, optimizer)

    def _by_shape(self, group: Group, keys: list[str], path: str) -> tuple[str, ...] | None:
        """Two variables shaped (..., n) and (n,): a kernel and its bias (Dense, Conv, EinsumDense)."""
        if len(keys) != 2:
            return None
        a, b = (child(group, k, self.where) for k in keys)
        if isinstance(a, Dataset) and isinstance(b, Dataset) and a.shape is not None and b.shape is not None \
                and len(a.shape) >= 2 and b.shape == a.shape[-1:]:
            self.notes.append(f"the class of {path or '/'} is not stored; its variables are named kernel and bias "
                              "from their shapes")
            return ("kernel", "bias")
        return None

    def variables(self, group: Group, path: str, cls: str, optimizer: bool) -> None:
        keys = sorted(group.keys(), key=lambda k: (len(k), k))
        if not keys:
            return
        names = var_names(cls, len(keys))
        if names is None:
            own = group.attrs.get("name")  # the layer's name; Keras's default is its class: dense_1
            names = var_names(class_key(str(own)), len(keys)) if own else None
        if names is None:
            names = self._by_shape(group, keys, path)
        if names is None:
            self.notes.append(f"variable names of {path or '/'} ({cls}) are unknown; its paths use the stored index vars/<i>")
            names = tuple(f"vars/{k}" for k in keys)
        for key, name in zip(keys, names):
            dset = child(group, key, self.where)
            if isinstance(dset, Dataset):
                full = f"{path}/{name}" if path else name
                # The stored location (layers/lstm/cell/vars/0) names nothing; the human path is the key.
                self.refs.append(dataset_ref(dset, path=full, key=full,
                                             file=self.file, where=self.where, source=self.source, optimizer=optimizer))


def keras_v3_refs(f: Group, *, where: str, file: str, source: H5Source,
                  layers: dict[str, dict]) -> tuple[list[TensorRef], list[str]]:
    """TensorRefs with human paths, and notes on every fallback taken."""
    walker = _Walker(where, file, source, layers)
    if isinstance(f.get("layers", getlink=True), HardLink):
        walker.layer_list(child(f, "layers", where), "", False)
    for key in f.keys():
        if key not in ("layers", "vars"):
            node = child(f, key, where)
            if isinstance(node, Group):
                walker.obj(node, key, class_key(key), optimizer=key == "optimizer")
    if walker.unnamed:
        walker.notes.append("layer names are not stored in this file (no 'name' attribute on vars); "
                            f"paths use the stored group names: {', '.join(walker.unnamed[:8])}")
    return walker.refs, walker.notes
