"""Byte sources: random access to the bytes of one file, local or remote, behind one small protocol.

Every reader gets its bytes through a ``ByteSource``: ``size``, ``read(offset, n)`` (exactly ``n`` bytes
or a ``FormatError``), ``window(offset, size)`` (a seekable file object for libraries that want one:
``zipfile``, ``h5py``), ``identity()`` (what provenance records instead of hashing the file) and
``copy_to(out, offset, n)`` (writers: a byte range straight into an output file; ``LocalFile`` copies in
the kernel, any other source inherits the chunked fallback by subclassing ``ByteSource``).

``open_source(name)`` picks the implementation: a registered URL scheme (``scheme://...``; the remote
ones of ``REMOTE_SCHEMES`` load ``ckptsurgeon.remote`` on first use) or a local file. A source may also
offer ``readinto(offset, buffer)`` to fill a buffer without an intermediate copy (local files do). Local files are opened without following a symbolic link and only when they are regular files
(a FIFO or a device would block or never end).
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Protocol, runtime_checkable

from .errors import CheckpointNotFoundError, FormatError, UnsafeCheckpointError

__all__ = ["ByteSource", "LocalFile", "SourceWindow", "open_source", "register_scheme", "is_url", "url_scheme",
           "ensure_scheme", "read_exact", "read_small_file", "REMOTE_SCHEMES", "copy_to", "copy_range", "CHUNK"]

CHUNK = 16 << 20  # bytes per read when a range is copied through memory
KERNEL_CHUNK = 256 << 20  # bytes per kernel copy call (progress and Ctrl-C between calls)
Progress = Callable[[int], None]


@runtime_checkable
class ByteSource(Protocol):
    """Random access to one file's bytes. ``name`` is the path or URL used in messages."""

    name: str

    @property
    def size(self) -> int: ...

    @property
    def local_path(self) -> str | None:
        """The local file's path when there is one (kernel copies, libhdf5's own driver), else None."""
        ...

    def read(self, offset: int, size: int) -> bytes | bytearray:
        """Exactly ``size`` bytes at ``offset``; a short read raises ``FormatError`` (truncated file)."""
        ...

    def window(self, offset: int = 0, size: int | None = None) -> io.RawIOBase:
        """A read-only, seekable file object over ``size`` bytes at ``offset`` (default: to the end)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies this version of the file without reading it (size, mtime, ETag ...)."""
        ...

    def copy_to(self, out: BinaryIO, offset: int, size: int, *, digest: Any = None,
                progress: Progress | None = None) -> None:
        """Write ``size`` bytes at ``offset`` to ``out`` at its position; the position ends after them.

        With ``digest`` (a hashlib object) the bytes pass through memory and update it. This default
        (inherited by sources that subclass ``ByteSource``) reads ``CHUNK``-sized ranges.
        """
        copy_range(self, out, offset, size, digest=digest, progress=progress)


def copy_to(source: ByteSource, out: BinaryIO, offset: int, size: int, *, digest: Any = None,
            progress: Progress | None = None) -> None:
    """``source.copy_to(...)``, or the chunked copy for a source that implements the protocol without
    subclassing ``ByteSource`` (and so without its default ``copy_to``)."""
    method = getattr(source, "copy_to", None)
    if method is None:
        copy_range(source, out, offset, size, digest=digest, progress=progress)
    else:
        method(out, offset, size, digest=digest, progress=progress)


def copy_range(source: ByteSource, out: BinaryIO, offset: int, size: int, *, digest: Any = None,
               progress: Progress | None = None) -> None:
    """Copy a byte range of ``source`` into ``out`` through one ``CHUNK``-sized read at a time."""
    done = 0
    while done < size:
        n = min(CHUNK, size - done)
        data = source.read(offset + done, n)
        if digest is not None:
            digest.update(data)
        out.write(data)
        done += n
        if progress is not None:
            progress(n)


