"""``http://`` and ``https://`` reads that trust the server with nothing (used by ``remote.RemoteFile``).

``HttpStore`` asks fsspec's aiohttp session itself: connect and read timeouts (``CKPTSURGEON_CONNECT_TIMEOUT``,
``CKPTSURGEON_READ_TIMEOUT``), a minimum rate, never more bytes than asked and no content coding, redirects only
within the URL's origin (``MAX_REDIRECTS`` at most). Every failure is one line naming the URL and what the server did.
"""
from __future__ import annotations

import asyncio
import math
import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .errors import CheckpointError, FormatError

if TYPE_CHECKING:
    from aiohttp import ClientResponse

__all__ = ["HttpStore", "ServerError", "public_url", "CONNECT_TIMEOUT", "READ_TIMEOUT", "MIN_RATE", "MAX_REDIRECTS"]

CONNECT_TIMEOUT = 10.0  # seconds to connect (CKPTSURGEON_CONNECT_TIMEOUT)
READ_TIMEOUT = 30.0  # seconds (CKPTSURGEON_READ_TIMEOUT) to answer a request, of silence, and MIN_RATE's window
MIN_RATE = 1024  # bytes/s: a body slower than this over a READ_TIMEOUT window is dropped
MAX_REDIRECTS = 5  # redirects followed per request, all within the URL's origin (scheme, host, port)


def public_url(url: str) -> str:
    """The URL without user:password and query (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _seconds(name: str, default: float) -> float:
    """A timeout from the environment (seconds above 0), else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise CheckpointError(f"{name}={text!r}: expected a number of seconds above 0 (default {default:g})")
    return value


class ServerError(Exception):
    """A 5xx answer to a ranged read: retried like a dropped connection."""


_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def _origin(url: Any) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower(), url.port


