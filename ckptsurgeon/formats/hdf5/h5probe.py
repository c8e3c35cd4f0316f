"""The only code that lets libhdf5 (through h5py) parse a file; it runs in a child process
(``ckptsurgeon.isolate``), never in the process that reads tensors.

``describe`` turns the file's metadata into plain JSON data: every group with its attributes and
links (hard, soft, external, never followed), every dataset with its dtype, shape, layout, byte
offset and attributes. ``read_dataset`` returns one dataset's bytes, for the datasets that are not
one plain byte range (chunked, compressed, compact).

Requests name the bytes, they do not carry them: ``source`` (a path or URL for ``open_source``),
``offset`` and ``size`` of the HDF5 image in it (a ``.keras`` member), ``inflate`` when that member
is deflate-compressed.
"""
from __future__ import annotations

import io
import os
import zlib
from typing import TYPE_CHECKING, Any

from ...errors import FormatError, UnsafeCheckpointError
from ...source import open_source

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["describe", "read_dataset", "MAX_ATTR_ELEMENTS", "MAX_DEPTH"]

MAX_ATTR_ELEMENTS = 1 << 20  # attribute arrays above this are described, not read
MAX_DEPTH = 200  # nested groups


def _open(args: dict[str, Any]) -> Any:
    import h5py

    where = args["where"]
    src = open_source(args["source"])
    offset, size = int(args["offset"]), int(args["size"])
    if offset < 0 or size < 0 or offset + size > src.size:
        raise FormatError(f"{where}: HDF5 image at bytes {offset}..{offset + size} lies past the end of {args['source']}")
    if args.get("inflate"):
        expected = int(args["usize"])
        inflater = zlib.decompressobj(-15)
        try:
            blob = inflater.decompress(bytes(src.read(offset, size)), expected + 1)
        except zlib.error as exc:
            raise FormatError(f"{where}: damaged deflate data: {exc}") from None
        if len(blob) != expected:
            raise FormatError(f"{where}: member inflates to {len(blob)} bytes, not its declared {expected}")
        fileobj: Any = io.BytesIO(blob)
    elif offset == 0 and size == src.size and _fd_path(src) is not None and not _files_open(h5py):
        fileobj = _fd_path(src)  # libhdf5's own driver on the very file we opened (no link followed): faster
    else:
        fileobj = io.BufferedReader(src.window(offset, size), 1 << 16)
    try:
        return h5py.File(fileobj, "r", locking=False)
    except Exception as exc:  # noqa: BLE001 - whatever libhdf5 says about a damaged file
        raise FormatError(f"{where}: damaged or unreadable HDF5 file: {exc}") from None


def _fd_path(src: Any) -> str | None:
    """``/proc/self/fd/N`` of a local source's open descriptor (Linux), else None."""
    fileno = getattr(src, "fileno", None)
    if fileno is None or src.local_path is None or not os.path.isdir("/proc/self/fd"):
        return None
    return f"/proc/self/fd/{fileno()}"


def _files_open(h5py: Any) -> bool:
    """Whether this process (a fork) inherited open HDF5 files: then libhdf5 would share their state
    with ours by inode, so the file is read through a file object instead."""
    return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) > 0


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not UTF-8 text") from None
    raise FormatError(f"{what} is a {type(value).__name__}, not text")


def _attr_value(value: Any, what: str) -> Any:
    """An attribute as JSON data: text, numbers, (nested) lists of them."""
    if isinstance(value, (str, bytes, np.bytes_)):
        return _text(value, what)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray):
        if value.size > MAX_ATTR_ELEMENTS:
            raise FormatError(f"{what} holds {value.size} elements; not read")
        if value.dtype.kind in "SUO":
            return [_text(v, what) for v in value.reshape(-1)]
        if value.dtype.kind in "biuf" and not value.dtype.fields:
            return value.tolist()
    raise FormatError(f"{what} is of an unsupported kind ({type(value).__name__})")


