"""Orbax checkpoints (orbax-checkpoint's ``StandardCheckpointer``/``PyTreeCheckpointer``), read through tensorstore.

An Orbax checkpoint (an *item* folder) holds ``_METADATA``, JSON: ``tree_metadata`` maps each leaf (by its key
tuple) to its ``key_metadata`` (each key and whether it is a dict key or a sequence index) and ``value_metadata``
(``value_type``: ``jax.Array``, ``np.ndarray``, ``scalar`` ...), plus ``use_ocdbt`` and ``use_zarr3``. Each array
is a zarr array (v2: ``.zarray``; v3: ``zarr.json``) named ``'.'.join(keys)``: inside the folder's OCDBT
database (``manifest.ocdbt``, ``ocdbt.process_*/``, ``d/``: orbax's default), or, without OCDBT (older orbax), one
folder per array. A step folder of a ``CheckpointManager`` (``_CHECKPOINT_METADATA`` and one sub-folder per item)
is named with its items.

Opening reads ``_METADATA`` and each array's zarr metadata (its shape and dtype: a few hundred bytes); an
array's data is read, through tensorstore, when it is asked for. tensorstore (Google's, what orbax itself uses)
is an optional extra, imported only here: ``pip install 'ckptsurgeon[orbax]'``; without it, a checkpoint without
OCDBT can still be listed (its zarr metadata are JSON files). Local folders only.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import location as loc
from ...dtypes import ML_NAMES, ml_dtype
from ...errors import FormatError, MissingDependencyError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...scopes import join_path
from ..tree import is_optimizer_path

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["FORMAT", "METADATA", "sniff_folder", "read"]

FORMAT = "orbax"
METADATA = "_METADATA"  # the PyTree metadata of an item folder
STEP_METADATA = "_CHECKPOINT_METADATA"  # a CheckpointManager step (and, beside _METADATA, an item saved alone)
MAX_METADATA = 64 << 20
MAX_ZARR_METADATA = 1 << 20
ARRAY_TYPES = frozenset({"jax.Array", "np.ndarray", "scalar"})  # stored as zarr arrays (a scalar: 0-d)
OPTIMIZER_SCOPES = ("opt_state",)  # flax.training.train_state.TrainState
_NAME = re.compile(r"^[^/\\\x00]+$")
_ZARR3_TYPES = {"bool": "bool", "complex64": "complex64", "complex128": "complex128"}


def sniff_folder(path: str) -> bool:
    return loc.isfile(loc.join(path, METADATA)) or loc.isfile(loc.join(path, STEP_METADATA))


def _tensorstore(path: str) -> Any:
    try:
        import tensorstore
    except ImportError:
        raise MissingDependencyError("tensorstore", "orbax", f"reading the Orbax checkpoint {path}") from None
    return tensorstore


def _ts(path: str, what: str, call: Callable[[], Any]) -> Any:
    """``call()``, a tensorstore read; its errors (a damaged OCDBT manifest or b-tree node, a zarr chunk that does not
    decode: tensorstore raises ValueError/TypeError with an absl status) as one FormatError naming the checkpoint."""
    try:
        return call()
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        text = " ".join(str(exc).split()).replace(f"file://{os.path.abspath(path)}/", "").replace(os.path.abspath(path) + "/", "")
        raise FormatError(f"{path}: {what}: tensorstore cannot read it: {text[:300]}") from None


def _json(path: str, data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: {what} is not JSON: {exc}") from None


def _items(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n, METADATA)))


def _leaves(path: str, meta: Any) -> list[tuple[list[str], dict[str, Any]]]:
    """(keys, value metadata) of every leaf of ``_METADATA``, checked."""
    tree = meta.get("tree_metadata") if isinstance(meta, dict) else None
    if not isinstance(tree, dict):
        raise FormatError(f"{path}: {METADATA} has no tree_metadata map; not an Orbax PyTree checkpoint")
    out = []
    for where, leaf in tree.items():
        keys = leaf.get("key_metadata") if isinstance(leaf, dict) else None
        value = leaf.get("value_metadata") if isinstance(leaf, dict) else None
        if not isinstance(keys, list) or not keys or not isinstance(value, dict) \
                or not all(isinstance(k, dict) and isinstance(k.get("key"), (str, int)) for k in keys):
            raise FormatError(f"{path}: {METADATA} entry {str(where)[:80]!r} is not [key_metadata, value_metadata]")
        out.append(([str(k["key"]) for k in keys], value))
    return out


def _dtype(path: str, name: str, meta: dict[str, Any], zarr3: bool) -> np.dtype:
    """The numpy dtype a zarr array's metadata names (v2 ``dtype`` "<f4", "bfloat16"; v3 ``data_type``)."""
    text = meta.get("data_type" if zarr3 else "dtype")
    if not isinstance(text, str) or len(text) > 32:
        raise FormatError(f"{path}: array {name!r}: zarr metadata names no dtype")
    text = _ZARR3_TYPES.get(text, text)
    try:
        dtype = ml_dtype(text) if text in ML_NAMES else np.dtype(text)
    except TypeError:
        raise FormatError(f"{path}: array {name!r}: unknown dtype {text!r}") from None
    if dtype.kind not in "biufc" and text not in ML_NAMES:
        raise UnsafeCheckpointError(f"{path}: array {name!r}: dtype {text!r} is not a numeric dtype; refusing")
    return dtype