class SourceWindow(io.RawIOBase):
    """A read-only file object over a byte range of a ``ByteSource``."""

    def __init__(self, source: ByteSource, offset: int = 0, size: int | None = None) -> None:
        self._source = source
        self._offset = offset
        self._size = source.size - offset if size is None else size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf: Any) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if not n:
            return 0
        data = self._source.read(self._offset + self._pos, n)
        buf[:n] = data
        self._pos += n
        return n


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    """An fd on ``path`` if it is a regular file reached without a final symbolic link."""
    if os.path.islink(path):
        raise UnsafeCheckpointError(f"{path}: is a symbolic link; ckptsurgeon follows no links (pass the real file)")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot open: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise FormatError(f"{path}: is {what}; pass a checkpoint file")
    return fd, st


class LocalFile(ByteSource):
    """A local regular file, read with ``os.pread`` on a descriptor opened once."""

    _fd = -1

    def __init__(self, path: str) -> None:
        self.name = path
        self._fd, self._stat = _open_regular(path)

    @property
    def size(self) -> int:
        return self._stat.st_size

    @property
    def local_path(self) -> str | None:
        return self.name

    def fileno(self) -> int:
        return self._fd

    def read(self, offset: int, size: int) -> bytearray:
        """A fresh, writable buffer (arrays made from it can be modified in place)."""
        if offset < 0 or size < 0:
            raise FormatError(f"{self.name}: invalid byte range {offset}+{size}")
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            n = os.preadv(self._fd, [view[got:got + (1 << 30)]], offset + got)
            if not n:
                break
            got += n
        if got != size:
            raise FormatError(f"{self.name}: truncated: wanted {size} bytes at offset {offset}, got {got}")
        return buf

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes at ``offset`` (no intermediate copy); short reads raise."""
        view, got = memoryview(buf).cast("B"), 0
        while got < len(view):
            n = os.preadv(self._fd, [view[got:got + (1 << 30)]], offset + got)
            if not n:
                raise FormatError(f"{self.name}: truncated: wanted {len(view)} bytes at offset {offset}, got {got}")
            got += n

    def fresh(self) -> bool:
        """Whether the path still names the file this descriptor reads (not replaced or changed since)."""
        try:
            st = os.stat(self.name, follow_symlinks=False)
        except OSError:
            return False
        old = self._stat
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns) == (old.st_ino, old.st_dev, old.st_size, old.st_mtime_ns)

    def window(self, offset: int = 0, size: int | None = None) -> io.RawIOBase:
        return SourceWindow(self, offset, size)

    def identity(self) -> dict[str, Any]:
        return {"size": self._stat.st_size, "mtime_ns": self._stat.st_mtime_ns}

    def copy_to(self, out: BinaryIO, offset: int, size: int, *, digest: Any = None,
                progress: Progress | None = None) -> None:
        """Without ``digest``, the kernel copies (``copy_file_range``, else ``sendfile``): the bytes
        never enter this process. Otherwise, or when ``out`` is not a file, through memory."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(f"{self.name}: truncated: wanted {size} bytes at offset {offset}, the file has {self.size}")
        try:
            dst = out.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            dst = -1
        if digest is not None or dst < 0 or not size:
            return copy_range(self, out, offset, size, digest=digest, progress=progress)
        out.flush()
        start = out.tell()
        done = _kernel_copy(self.name, self._fd, dst, offset, start, size, progress)
        if done < size:  # a file system the kernel cannot copy on: the rest through memory
            out.seek(start + done)
            copy_range(self, out, offset + done, size - done, progress=progress)
        out.seek(start + size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()


_ADVISE = getattr(os, "POSIX_FADV_DONTNEED", 0)  # on Linux: write back the range now (dirty pages stay cached)
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}