class HttpStore:
    """``info`` and ``cat_file`` for ``http(s)://`` URLs over fsspec's aiohttp session, with limits.

    A request must connect within the connect timeout and be answered (status and headers) within the
    read timeout; its body may pause no longer than the read timeout and must bring ``MIN_RATE`` bytes/s
    over each read-timeout window (or the rest of what was asked). A ranged read takes at most the bytes
    it asked for, as stored (``Accept-Encoding: identity``; any other ``Content-Encoding`` is refused by
    its header, never inflated). Redirects are followed, ``MAX_REDIRECTS`` at most, only within the URL's
    scheme, host and port. Failures are ``FormatError`` naming the URL (no credentials) and what the
    server did; a 5xx or a dropped connection during a read is left to ``RemoteFile``'s retries.
    """

    def __init__(self) -> None:
        import fsspec

        # auto_decompress off: a compressed body is refused by its header, not inflated by aiohttp first
        self._fs = fsspec.filesystem("http", client_kwargs={"auto_decompress": False})

    def info(self, url: str) -> dict[str, Any]:
        return self._run(self._info, url)

    def cat_file(self, url: str, start: int, end: int) -> bytes | bytearray:
        return self._run(self._cat, url, start, end)

    def _run(self, func: Any, *args: Any) -> Any:
        from fsspec.asyn import sync

        connect = _seconds("CKPTSURGEON_CONNECT_TIMEOUT", CONNECT_TIMEOUT)
        read = _seconds("CKPTSURGEON_READ_TIMEOUT", READ_TIMEOUT)
        return sync(self._fs.loop, func, *args, connect, read)

    async def _open(self, method: str, url: str, headers: dict[str, str], what: str,
                    connect: float, read: float) -> ClientResponse:
        """The answer to ``method url``, after same-origin redirects (the caller closes it)."""
        import aiohttp
        import yarl

        session = await self._fs.set_session()
        target = self._fs.encode_url(url)
        auth = aiohttp.BasicAuth.from_url(target)  # sent to every hop: they all share the URL's origin
        target = target.with_user(None)
        headers = {**self._fs.kwargs.get("headers", {}), **headers, "Accept-Encoding": "identity"}
        timeout = aiohttp.ClientTimeout(connect=connect, sock_connect=connect, sock_read=read)
        seen = [target]
        name = public_url(url)

        async def answer() -> ClientResponse:
            return await session.request(method, target, headers=headers, auth=auth, allow_redirects=False, timeout=timeout)

        while True:
            try:  # the server may trickle its headers: the whole answer gets connect + read seconds
                resp = await asyncio.wait_for(answer(), connect + read)
            except asyncio.TimeoutError as exc:
                if type(exc).__name__ == "ConnectionTimeoutError":  # aiohttp >= 3.10; before, a ServerTimeoutError
                    raise FormatError(f"{name}: no connection within {connect:g} s (CKPTSURGEON_CONNECT_TIMEOUT)") from None
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise FormatError(f"{name}: the server did not answer {what} within {read:g} s "
                                      "(CKPTSURGEON_READ_TIMEOUT)") from None
                raise FormatError(f"{name}: the server did not finish answering {what} within {connect + read:g} s "
                                  "(CKPTSURGEON_CONNECT_TIMEOUT + CKPTSURGEON_READ_TIMEOUT)") from None
            if resp.status not in _REDIRECTS:
                return resp
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise FormatError(f"{name}: the server answered {what} with {resp.status} but no Location")
            try:
                nxt = resp.url.join(yarl.URL(location))
            except ValueError:
                raise FormatError(f"{name}: the server redirects to an invalid URL {location[:200]!r}") from None
            if _origin(nxt) != _origin(target):
                raise FormatError(f"{name}: the server redirects to another origin ({public_url(str(nxt))}); ckptsurgeon "
                                  "follows redirects only within the same scheme, host and port: pass the final URL itself")
            if nxt in seen:
                raise FormatError(f"{name}: the server redirects in a loop (back to {public_url(str(nxt))})")
            if len(seen) > MAX_REDIRECTS:
                raise FormatError(f"{name}: more than {MAX_REDIRECTS} redirects (the last to {public_url(str(nxt))})")
            seen.append(nxt)
            target = nxt

    async def _info(self, url: str, connect: float, read: float) -> dict[str, Any]:
        """Size, ETag and range support from a HEAD; a one-byte ranged GET when HEAD says no size."""
        name = public_url(url)
        info: dict[str, Any] = {"name": url, "size": None, "type": "file"}
        resp = await self._open("HEAD", url, {}, "the size request (HEAD)", connect, read)
        try:
            if resp.status not in (405, 501):
                _check_status(resp, name, "the size request (HEAD)", retry=False)
                if resp.content_length is not None:
                    info["size"] = resp.content_length
                if resp.headers.get("Accept-Ranges", "").strip().lower() == "none":
                    info["partial"] = False
                for key in ("ETag", "Content-MD5", "Last-Modified"):
                    if resp.headers.get(key):
                        info[key] = resp.headers[key]
        finally:
            resp.release()
        if info["size"] is not None or info.get("partial") is False:
            return info
        what = "the size request (bytes 0..1)"
        resp = await self._open("GET", url, {"Range": "bytes=0-0"}, what, connect, read)
        try:
            _check_status(resp, name, what, retry=False)
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if resp.status == 206 and m and m.group(3) != "*":
                info["size"] = int(m.group(3))
            elif resp.status == 200:
                info["partial"] = False
            info.update({key: resp.headers[key] for key in ("ETag", "Last-Modified") if resp.headers.get(key)})
        finally:
            resp.release()
        return info

    async def _cat(self, url: str, start: int, end: int, connect: float, read: float) -> bytes | bytearray:
        """Bytes ``[start, end)``: never more than asked, each read-timeout window bringing ``MIN_RATE``."""
        name, n, what = public_url(url), end - start, f"bytes {start}..{end}"
        resp = await self._open("GET", url, {"Range": f"bytes={start}-{end - 1}"}, what, connect, read)
        try:
            _check_status(resp, name, what, retry=True)
            if resp.status == 200 and not (start == 0 and resp.content_length == n):
                raise FormatError(f"{name}: the server ignores byte ranges (answered {what} with the whole file)")
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m and (int(m.group(1)), int(m.group(2)) + 1) != (start, end):
                raise FormatError(f"{name}: asked for {what}, the server answered bytes {m.group(1)}..{int(m.group(2)) + 1}")
            if resp.content_length is not None and resp.content_length > n:
                raise FormatError(f"{name}: asked for {what} ({n:,} bytes), the server announces {resp.content_length:,}; "
                                  "refusing")
            buf, got = bytearray(n), 0
            window, mark = time.monotonic(), 0
            while True:
                try:
                    chunk = await resp.content.readany()
                except asyncio.TimeoutError:
                    raise FormatError(f"{name}: the server sent nothing for {read:g} s after {got:,} of the {n:,} bytes of "
                                      f"{what} (CKPTSURGEON_READ_TIMEOUT)") from None
                if not chunk:
                    break
                if got + len(chunk) > n:
                    raise FormatError(f"{name}: asked for {what} ({n:,} bytes), the server sends more; refusing")
                buf[got:got + len(chunk)] = chunk
                got += len(chunk)
                now = time.monotonic()
                if now - window >= read:
                    if got - mark < min(MIN_RATE * read, n - mark):
                        raise FormatError(f"{name}: the server sends {what} at {(got - mark) / (now - window):,.0f} bytes/s, "
                                          f"under {MIN_RATE:,} bytes/s for {read:g} s (CKPTSURGEON_READ_TIMEOUT)")
                    window, mark = now, got
            return buf if got == n else buf[:got]
        finally:
            resp.release()


def _check_status(resp: ClientResponse, name: str, what: str, retry: bool) -> None:
    """404/410 as ``FileNotFoundError``, a 5xx as ``ServerError`` when ``retry``, any other non-2xx as ``FormatError``;
    a 2xx in any ``Content-Encoding`` but identity is refused."""
    if resp.status in (404, 410):
        raise FileNotFoundError(name)
    if 200 <= resp.status < 300:
        coding = resp.headers.get("Content-Encoding", "").strip().lower()
        if coding not in ("", "identity"):
            raise FormatError(f"{name}: the server answered {what} with Content-Encoding: {coding[:40]}, not the stored "
                              "bytes (identity was asked for); refusing")
        return
    status = f"{resp.status} {(resp.reason or '')[:80]}".strip()
    if retry and resp.status >= 500:
        raise ServerError(f"the server answered {status}")
    raise FormatError(f"{name}: the server answered {what} with {status}")