def _attrs(obj: Any, where: str) -> dict[str, Any]:
    """Every attribute; one that cannot be read becomes ``{"__error__": why}`` (raised only if used)."""
    out: dict[str, Any] = {}
    try:
        attrs = obj.attrs  # the property makes a new manager on every use: one for all of them
        names = list(attrs.keys())
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{where}: damaged attributes of {obj.name}: {exc}") from None
    owner = obj.name if names else ""
    for name in names:
        if not isinstance(name, str):
            raise FormatError(f"{where}: attribute name {name!r} of {owner} is not UTF-8 text; refusing")
        what = f"attribute {name!r} of {owner}"
        try:
            out[name] = _attr_value(attrs[name], what)
        except FormatError as exc:
            out[name] = {"__error__": str(exc)}
        except Exception as exc:  # noqa: BLE001 - unknown string encodings, damaged dataspaces ...
            out[name] = {"__error__": f"{what} cannot be read: {type(exc).__name__}: {exc}"}
    return out


def _dataset(dset: Any, name: str, where: str) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": "dataset", "name": name}
    try:
        d["virtual"] = bool(dset.is_virtual)
        d["external"] = bool(dset.external)
        dtype = dset.dtype
        numeric = dtype.kind in "biufc" and not dtype.fields and dtype.subdtype is None
        d["dtype"] = dtype.str if numeric else None
        d["dtype_text"] = str(dtype)
        d["shape"] = None if dset.shape is None else [int(n) for n in dset.shape]
        d["chunks"] = None if dset.chunks is None else [int(n) for n in dset.chunks]
        d["filters"] = int(dset.id.get_create_plist().get_nfilters())
        d["storage"] = int(dset.id.get_storage_size())
        offset = dset.id.get_offset()
        d["offset"] = None if offset is None else int(offset)
    except Exception as exc:  # noqa: BLE001
        d["error"] = f"{type(exc).__name__}: {exc}"
    d["attrs"] = _attrs(dset, where)
    return d


def _decoded(name: bytes) -> str | bytes:
    """A stored name as h5py gives it: UTF-8 text, else the bytes."""
    try:
        return name.decode("utf8")
    except UnicodeDecodeError:
        return name


def _node(oid: Any, h5py: Any) -> Any:
    """The object ``oid`` opened, as ``group[name]`` gives it (a Group, a read-only Dataset, a Datatype)."""
    kind = h5py.h5i.get_type(oid)
    if kind == h5py.h5i.GROUP:
        return h5py.Group(oid)
    if kind == h5py.h5i.DATASET:
        return h5py.Dataset(oid, readonly=True)
    if kind == h5py.h5i.DATATYPE:
        return h5py.Datatype(oid)
    raise TypeError("Unknown object type")


