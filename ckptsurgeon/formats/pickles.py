"""Every pickle inside a checkpoint, per format, found without unpickling anything (for ``scan``).

A walker takes a path and returns ``(where, bytes)`` for each pickle stream: ``model.pt:archive/data.pkl``,
``legacy.pt@1234`` (a pickle at a byte offset), ``arrays.npz:obj.npy@128``. Formats register one
walker each; a format without pickles (safetensors, HDF5, TensorFlow) needs none.
"""
from __future__ import annotations

import io
import pickletools
from collections.abc import Callable

from ..errors import CheckpointError, FormatError
from ..source import open_source
from .npy import numpy_fmt
from .pytorch.safepickle import safe_load
from .pytorch.torch_legacy import MAGIC_NUMBER
from .zipsafe import SafeZip

__all__ = ["PICKLE_WALKERS", "register_pickle_walker", "pickles_in", "extra_globals"]

Walker = Callable[[str], list[tuple[str, bytes]]]
MAX_PICKLE = 1 << 30


def _pickle_end(stream: io.BufferedReader, start: int, where: str) -> int:
    stream.seek(start)
    try:
        for op, _arg, pos in pickletools.genops(stream):
            if op.name == "STOP":
                return pos + 1
    except Exception as exc:  # noqa: BLE001 - the static analysis reports the damage itself
        raise FormatError(f"{where}: malformed pickle at byte {start}: {exc}") from None
    raise FormatError(f"{where}: truncated pickle at byte {start}")


def _stream_of_pickles(path: str, first: int = 0, count: int | None = None) -> list[tuple[str, bytes]]:
    """Consecutive pickles from byte ``first``: ``count`` of them, or as many as there are to the end."""
    src = open_source(path)
    out, pos = [], first
    with io.BufferedReader(src.window(), 1 << 16) as fh:
        while pos < src.size and (count is None or len(out) < count):
            try:
                end = _pickle_end(fh, pos, path)
            except FormatError:
                end = src.size  # the damaged rest, so that the analysis says what is wrong with it
            if end - pos > MAX_PICKLE:
                raise FormatError(f"{path}: pickle at byte {pos} is over {MAX_PICKLE:,} bytes")
            out.append((f"{path}@{pos}", bytes(src.read(pos, end - pos))))
            pos = end
    return out


def _torch_zip(path: str) -> list[tuple[str, bytes]]:
    zf = SafeZip(path)
    try:
        return [(f"{path}:{name}", zf.read(name)) for name in zf.names() if name.endswith(".pkl")]
    finally:
        zf.close()


def _torch_legacy(path: str) -> list[tuple[str, bytes]]:
    """A legacy torch file: magic number, protocol, sys info, the object, the storage keys (then raw
    storages, which are not pickles). Any other pickle file: every pickle in it (a hidden second one too)."""
    first = _stream_of_pickles(path, 0, 1)
    try:
        magic = safe_load(first[0][1], path) if first else None
    except CheckpointError:
        magic = None
    if magic == MAGIC_NUMBER:
        return _stream_of_pickles(path, 0, 5)
    return _stream_of_pickles(path)


def _npy_object(head: bytes, where: str) -> int | None:
    """Where the pickle of an object-dtype .npy starts, or None for a plain array."""
    dtype, _shape, _fortran, hlen = numpy_fmt.parse_header(head, where, allow_object=True)
    return hlen if dtype.hasobject else None


def _npy(path: str) -> list[tuple[str, bytes]]:
    src = open_source(path)
    start = _npy_object(bytes(src.read(0, min(src.size, numpy_fmt.MAX_HEADER + 12))), path)
    if start is None:
        return []
    if src.size - start > MAX_PICKLE:
        raise FormatError(f"{path}: object array pickle over {MAX_PICKLE:,} bytes")
    return [(f"{path}@{start}", bytes(src.read(start, src.size - start)))]


