"""Remote files: ``https://`` (the standard library), ``hf://``, ``s3://``, ``gs://``, ``memory://`` ... (fsspec).

A ``RemoteFile`` is a ``ByteSource`` that fetches byte ranges, never a whole file: small reads
(headers, zip directories, pickles) go through a cache of 64 KiB blocks, the first read fetches
the head of the file in one request (a safetensors header, a zip's first local header), and
tensor-sized reads are fetched as exactly their range. ``identity()`` is the URL with the store's
ETag or the Hub's LFS sha256, so provenance never needs the whole file.

``http://`` and ``https://`` go through ``HttpStore`` (``remote_http.py``: ``http.client``, one keep-alive
connection per origin, no fsspec import), which trusts the server with nothing: connect and read timeouts
(``CKPTSURGEON_CONNECT_TIMEOUT``, ``CKPTSURGEON_READ_TIMEOUT``), a minimum rate, never more bytes than asked
and no content coding, redirects followed only within the URL's own origin. A server that breaks one is a
one-line error. One store serves the whole process, so a file's size is asked once, not once per probe.

Credentials come from the environment and the stores' own config files (fsspec, s3fs, gcsfs and
huggingface_hub read them); no option of ours takes a secret. fsspec is an optional dependency for the
other stores: ``pip install 'ckptsurgeon[remote]'`` (plus ``[s3]``, ``[gcs]`` or ``[hf]`` for those stores).
"""
from __future__ import annotations

import io
import time
from collections import OrderedDict
from typing import Any

from .errors import CheckpointNotFoundError, CheckpointError, FormatError, MissingDependencyError
from .remote_http import CONNECT_TIMEOUT, MAX_REDIRECTS, MIN_RATE, READ_TIMEOUT, HttpStore, _one_line, public_url  # noqa: F401
from .source import REMOTE_SCHEMES, ByteSource, SourceWindow, register_scheme, url_scheme

__all__ = ["RemoteFile", "HttpStore", "install", "public_url", "BLOCK", "HEAD_BLOCKS", "CONNECT_TIMEOUT", "READ_TIMEOUT",
           "MIN_RATE", "MAX_REDIRECTS"]

BLOCK = 64 * 1024  # cache granule for small reads
HEAD_BLOCKS = 2  # the first read near the start fetches this many blocks (128 KiB) in one request
CACHE_BLOCKS = 32
RETRIES = 2  # a dropped connection is retried this many times, then reported

# HTTP(S): what a server gets before it is reported (a stalled, trickling or lying server is never waited on).

# The store's version tag of a file, by the name each fsspec backend gives it in ``info()``.
_ETAG_KEYS = ("ETag", "etag", "e_tag", "md5Hash", "Content-MD5")


_HTTP: HttpStore | None = None  # one for the process: its connections and the sizes it was told