def _kernel_copy(name: str, src: int, dst: int, offset: int, at: int, size: int, progress: Progress | None) -> int:
    """Copy in the kernel; returns how many bytes were copied (short when neither call is supported)."""
    done = 0
    for call in ("copy_file_range", "sendfile"):
        if not hasattr(os, call):
            continue
        try:
            while done < size:
                n = min(KERNEL_CHUNK, size - done)
                if call == "copy_file_range":
                    got = os.copy_file_range(src, dst, n, offset + done, at + done)
                else:
                    os.lseek(dst, at + done, os.SEEK_SET)
                    got = os.sendfile(dst, src, offset + done, n)
                if not got:
                    raise FormatError(f"{name}: truncated: wanted {size} bytes at offset {offset}, the file ended early")
                if _ADVISE:  # start writing these bytes to disk now: outputs are fsynced at the end, and
                    os.posix_fadvise(dst, at + done, got, _ADVISE)  # this overlaps that with the copy
                done += got
                if progress is not None:
                    progress(got)
            return done
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
    return done


_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_SCHEMES: dict[str, Callable[[str], ByteSource]] = {}
_CACHE: dict[str, ByteSource] = {}
_CACHE_MAX = 64


# Schemes served by fsspec (``ckptsurgeon.remote``), loaded on first use: local work never imports fsspec.
REMOTE_SCHEMES = ("hf", "s3", "s3a", "gs", "gcs", "http", "https", "memory", "az", "abfs")


def is_url(name: str) -> bool:
    return _URL.match(name) is not None


def url_scheme(name: str) -> str:
    m = _URL.match(name)
    return m.group(1).lower() if m else ""


def ensure_scheme(scheme: str, name: str) -> None:
    """Register the backend for ``scheme`` if it is a known remote one (or raise its install hint)."""
    if scheme not in _SCHEMES and scheme in REMOTE_SCHEMES:
        from . import remote

        remote.install(name)


def register_scheme(scheme: str, opener: Callable[[str], ByteSource]) -> None:
    """Open ``scheme://...`` names with ``opener`` (remote stores register here)."""
    _SCHEMES[scheme.lower()] = opener


_SETTLED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("ckptsurgeon_settled", default=None)


@contextlib.contextmanager
def settled() -> Iterator[None]:
    """Within: a cached file is checked unchanged (``fresh``) at its first ``open_source``, not at every one (``scan``
    of one file opens it several times within milliseconds, through the same descriptor)."""
    token = _SETTLED.set(set())
    try:
        yield
    finally:
        _SETTLED.reset(token)


def open_source(name: str) -> ByteSource:
    """The ByteSource for a path or URL; opened once and reused (a small cache of open files)."""
    src = _CACHE.pop(name, None)
    checked = _SETTLED.get()
    if src is not None and ((checked is not None and name in checked) or getattr(src, "fresh", lambda: True)()):
        _CACHE[name] = src  # most recently used last
        if checked is not None:
            checked.add(name)
        return src
    if src is not None:
        getattr(src, "close", lambda: None)()
    m = _URL.match(name)
    if m:
        ensure_scheme(m.group(1).lower(), name)
        opener = _SCHEMES.get(m.group(1).lower())
        if opener is None:
            raise FormatError(f"{name}: unsupported URL scheme {m.group(1)!r}")
        src = opener(name)
    else:
        src = LocalFile(name)
    if len(_CACHE) >= _CACHE_MAX:
        old = _CACHE.pop(next(iter(_CACHE)))
        getattr(old, "close", lambda: None)()
    _CACHE[name] = src
    if checked is not None:
        checked.add(name)
    return src


def read_exact(name: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of the file or URL ``name``."""
    return open_source(name).read(offset, size)


def read_small_file(path: str, limit: int, what: str) -> bytes:
    """The whole of a small side file (rules, layout locks, state files): a regular file, no link
    followed, at most ``limit`` bytes, never a FIFO or a device that would block."""
    src = LocalFile(path)
    try:
        if src.size > limit:
            raise FormatError(f"{path}: {src.size:,} bytes is too large for {what} (limit {limit:,})")
        return bytes(src.read(0, src.size))
    finally:
        src.close()
