"""Graft into a TensorFlow checkpoint: a copy of the bundle with some tensors' bytes replaced.

Every data shard is copied, each replaced tensor's bytes are written over its own range, and the index is
copied with only those entries' crc32c (a fixed32 inside each BundleEntryProto) and their blocks' checksums
changed: names, order, shapes, dtypes, the object graph of a TF2 checkpoint and every other byte stay as
TensorFlow wrote them, so ``Saver.restore``, ``tf.train.Checkpoint.restore`` and tf.keras's
``load_weights(prefix)`` read the copy as they read the template. Every untouched tensor's checksum is
verified on the way: a damaged template is refused and nothing is written.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import google_crc32c
import numpy as np

from ...atomic import atomic_files
from ...errors import FormatError, OutputError
from ...index import CheckpointIndex
from ...source import CHUNK, copy_to, open_source
from .. import protowire as pw
from .sstable import locate_values, mask, reseal
from .tf_bundle import Entry, _Bundle
from .writer import bundle_files, prefix_of, state_file

__all__ = ["patch_bundle"]

Value = np.ndarray | Callable[[], np.ndarray]


def _crc_field(raw: bytes) -> int | None:
    """Offset of the crc32c (field 6, fixed32) in a BundleEntryProto, or None when it has none."""
    pos, found = 0, None
    while pos < len(raw):
        tag, pos = pw.read_varint(raw, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = pw.read_varint(raw, pos)
        elif wire == 2:
            length, pos = pw.read_varint(raw, pos)
            pos += length
        elif wire == 5:
            if number == 6:
                found = pos
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
    return found


def _new_bytes(path: str, entry: Entry, dtype: np.dtype, value: Value) -> bytes:
    arr = np.asarray(value() if callable(value) else value)
    if tuple(arr.shape) != entry.shape:
        raise OutputError(f"{path!r}: replacement has shape {list(arr.shape)}, the template {list(entry.shape)}")
    data = np.ascontiguousarray(arr.astype(dtype, copy=False)).tobytes()
    if len(data) != entry.size:
        raise OutputError(f"{path!r}: replacement is {len(data)} bytes, the template holds {entry.size}")
    return data


def _verify(bundle: _Bundle, entries: list[Entry]) -> None:
    """Every untouched tensor's bytes against its stored crc32c, in ``CHUNK`` pieces."""
    for e in entries:
        if e.crc is None or e.dtype == 7:  # strings: checked by the reader's own rule when listed
            continue
        path, _ = bundle.shard(e.shard, e.key)
        src, crc = open_source(path), 0
        for at in range(e.offset, e.offset + e.size, CHUNK):
            crc = google_crc32c.extend(crc, bytes(src.read(at, min(CHUNK, e.offset + e.size - at))))
        if mask(crc) != e.crc:
            raise FormatError(f"{path}: crc32c mismatch for tensor {e.key!r}: the template is damaged; nothing written")


def _saved_model(prefix: str) -> str | None:
    """The SavedModel folder whose variables ``prefix`` is (``<folder>/variables/variables``), else None."""
    head, base = os.path.split(prefix)
    root, sub = os.path.split(head)
    if base == "variables" and sub == "variables" and os.path.isfile(os.path.join(root, "saved_model.pb")):
        return root
    return None


def _saved_model_files(root: str) -> list[str]:
    """Every file of a SavedModel but its variables bundle, relative to ``root`` (links refused); an empty
    folder is named with a trailing separator."""
    out = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs + names):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                raise OutputError(f"{full}: a link inside the SavedModel template; ckptsurgeon follows no links")
        rel_folder = os.path.relpath(folder, root)
        if not names and not dirs and rel_folder != ".":
            out.append(rel_folder + os.sep)  # an empty folder (a SavedModel's assets/)
        for name in sorted(names):
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if not rel.startswith(os.path.join("variables", "variables.")):
                out.append(rel)
    return out


def _layout(prefix: str, out: str, shards: int) -> tuple[str, list[str], list[str]]:
    """(output folder, names of the data shards then the index inside it, other files to copy as they are)."""
    root = _saved_model(prefix)
    if root is not None:
        names = [os.path.join("variables", os.path.basename(f)) for f in bundle_files("variables", shards)]
        return os.path.abspath(out.rstrip("/")), names, _saved_model_files(root)
    out = prefix_of(out)
    if not os.path.basename(out):
        raise OutputError(f"{out}: give a checkpoint prefix such as {os.path.join(out, 'model.ckpt')}")
    return os.path.dirname(os.path.abspath(out)), [os.path.basename(f) for f in bundle_files(out, shards)], []