def _npz(path: str) -> list[tuple[str, bytes]]:
    zf = SafeZip(path)
    out = []
    try:
        for name in zf.names():
            start = _npy_object(numpy_fmt.member_header(zf, name), f"{path}:{name}")
            if start is not None:
                out.append((f"{path}:{name}@{start}", zf.read(name, limit=MAX_PICKLE)[start:]))
    finally:
        zf.close()
    return out


def _dcp(path: str) -> list[tuple[str, bytes]]:
    """A DCP folder: ``.metadata``, then the ``data.pkl`` of every ``torch.save`` archive it places in a
    ``.distcp`` file (found through the metadata, itself read through the allowlist)."""
    from .. import location as loc
    from .dcp.dcp_metadata import load_metadata
    from .dcp.dcp_reader import MAX_METADATA, METADATA, _file

    meta_file = loc.join(path, METADATA)
    data = loc.read_small(meta_file, MAX_METADATA, "DCP metadata")
    out = [(meta_file, data)]
    try:
        md = load_metadata(data, meta_file)
    except CheckpointError:
        return out  # the pickle's own analysis, and what ls says, tell why
    seen: set[tuple[str, int]] = set()
    places = [(t.fqn, c.storage) for t in md.tensors for c in t.chunks] + list(md.bytes_items.items())
    for fqn, info in places:
        file = _file(path, info, str(fqn))
        if (file, info.offset) in seen:
            continue
        seen.add((file, info.offset))
        zf = SafeZip(file, info.offset, info.length)
        try:
            out += [(f"{file}@{info.offset}:{n}", zf.read(n)) for n in zf.names() if n.endswith(".pkl")]
        finally:
            zf.close()
    return out


def _hf_sharded(path: str) -> list[tuple[str, bytes]]:
    """HF shards: the pickles of every ``.bin`` shard the index names."""
    from .. import location as loc
    from . import detect
    from .sharded.hf_index import _load, sniff_folder

    index_file = path if loc.isfile(path) else sniff_folder(path)
    if index_file is None:
        return []
    wmap, _meta = _load(index_file)
    out = []
    for shard in sorted(set(wmap.values())):
        shard_file = loc.join(loc.parent(index_file), shard)
        fmt = detect(shard_file)
        if fmt != "hf-sharded":
            out += pickles_in(shard_file, fmt)
    return out


PICKLE_WALKERS: dict[str, Walker] = {
    "pytorch": _torch_zip,
    "pytorch-legacy": _torch_legacy,
    "npy": _npy,
    "npz": _npz,
    "dcp": _dcp,
    "hf-sharded": _hf_sharded,
}
# Globals a format's own pickles may name beyond the common allowlist (inert stand-ins of its reader).
EXTRA_GLOBALS: dict[str, frozenset[tuple[str, str]]] = {}


def register_pickle_walker(fmt: str, walker: Walker, extra_globals: frozenset[tuple[str, str]] = frozenset()) -> None:
    """Let ``scan`` find the pickles of another format (the registry's format name); ``extra_globals``
    are the ``(module, name)`` pairs its reader admits for them (its stand-ins)."""
    PICKLE_WALKERS[fmt] = walker
    EXTRA_GLOBALS[fmt] = frozenset(extra_globals)


def pickles_in(path: str, fmt: str) -> list[tuple[str, bytes]]:
    """The pickles of ``path`` (of format ``fmt``, as ``formats.detect`` names it)."""
    walker = PICKLE_WALKERS.get(fmt)
    return walker(path) if walker else []


def extra_globals(fmt: str) -> frozenset[tuple[str, str]]:
    if fmt == "dcp" and fmt not in EXTRA_GLOBALS:
        from .dcp.dcp_metadata import STAND_INS

        EXTRA_GLOBALS[fmt] = frozenset(STAND_INS)
    return EXTRA_GLOBALS.get(fmt, frozenset())