class _Store:
    """Where the arrays are: the item's OCDBT database, or one folder per array."""

    def __init__(self, path: str, ocdbt: bool, zarr3: bool) -> None:
        self.path, self.ocdbt, self.zarr3 = path, ocdbt, zarr3
        self.root = os.path.abspath(path)
        # an OCDBT database is read through tensorstore from the start; zarr folders' metadata are plain JSON files
        self.kv = _ts(path, "its OCDBT database (manifest.ocdbt)", lambda: _tensorstore(path).KvStore.open(
            {"driver": "ocdbt", "base": f"file://{self.root}/"}).result()) if ocdbt else None

    def kvstore(self, name: str) -> dict[str, Any]:
        if self.ocdbt:
            return {"driver": "ocdbt", "base": f"file://{self.root}/", "path": f"{name}/"}
        return {"driver": "file", "path": os.path.join(self.root, name) + "/"}

    def zarr_metadata(self, name: str) -> dict[str, Any]:
        member = "zarr.json" if self.zarr3 else ".zarray"
        if self.kv is not None:
            kv = self.kv
            data = _ts(self.path, f"array {name!r}: {member}", lambda: kv.read(f"{name}/{member}").result().value)
        else:
            data = loc.read_small(os.path.join(self.root, name, member), MAX_ZARR_METADATA, "zarr metadata")
        if not data:
            raise FormatError(f"{self.path}: array {name!r} has no {member}; the checkpoint is incomplete")
        if len(data) > MAX_ZARR_METADATA:
            raise UnsafeCheckpointError(f"{self.path}: array {name!r}: {member} of {len(data):,} bytes; refusing")
        meta = _json(self.path, data, f"{name}/{member}")
        if not isinstance(meta, dict):
            raise FormatError(f"{self.path}: array {name!r}: {member} is not a JSON object")
        return meta

    def loader(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
        spec = {"driver": "zarr3" if self.zarr3 else "zarr", "kvstore": self.kvstore(name)}

        def load() -> np.ndarray:
            ts = _tensorstore(self.path)
            store = _ts(self.path, f"array {name!r}", lambda: ts.open(spec, open=True, read=True).result())
            if tuple(store.shape) != shape or store.dtype.numpy_dtype != dtype:
                raise FormatError(f"{self.path}: array {name!r} changed since it was opened "
                                  f"({store.dtype.numpy_dtype}{list(store.shape)}, was {dtype}{list(shape)})")
            return _ts(self.path, f"array {name!r}", lambda: np.asarray(store.read().result()))

        return load


def read(path: str) -> CheckpointIndex:
    if loc.kind(path) != "directory" or path != os.fspath(path) or "://" in path:
        raise FormatError(f"{path}: Orbax checkpoints are read from local folders")
    if not loc.isfile(loc.join(path, METADATA)):
        items = _items(path)
        hint = (f"it is a checkpoint step holding the item(s) {', '.join(items)}: open one "
                f"({os.path.join(path, items[0])})" if items else "it holds no item with a _METADATA")
        raise FormatError(f"{path}: an Orbax checkpoint folder without {METADATA}: {hint}")
    meta = _json(path, loc.read_small(loc.join(path, METADATA), MAX_METADATA, METADATA), METADATA)
    leaves = _leaves(path, meta)
    for keys, _ in leaves:  # a folder name (without OCDBT): no separator, not . or ..
        name = ".".join(keys)
        if not _NAME.match(name) or name in (".", ".."):
            raise UnsafeCheckpointError(f"{path}: array name {name[:80]!r} could name a file outside the checkpoint; refusing")
    store = _Store(path, bool(meta.get("use_ocdbt", False)), bool(meta.get("use_zarr3", False)))
    builder = IndexBuilder(path)
    metadata: dict[str, Any] = {}
    notes: list[str] = []
    for keys, value in leaves:
        p, name = join_path(keys), ".".join(keys)
        kind = value.get("value_type")
        if not isinstance(kind, str) or kind not in ARRAY_TYPES or value.get("skip_deserialize"):
            notes.append(f"{p}: an Orbax {kind} leaf{' (skip_deserialize)' if value.get('skip_deserialize') else ''}; "
                         "listed, not read")
            metadata[p] = f"<orbax {kind}>"
            continue
        zmeta = store.zarr_metadata(name)
        shape = zmeta.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(f"{path}: array {name!r}: invalid shape {str(shape)[:60]}")
        dtype = _dtype(path, name, zmeta, store.zarr3)
        check_shape(path, p, dtype, shape)
        builder.add(TensorRef(path=p, key=p, dtype=dtype, shape=tuple(shape), file=path,
                              optimizer=keys[0] in OPTIMIZER_SCOPES or is_optimizer_path(p),
                              loader=store.loader(name, dtype, tuple(shape))))
    if isinstance(meta.get("custom_metadata"), dict) and meta["custom_metadata"]:
        metadata["custom_metadata"] = meta["custom_metadata"]
    return CheckpointIndex(builder.refs, format=FORMAT, files=[path], metadata=metadata, notes=notes, key_sep="/")