def _check_targets(folder: str, names: list[str], inputs: set[str], force: bool, saved_model: bool) -> None:
    if saved_model:
        roots = {os.path.dirname(os.path.dirname(i)) for i in inputs}
        real = os.path.realpath(folder)
        if any(real == r or real.startswith(r + os.sep) for r in roots):
            raise OutputError(f"{folder}: is the template SavedModel or inside it; choose another output folder")
        if os.path.lexists(folder) and not force:
            raise OutputError(f"{folder}: already exists; pass --force (API: force=True) to write into it")
        if not os.path.isdir(os.path.dirname(folder)):
            raise OutputError(f"{folder}: folder {os.path.dirname(folder)} does not exist")
        return
    if not os.path.isdir(folder):
        raise OutputError(f"{folder}: folder does not exist")
    for name in names:
        f = os.path.join(folder, name)
        if os.path.realpath(f) in inputs:
            raise OutputError(f"{f}: is a file of the template; choose another output prefix")
        if os.path.lexists(f) and not force:
            raise OutputError(f"{f}: already exists; pass --force (API: force=True) to replace it")


def patch_bundle(index: CheckpointIndex, out: str, replacements: Mapping[str, Value], *, force: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> str:
    """Copy the bundle behind ``index`` to the prefix ``out`` with the tensors at ``replacements``' paths
    replaced; returns the output prefix. A ``checkpoint`` state file is written when the folder has none, and a
    TF1 Saver's ``PREFIX.meta`` (its MetaGraph) is copied beside the new bundle.
    A SavedModel's variables are written as a whole SavedModel in the folder ``out`` (its other files as
    they are, so ``tf.saved_model.load`` and ``keras.models.load_model`` read it)."""
    if any("://" in f for f in index.files):
        raise OutputError(f"{index.files[0]}: a remote TensorFlow template cannot be copied; download it first")
    prefix = index.files[0][: -len(".index")]
    bundle = _Bundle(prefix)
    dtypes = {}
    by_key: dict[str, tuple[str, Value]] = {}
    for path, value in replacements.items():
        ref = index[path]
        entry = bundle.entries.get(ref.key)
        if entry is None or entry.slices:
            raise OutputError(f"{index.files[0]}: template tensor {path!r} is a partitioned variable (stored in slices); "
                              "grafting into partitioned variables is not supported")
        bundle.check(entry, ref.dtype)
        by_key[ref.key] = (path, value)
        dtypes[ref.key] = ref.dtype
    for shard in range(bundle.num_shards):  # a missing shard is named before anything is written
        bundle.shard(shard, "")
    folder, names, extra = _layout(prefix, os.fspath(out), bundle.num_shards)
    root = _saved_model(prefix)
    _check_targets(folder, names, {os.path.realpath(f) for f in index.files}, force, root is not None)
    untouched = [e for k, e in bundle.entries.items() if k not in by_key]
    untouched += list(bundle.slice_entries.values())
    _verify(bundle, untouched)
    raw = bytearray(open_source(index.files[0]).read(0, open_source(index.files[0]).size))
    places = locate_values(bytes(raw), index.files[0])
    total = sum(bundle.shard(i, "")[1] for i in range(bundle.num_shards))
    done = 0
    state = os.path.join(folder, "checkpoint")
    write_state = root is None and not os.path.lexists(state)
    with atomic_files(folder) as files_out:
        for rel in extra:  # the rest of a SavedModel, as it is
            assert root is not None
            if rel.endswith(os.sep):
                files_out.makedir(rel)
                continue
            with files_out.open(rel) as fh:
                src = open_source(os.path.join(root, rel))
                copy_to(src, fh, 0, src.size)
        for shard_id, name in enumerate(names[:-1]):
            src_path, size = bundle.shard(shard_id, "")
            with files_out.open(name) as fh:
                copy_to(open_source(src_path), fh, 0, size)
                for key, (path, value) in by_key.items():
                    e = bundle.entries[key]
                    if e.shard != shard_id:
                        continue
                    data = _new_bytes(path, e, dtypes[key], value)
                    fh.seek(e.offset)
                    fh.write(data)
                    at, length, block, block_size = places[key.encode("utf-8")]
                    crc_at = _crc_field(bytes(raw[at : at + length]))
                    if crc_at is not None:
                        raw[at + crc_at : at + crc_at + 4] = mask(google_crc32c.value(data)).to_bytes(4, "little")
                        reseal(raw, block, block_size)
            done += size
            if progress is not None:
                progress(size, total)
        meta = prefix + ".meta"  # a TF1 Saver's MetaGraph beside its bundle: import_meta_graph users need it
        if root is None and os.path.isfile(meta) and not os.path.islink(meta):
            target = names[-1][: -len(".index")] + ".meta"
            if os.path.lexists(os.path.join(folder, target)) and not force:
                raise OutputError(f"{os.path.join(folder, target)}: already exists; pass --force (API: force=True) to replace it")
            with files_out.open(target) as fh:
                src = open_source(meta)
                copy_to(src, fh, 0, src.size)
        if write_state:
            with files_out.open("checkpoint") as fh:
                fh.write(state_file(names[-1][: -len(".index")]))
        with files_out.open(names[-1]) as fh:
            fh.write(bytes(raw))
    return folder if root is not None else os.path.join(os.path.dirname(os.fspath(out)), names[-1][: -len(".index")])
