"""An HDF5 file's metadata as plain Python objects, built from what ``h5probe.describe`` found in a
child process, or what ``h5plain`` read in this one for a plain file (the same description). The readers walk
this tree; libhdf5 never runs in the reading process.

The classes keep the small part of h5py's vocabulary the readers use (``keys()``, ``attrs``,
``get(name, getlink=True)``, ``[name]``, ``HardLink``/``SoftLink``/``ExternalLink``), so reading a
Keras layout looks the same as it would with h5py.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...dtype_lite import LiteDtype, as_numpy, from_typestr
from ...errors import FormatError, UnsafeCheckpointError
from ...isolate import Limits, run_isolated
from ...source import open_source, url_scheme
from .h5plain import describe_plain

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["H5Source", "Group", "Dataset", "HardLink", "SoftLink", "ExternalLink", "OtherLink", "Attrs",
           "describe_file", "read_dataset_bytes", "metadata_limits"]

DEFAULT_SECONDS = 30.0  # the most a file's metadata gets (from 30 MB on)
FLOOR_SECONDS = 5.0  # the least: a spawned child importing h5py on a loaded machine needs a second or two
# (a small file's metadata then parses in milliseconds; a damaged one may loop forever)
METADATA_BYTES_PER_SECOND = 1 << 20  # between the two, the limit grows with the file
DEFAULT_MEMORY_MIB = 512  # over what the child starts with; metadata needs a few MB, a hostile heap object asks for GBs
READ_BYTES_PER_SECOND = 20 << 20  # time granted to read a chunked dataset in the child, on top of the base


@dataclass(frozen=True)
class H5Source:
    """Where the HDF5 image is: ``size`` bytes at ``offset`` of ``name`` (a path or URL), deflated or not."""

    name: str
    offset: int
    size: int
    where: str
    inflate: bool = False
    usize: int = 0

    def request(self) -> dict[str, Any]:
        return {"source": self.name, "offset": self.offset, "size": self.size, "where": self.where,
                "inflate": self.inflate, "usize": self.usize}

    @property
    def process_local(self) -> bool:
        """Bytes only this process can reach (``memory://``): a spawned child could not open them."""
        return url_scheme(self.name) == "memory"

    @property
    def direct(self) -> bool:
        """Whether dataset offsets are offsets in ``name`` (+ ``offset``): not inside compressed bytes."""
        return not self.inflate


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def metadata_limits(extra_bytes: int = 0, file_bytes: int | None = None) -> Limits:
    """Wall time and memory for one child: ``CKPTSURGEON_HDF5_TIMEOUT`` s (else one second per MiB of the file,
    from 5 s up to 30 s, so that a damaged small file is refused in seconds), ``CKPTSURGEON_HDF5_MEMORY`` MiB."""
    scaled = DEFAULT_SECONDS if file_bytes is None else \
        min(DEFAULT_SECONDS, max(FLOOR_SECONDS, file_bytes / METADATA_BYTES_PER_SECOND))
    seconds = _env_number("CKPTSURGEON_HDF5_TIMEOUT", scaled)
    memory = int(_env_number("CKPTSURGEON_HDF5_MEMORY", DEFAULT_MEMORY_MIB)) << 20
    return Limits(seconds + extra_bytes / READ_BYTES_PER_SECOND, memory + 3 * extra_bytes)


class Attrs(Mapping[str, Any]):
    """Attribute values as text, numbers and lists; an unreadable one raises when it is used."""

    def __init__(self, values: Mapping[str, Any], owner: str, where: str) -> None:
        self._values, self._owner, self._where = dict(values), owner, where

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        if isinstance(value, dict) and "__error__" in value:
            raise FormatError(f"{self._where}: {value['__error__']}")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def plain(self) -> dict[str, Any]:
        """Every attribute that could be read, without raising for the others."""
        return {k: v for k, v in self._values.items() if not (isinstance(v, dict) and "__error__" in v)}


@dataclass(frozen=True)
class HardLink:
    pass


@dataclass(frozen=True)
class SoftLink:
    path: str


@dataclass(frozen=True)
class ExternalLink:
    filename: str
    path: str


@dataclass(frozen=True)
class OtherLink:
    pass


@dataclass
class Dataset:
    name: str
    attrs: Attrs
    dtype: np.dtype | LiteDtype | None
    dtype_text: str
    shape: tuple[int, ...] | None
    chunks: tuple[int, ...] | None
    filters: int
    storage: int
    offset: int | None
    virtual: bool
    external: bool
    error: str | None = None

    @property
    def contiguous(self) -> bool:
        """Stored as one plain byte range (no chunks, no filters, allocated): readable without libhdf5."""
        return self.chunks is None and not self.filters and self.offset is not None


@dataclass
class Group:
    name: str
    attrs: Attrs
    links: dict[str, Any] = field(default_factory=dict)  # name -> link object
    nodes: dict[str, Any] = field(default_factory=dict)  # name -> Group/Dataset/None (hard links only)

    def keys(self) -> list[str]:
        return list(self.links)

    def __contains__(self, name: object) -> bool:
        return name in self.links

    def __iter__(self) -> Iterator[str]:
        return iter(self.links)

    def get(self, name: str, default: Any = None, getlink: bool = False) -> Any:
        if not getlink:
            return self.nodes.get(name, default)
        return self.links.get(name, default)

    def __getitem__(self, name: str) -> Any:
        node: Any = self
        for seg in [s for s in name.split("/") if s]:
            if not isinstance(node, Group) or seg not in node.nodes:
                raise KeyError(f"{self.name}/{name}")
            node = node.nodes[seg]
        return node


def _dtype(text: str | None, where: str, name: str) -> np.dtype | LiteDtype | None:
    if text is None:
        return None
    plain = from_typestr(text) if type(text) is str else None
    if plain is not None:
        return plain  # numeric: "biufc" and a size, as below
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise FormatError(f"{where}: dataset {name} has an unreadable dtype {text!r}") from None
    return dtype if dtype.kind in "biufc" and dtype.itemsize > 0 else None


def _ints(value: Any, where: str, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise FormatError(f"{where}: dataset {name} has an invalid shape {str(value)[:80]}")
    return tuple(value)


def build(description: dict[str, Any], where: str) -> Group:
    """The tree of ``describe``'s flat object list (checked: it came from a process that read hostile bytes)."""
    try:
        return _build(description, where)
    except (TypeError, IndexError, KeyError, ValueError, AttributeError) as exc:
        raise FormatError(f"{where}: malformed HDF5 description: {type(exc).__name__}: {exc}") from None


def _build(description: dict[str, Any], where: str) -> Group:
    objects = description.get("objects")
    if not isinstance(objects, list) or not objects or objects[0].get("name") != "/":
        raise FormatError(f"{where}: empty or unreadable HDF5 metadata")
    by_name: dict[str, Any] = {}
    for obj in objects:
        name = obj.get("name")
        attrs = Attrs(obj.get("attrs") or {}, str(name), where)
        if obj.get("kind") == "group":
            node: Any = Group(name, attrs)
            for link in obj.get("links") or []:
                kind = link[1]
                node.links[link[0]] = (HardLink() if kind == "hard" else SoftLink(link[2]) if kind == "soft"
                                       else ExternalLink(link[2], link[3]) if kind == "external" else OtherLink())
        elif obj.get("kind") == "dataset":
            node = Dataset(name, attrs, _dtype(obj.get("dtype"), where, name), str(obj.get("dtype_text")),
                           _ints(obj.get("shape"), where, name), _ints(obj.get("chunks"), where, name),
                           int(obj.get("filters") or 0), int(obj.get("storage") or 0), obj.get("offset"),
                           bool(obj.get("virtual")), bool(obj.get("external")), obj.get("error"))
        else:
            node = None
        by_name[name] = node
    for name, node in by_name.items():
        if isinstance(node, Group):
            for link_name, link in node.links.items():
                if isinstance(link, HardLink):
                    node.nodes[link_name] = by_name.get(name.rstrip("/") + "/" + link_name)
    root = by_name["/"]
    if not isinstance(root, Group):
        raise FormatError(f"{where}: the HDF5 root is not a group")
    return root


# Descriptions made ahead by ``prefetch`` (one child for many files), by file identity (path, size, mtime, inode),
# until ``forget_prefetched``.
_PREFETCHED: dict[tuple, dict[str, Any]] = {}
PREFETCH_SECONDS = 30.0  # the most one batch may take before its files are described one by one


def _identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def prefetch(paths: list[str]) -> None:
    """Describe plain local HDF5 files in one child process, ahead of ``describe_file`` (what ``scan`` of a folder
    tree does: a child per file costs tens of milliseconds). Errors stay per file; if the batch crashes or runs out
    of time (a hostile file), nothing is kept and each file is described on its own later, with its own limits."""
    requests, keys = [], []
    for path in paths:
        key = _identity(path)
        if key is None or key in _PREFETCHED:
            continue
        source = H5Source(path, 0, key[1], path)
        plain = _plain(source)
        if plain is not None:
            _PREFETCHED[key] = plain
            continue
        requests.append(source.request())
        keys.append(key)
    if len(requests) < 2:
        return
    limits = [metadata_limits(0, r["size"]) for r in requests]
    # one file's limit plus a little per file: a healthy batch takes milliseconds a file; a looping file costs this once
    seconds = min(PREFETCH_SECONDS, max(lim.seconds for lim in limits) + 0.05 * len(limits))
    batch = Limits(seconds, max(lim.memory for lim in limits))
    try:
        header, _ = run_isolated("hdf5.describe_many", {"requests": requests}, batch, where=f"{len(requests)} HDF5 files",
                                 what="libhdf5 reading the files' metadata", preload=("h5py",))
    except FormatError:
        return
    results = header.get("results")
    if isinstance(results, list) and len(results) == len(keys):
        _PREFETCHED.update(zip(keys, results))


def forget_prefetched() -> None:
    _PREFETCHED.clear()


def _plain(source: H5Source) -> dict[str, Any] | None:
    """``describe``'s answer read in this process (``h5plain``) for a plain image not inside compressed bytes,
    else None; ``CKPTSURGEON_HDF5_READER=libhdf5`` always gives None (libhdf5 reads every file)."""
    if source.inflate or os.environ.get("CKPTSURGEON_HDF5_READER") == "libhdf5":
        return None
    try:
        src = open_source(source.name)  # shared with the readers (a cache of open sources): not closed here
    except (OSError, FormatError):
        return None
    return describe_plain(src, source.offset, source.size)


def describe_file(source: H5Source) -> Group:
    """The metadata of the HDF5 image at ``source``: read in this process if it is plain (``h5plain``), else parsed
    by libhdf5 in a child process."""
    if _PREFETCHED and not source.inflate and source.offset == 0 and not url_scheme(source.name):
        key = _identity(source.name)
        found = _PREFETCHED.get(key) if key is not None and key[1] == source.size else None
        if found is not None:
            if "error" in found:
                raise (UnsafeCheckpointError if found.get("class") == "UnsafeCheckpointError" else FormatError)(found["error"])
            return build(found, source.where)
    plain = _plain(source)
    if plain is not None:
        return build(plain, source.where)
    inflated = source.usize if source.inflate else 0  # a deflated .keras member is inflated in the child's memory
    header, _ = run_isolated("hdf5.describe", source.request(), metadata_limits(inflated, max(source.size, inflated)),
                             where=source.where,
                             what="libhdf5 reading the file's metadata", preload=("h5py",),
                             needs_fork=source.process_local)
    return build(header, source.where)


def read_dataset_bytes(source: H5Source, dset: Dataset) -> np.ndarray:
    """A dataset that is not one plain byte range (chunked, compressed, compact), read in a child process."""
    assert dset.dtype is not None and dset.shape is not None
    nbytes = math.prod(dset.shape) * dset.dtype.itemsize
    request = dict(source.request(), path=dset.name, dtype=dset.dtype.str, shape=list(dset.shape))
    limits = metadata_limits(nbytes)
    header, payload = run_isolated("hdf5.read", request, limits, where=source.where,
                                   what=f"libhdf5 reading dataset {dset.name}", reply_cap=nbytes + (1 << 20),
                                   preload=("h5py",), needs_fork=source.process_local)
    if header.get("dtype") != dset.dtype.str or header.get("shape") != list(dset.shape) or len(payload) != nbytes:
        raise FormatError(f"{source.where}: dataset {dset.name} read back as {header.get('dtype')} "
                          f"{header.get('shape')} ({len(payload)} bytes), not {dset.dtype.str} {list(dset.shape)}")
    return np.frombuffer(bytearray(payload), as_numpy(dset.dtype)).reshape(dset.shape)