def _fs_for(url: str) -> tuple[Any, str]:
    global _HTTP
    if url_scheme(url) in ("http", "https"):
        if _HTTP is None:
            _HTTP = HttpStore()
        return _HTTP, url
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("fsspec", "remote", f"reading {public_url(url)}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # the store's own backend (s3fs, gcsfs, huggingface_hub, aiohttp) is missing
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hf": "hf"}.get(url.split("://")[0].lower(), "remote")
        package = {"s3": "s3fs", "gcs": "gcsfs", "hf": "huggingface_hub", "remote": "aiohttp"}[extra]
        raise MissingDependencyError(package, extra, f"reading {public_url(url)}") from exc
    except Exception as exc:
        raise FormatError(f"{public_url(url)}: cannot open: {_one_line(exc)}") from None


def _info(fs: Any, path: str, url: str) -> dict[str, Any] | None:
    try:
        return dict(fs.info(path))
    except FileNotFoundError:
        return None
    except CheckpointError:
        raise
    except Exception as exc:
        raise FormatError(f"{public_url(url)}: cannot reach: {_one_line(exc)}") from None


class RemoteFile(ByteSource):
    """One remote file read by byte range (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.name = url
        self._fs, self._path = _fs_for(url)
        info = _info(self._fs, self._path, url)
        if info is None:
            raise CheckpointNotFoundError(f"{public_url(url)}: no such file or directory")
        if info.get("type") == "directory":
            raise FormatError(f"{public_url(url)}: is a directory; pass a checkpoint file")
        if info.get("size") is None:
            raise FormatError(f"{public_url(url)}: the server does not say the file's size; ranged reads need it")
        if info.get("partial") is False:
            raise FormatError(f"{public_url(url)}: the server refuses byte ranges (Accept-Ranges: none)")
        self._info = info
        self._size = int(info["size"])
        self._blocks: OrderedDict[int, bytes | bytearray] = OrderedDict()
        self.requests = 0
        self.bytes_fetched = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def local_path(self) -> str | None:
        return None

    def _fetch(self, start: int, end: int) -> bytes | bytearray:
        """Bytes ``[start, end)`` in one ranged request, retried on a dropped connection."""
        for attempt in range(RETRIES + 1):
            try:
                data = self._fs.cat_file(self._path, start=start, end=end)
            except FileNotFoundError:
                raise FormatError(f"{public_url(self.name)}: disappeared while reading") from None
            except CheckpointError:
                raise
            except Exception as exc:
                if attempt == RETRIES:
                    raise FormatError(f"{public_url(self.name)}: reading bytes {start}..{end} failed after "
                                      f"{RETRIES + 1} attempts: {_one_line(exc)}") from None
                time.sleep(0.1 * (attempt + 1))
                continue
            self.requests += 1
            self.bytes_fetched += len(data)
            if len(data) != end - start:
                raise FormatError(f"{public_url(self.name)}: asked for bytes {start}..{end}, got {len(data)} bytes "
                                  "(the file changed, or the server ignores ranges)")
            return data
        raise AssertionError("unreachable")

    def _cached(self, first: int, last: int) -> bytes:
        """Blocks ``first..last`` joined; missing ones fetched together in one request."""
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        if missing:
            lo, hi = missing[0], missing[-1]
            if lo < HEAD_BLOCKS:
                hi = max(hi, HEAD_BLOCKS - 1)
            data = self._fetch(lo * BLOCK, min((hi + 1) * BLOCK, self._size))
            for b in range(lo, hi + 1):
                if b * BLOCK < self._size:
                    self._blocks[b] = data[(b - lo) * BLOCK:(b - lo + 1) * BLOCK]
        out = b"".join(self._blocks[b] for b in range(first, last + 1))
        for b in range(first, last + 1):
            self._blocks.move_to_end(b)
        while len(self._blocks) > CACHE_BLOCKS:
            self._blocks.popitem(last=False)
        return out

    def read(self, offset: int, size: int) -> bytes | bytearray:
        if offset < 0 or size < 0:
            raise FormatError(f"{public_url(self.name)}: invalid byte range {offset}+{size}")
        if offset + size > self._size:
            raise FormatError(f"{public_url(self.name)}: truncated: wanted {size} bytes at offset {offset}, "
                              f"the file has {self._size}")
        if size == 0:
            return b""
        if size < BLOCK:
            first = offset // BLOCK
            data = self._cached(first, (offset + size - 1) // BLOCK)
            return data[offset - first * BLOCK:offset - first * BLOCK + size]
        return self._fetch(offset, offset + size)

    def window(self, offset: int = 0, size: int | None = None) -> io.RawIOBase:
        return SourceWindow(self, offset, size)

    def identity(self) -> dict[str, Any]:
        """URL, size and the store's own version tag: ETag, or the Hub's LFS sha256 / git blob id."""
        out: dict[str, Any] = {"url": public_url(self.name), "size": self._size}
        for key in _ETAG_KEYS:
            if self._info.get(key):
                out["etag"] = str(self._info[key]).strip('"')
                break
        lfs = self._info.get("lfs")
        if isinstance(lfs, dict) and lfs.get("sha256"):
            out["sha256"] = str(lfs["sha256"])
        elif self._info.get("blob_id"):
            out["git_blob"] = str(self._info["blob_id"])
        if isinstance(self._info.get("last_commit"), dict) and self._info["last_commit"].get("oid"):
            out["revision"] = str(self._info["last_commit"]["oid"])
        return out

    def close(self) -> None:
        self._blocks.clear()


class RemoteLocation:
    """Existence and kind of remote names (``info`` only: an HTTP HEAD, never a listing or a GET of data)."""

    def kind(self, name: str) -> str | None:
        fs, path = _fs_for(name)
        info = _info(fs, path, name)
        if info is None:
            return None
        kind = info.get("type")
        return "directory" if kind == "directory" else "file"


_INSTALLED = False


def install(url: str = "") -> None:
    """Register the remote schemes (fsspec is imported, or its install hint raised, when a store needs it)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from .location import register_location

    location = RemoteLocation()
    for scheme in REMOTE_SCHEMES:
        register_scheme(scheme, RemoteFile)
        register_location(scheme, location)
    _INSTALLED = True