def describe(args: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The file's metadata as ``{"objects": [...]}``: one flat entry per group and dataset, by path."""
    import h5py

    where = args["where"]
    max_objects = max(10_000, int(args["size"]) // 8)
    f = _open(args)
    objects: list[dict[str, Any]] = []
    seen: dict[int, tuple[str, dict[str, Any]]] = {}  # object address -> (first path, its description)
    stack: list[tuple[str, Any, int, tuple[int, ...]]] = [("/", f, 0, ())]
    with f:
        while stack:
            path, group, depth, ancestors = stack.pop()
            if depth > MAX_DEPTH:
                raise FormatError(f"{where}: groups nest deeper than {MAX_DEPTH} levels at {path}; refusing")
            entry: dict[str, Any] = {"kind": "group", "name": path, "attrs": _attrs(group, where), "links": []}
            objects.append(entry)
            try:
                names = list(group.id.__iter__())  # the link names as stored (bytes), in the order keys() gives
            except Exception as exc:  # noqa: BLE001
                raise FormatError(f"{where}: damaged HDF5 group {path}: {exc}") from None
            children = []
            links = group.id.links
            for raw in names:
                name = _decoded(raw)
                if not isinstance(name, str):
                    raise FormatError(f"{where}: link name {name!r} in group {path} is not UTF-8 text; refusing")
                if len(objects) + len(entry["links"]) > max_objects:
                    raise UnsafeCheckpointError(f"{where}: more than {max_objects:,} HDF5 objects for a file of "
                                                f"{int(args['size']):,} bytes; refusing")
                full = path.rstrip("/") + "/" + name
                try:  # the link's kind, as group.get(name, getlink=True) reads it, without its other lookups
                    kind = links.get_info(raw).type
                    if kind == h5py.h5l.TYPE_SOFT:
                        entry["links"].append([name, "soft", _text(_decoded(links.get_val(raw)), f"soft link {full}")])
                        continue
                    if kind != h5py.h5l.TYPE_HARD:
                        link = group.get(name, getlink=True)
                except Exception as exc:  # noqa: BLE001
                    raise FormatError(f"{where}: damaged HDF5 link {full}: {exc}") from None
                if kind != h5py.h5l.TYPE_HARD:
                    if isinstance(link, h5py.ExternalLink):
                        entry["links"].append([name, "external", _text(link.filename, f"link {full}"),
                                               _text(link.path, f"link {full}")])
                    else:
                        entry["links"].append([name, "other"])
                    continue
                try:  # group[name], opened directly
                    oid = h5py.h5o.open(group.id, raw, lapl=group._lapl)
                    addr = int(h5py.h5o.get_info(oid).addr)
                    node = _node(oid, h5py)
                except Exception as exc:  # noqa: BLE001
                    raise FormatError(f"{where}: damaged HDF5 object {full}: {exc}") from None
                entry["links"].append([name, "hard"])
                if addr in seen:
                    first, desc = seen[addr]
                    if desc["kind"] != "dataset":
                        what = "one of its own ancestors" if addr in ancestors else f"also at {first}"
                        raise UnsafeCheckpointError(f"{where}: HDF5 group {full} is {what} (a hard-link "
                                                    "cycle or a shared group); refusing")
                    objects.append(dict(desc, name=full))  # one dataset under two names: an alias
                    continue
                if isinstance(node, h5py.Dataset):
                    desc = _dataset(node, full, where)
                    objects.append(desc)
                    seen[addr] = (full, desc)
                elif isinstance(node, h5py.Group):
                    seen[addr] = (full, {"kind": "group"})
                    children.append((full, node, depth + 1, ancestors + (addr,)))
                else:
                    objects.append({"kind": "other", "name": full})
                    seen[addr] = (full, {"kind": "other"})
            stack.extend(reversed(children))
    return {"objects": objects}, b""


def describe_many(args: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """``describe`` of several files in one child (``scan`` of a folder tree): each file's description or its error.
    A file that crashes or hangs libhdf5 ends the whole child; the parent then describes each file on its own."""
    results: list[dict[str, Any]] = []
    for request in args["requests"]:
        try:
            results.append(describe(dict(request, memory_mib=args.get("memory_mib")))[0])
        except (FormatError, UnsafeCheckpointError) as exc:
            results.append({"error": str(exc), "class": type(exc).__name__})
        except Exception as exc:  # noqa: BLE001 - a damaged file: its own error, the others still described
            results.append({"error": f"{request.get('where')}: {type(exc).__name__}: {exc}"[:400], "class": "FormatError"})
    return {"results": results}, b""


def read_dataset(args: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """One dataset's bytes (C order, its stored dtype), reached through hard links only."""
    import h5py

    where, path = args["where"], args["path"]
    f = _open(args)
    with f:
        node: Any = f
        for seg in [s for s in path.split("/") if s]:
            link = node.get(seg, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise FormatError(f"{where}: {path} is no longer reached by hard links")
            node = node[seg]
        if not isinstance(node, h5py.Dataset):
            raise FormatError(f"{where}: {path} is not a dataset")
        if node.dtype.str != args["dtype"] or list(node.shape or ()) != list(args["shape"]):
            raise FormatError(f"{where}: dataset {path} changed ({node.dtype} {node.shape})")
        try:
            arr = np.ascontiguousarray(node[()])
        except Exception as exc:  # noqa: BLE001
            raise FormatError(f"{where}: cannot read dataset {path}: {exc}") from None
    return {"dtype": arr.dtype.str, "shape": list(arr.shape)}, arr.tobytes()
