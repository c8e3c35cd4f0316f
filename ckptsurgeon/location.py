"""Locations: the little a reader needs to know about folders, local or remote.

A checkpoint is sometimes several files (a TensorFlow prefix, HF shards beside their index, a DCP
folder). Readers find them with these functions instead of ``os.path``, so the same reader works on
``/data/ckpt`` and on ``s3://bucket/ckpt``. Only existence and kind are asked: folders are never
listed (an HTTP server has no listing), readers probe the names they expect.

Local names follow no symbolic links (``islink`` lets detection refuse them); URL names go to the
location registered for their scheme (``ckptsurgeon.remote`` registers fsspec's).
"""
from __future__ import annotations

import os
import stat
import posixpath
from typing import Protocol

from .errors import UnsafeCheckpointError
from .source import ensure_scheme, is_url, open_source, url_scheme

__all__ = ["Location", "register_location", "kind", "entry_kind", "exists", "isfile", "isdir", "islink", "join", "parent", "basename",
           "read_small"]


class Location(Protocol):
    """Existence and kind of names under one URL scheme."""

    def kind(self, name: str) -> str | None:
        """``"file"``, ``"directory"`` or None when nothing is there."""
        ...


_LOCATIONS: dict[str, Location] = {}


def register_location(scheme: str, location: Location) -> None:
    _LOCATIONS[scheme.lower()] = location


def _remote(name: str) -> Location | None:
    scheme = url_scheme(name)
    if scheme not in _LOCATIONS:
        ensure_scheme(scheme, name)  # loads the remote backend, or raises its install hint
    return _LOCATIONS.get(scheme)


def kind(name: str) -> str | None:
    """``"file"``, ``"directory"`` or None. A URL scheme without a registered location counts as a file
    (its byte source, or the lack of one, speaks when it is opened)."""
    if is_url(name):
        loc = _remote(name)
        return loc.kind(name) if loc is not None else "file"
    found = entry_kind(name)  # one lstat for a regular file or a missing name (isdir + lexists took two)
    if found != "link":
        return found
    try:  # followed as isdir follows it
        mode = os.stat(name).st_mode
    except (OSError, ValueError):
        return "file"  # a dangling link still exists
    return "directory" if stat.S_ISDIR(mode) else "file"


def entry_kind(name: str) -> str | None:
    """``kind(name)``, or ``"link"`` for a symbolic link (never followed): one system call for a local name."""
    if is_url(name):
        return kind(name)
    try:
        mode = os.lstat(name).st_mode
    except (OSError, ValueError):  # ValueError: a bad name
        return None
    return "link" if stat.S_ISLNK(mode) else "directory" if stat.S_ISDIR(mode) else "file"


def exists(name: str) -> bool:
    return kind(name) is not None


def isfile(name: str) -> bool:
    return kind(name) == "file"


def isdir(name: str) -> bool:
    return kind(name) == "directory"


def islink(name: str) -> bool:
    return not is_url(name) and os.path.islink(name)


def join(base: str, *parts: str) -> str:
    if is_url(base):
        return posixpath.join(base.rstrip("/"), *parts) if parts else base
    return os.path.join(base, *parts)


def parent(name: str) -> str:
    if is_url(name):
        head, _, _ = name.rstrip("/").rpartition("/")
        return head if "://" in head else name
    return os.path.dirname(name) or "."


def basename(name: str) -> str:
    return name.rstrip("/").rpartition("/")[2] if is_url(name) else os.path.basename(name)


def read_small(name: str, limit: int, what: str = "file") -> bytes:
    """A whole small file (an index, a state file); over ``limit`` bytes is refused."""
    src = open_source(name)
    if src.size > limit:
        raise UnsafeCheckpointError(f"{name}: {what} of {src.size} bytes is over the {limit}-byte limit; refusing")
    return bytes(src.read(0, src.size))
