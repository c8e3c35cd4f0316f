"""``http://`` and ``https://`` reads that trust the server with nothing (used by ``remote.RemoteFile``).

``HttpStore`` speaks HTTP/1.1 through the standard library (``http.client``, one keep-alive connection per origin
reused from request to request; no fsspec or aiohttp, so a URL costs no more start-up than a local file): connect
and read timeouts (``CKPTSURGEON_CONNECT_TIMEOUT``, ``CKPTSURGEON_READ_TIMEOUT``), a minimum rate, never more bytes
than asked and no content coding, redirects only within the URL's origin (``MAX_REDIRECTS`` at most). Every failure
is one line naming the URL and what the server did.
"""
from __future__ import annotations

import base64
import http.client
import math
import os
import re
import threading
import time
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from .errors import CheckpointError, FormatError
from .remote_http_conn import Stalled, open_connection

__all__ = ["HttpStore", "ServerError", "public_url", "CONNECT_TIMEOUT", "READ_TIMEOUT", "MIN_RATE", "MAX_REDIRECTS"]

CONNECT_TIMEOUT = 10.0  # seconds to connect (CKPTSURGEON_CONNECT_TIMEOUT)
READ_TIMEOUT = 30.0  # seconds (CKPTSURGEON_READ_TIMEOUT) to answer a request, of silence, and MIN_RATE's window
MIN_RATE = 1024  # bytes/s: a body slower than this over a READ_TIMEOUT window is dropped
MAX_REDIRECTS = 5  # redirects followed per request, all within the URL's origin (scheme, host, port)
INFO_SECONDS = 10.0  # a file's size and ETag are asked once (one HEAD) for this long, not once per probe
CHUNK = 1 << 20  # a body is read into its buffer this much at a time
DRAIN = 64 * 1024  # a body we do not want (a redirect's, an error's) is read to keep the connection up to this size

_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_DEFAULT_PORT = {"http": 80, "https": 443}


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


Origin = tuple[str, str, int]


def _target(url: str) -> tuple[Origin, str, str]:
    """(origin, request target, the URL without credentials) of an http(s) URL; ValueError if it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or not parts.hostname:
        raise ValueError(url)
    port = parts.port or _DEFAULT_PORT[scheme]
    path = quote(parts.path or "/", safe="/%!$&'()*+,;=:@-._~")
    query = quote(parts.query, safe="/%!$&'()*+,;=:@-._~?")
    host = parts.hostname.lower()
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return (scheme, host, port), path + (f"?{query}" if query else ""), urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def _length(resp: http.client.HTTPResponse) -> int | None:
    text = (resp.getheader("Content-Length") or "").strip()
    return int(text) if text.isdigit() else None


class HttpStore:
    """``info`` and ``cat_file`` for ``http(s)://`` URLs, with limits.

    A request must connect within the connect timeout and be answered (status and headers) within the
    read timeout; its body may pause no longer than the read timeout and must bring ``MIN_RATE`` bytes/s
    over each read-timeout window (or the rest of what was asked). A ranged read takes at most the bytes
    it asked for, as stored (``Accept-Encoding: identity``; any other ``Content-Encoding`` is refused by
    its header, never inflated), and the file's size in its ``Content-Range`` must not have changed.
    Redirects are followed, ``MAX_REDIRECTS`` at most, only within the URL's scheme, host and port.
    Failures are ``FormatError`` naming the URL (no credentials) and what the server did; a 5xx or a
    dropped connection during a read is left to ``RemoteFile``'s retries.
    """

    def __init__(self) -> None:
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._infos: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._sizes: dict[str, int] = {}

    # -- the two calls RemoteFile makes ---------------------------------------------------------------

    def info(self, url: str) -> dict[str, Any]:
        """Size, ETag and range support (a HEAD; a one-byte ranged GET when HEAD says no size); asked once a while."""
        connect, read = _timeouts()
        cached = self._infos.get(url)
        if cached is not None and time.monotonic() - cached[0] < INFO_SECONDS:
            if cached[1] is None:
                raise FileNotFoundError(public_url(url))
            return dict(cached[1])
        try:
            info = self._info(url, connect, read)
        except FileNotFoundError:
            self._infos[url] = (time.monotonic(), None)
            raise
        self._infos[url] = (time.monotonic(), info)
        if info.get("size") is not None:
            self._sizes[url] = int(info["size"])
        return dict(info)

    def cat_file(self, url: str, start: int, end: int) -> bytes | bytearray:
        """Bytes ``[start, end)``: never more than asked, each read-timeout window bringing ``MIN_RATE``."""
        connect, read = _timeouts()
        name, n, what = public_url(url), end - start, f"bytes {start}..{end}"
        conn, resp = self._open("GET", url, {"Range": f"bytes={start}-{end - 1}"}, what, connect, read)
        try:
            _check_status(resp, name, what, retry=True)
            length = _length(resp)
            if resp.status == 200 and not (start == 0 and length == n):
                raise FormatError(f"{name}: the server ignores byte ranges (answered {what} with the whole file)")
            m = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
            if m and (int(m.group(1)), int(m.group(2)) + 1) != (start, end):
                raise FormatError(f"{name}: asked for {what}, the server answered bytes {m.group(1)}..{int(m.group(2)) + 1}")
            known = self._sizes.get(url)
            if m and m.group(3) != "*" and known is not None and int(m.group(3)) != known:
                raise FormatError(f"{name}: the file changed while reading (it had {known:,} bytes, the server now says "
                                  f"{int(m.group(3)):,}); open it again")
            if length is not None and length > n:
                raise FormatError(f"{name}: asked for {what} ({n:,} bytes), the server announces {length:,}; refusing")
            data = self._body(conn, resp, n, name, what, read)
        except BaseException:
            conn.close()
            raise
        if len(data) < n:
            conn.close()
            if length is not None:  # the answer announced its length: it was cut, not finished
                raise ConnectionError(f"the connection closed after {len(data):,} of the {n:,} bytes of {what}")
            return data
        self._release(conn, resp)
        return data

    # -- requests -------------------------------------------------------------------------------------

    def _info(self, url: str, connect: float, read: float) -> dict[str, Any]:
        name = public_url(url)
        info: dict[str, Any] = {"name": url, "size": None, "type": "file"}
        what = "the size request (HEAD)"
        conn, resp = self._open("HEAD", url, {}, what, connect, read)
        try:
            if resp.status not in (405, 501):
                _check_status(resp, name, what, retry=False)
                info["size"] = _length(resp)
                if (resp.getheader("Accept-Ranges") or "").strip().lower() == "none":
                    info["partial"] = False
                info.update({key: resp.getheader(key) for key in ("ETag", "Content-MD5", "Last-Modified")
                             if resp.getheader(key)})
        finally:
            self._release(conn, resp)
        if info["size"] is not None or info.get("partial") is False:
            return info
        what = "the size request (bytes 0..1)"
        conn, resp = self._open("GET", url, {"Range": "bytes=0-0"}, what, connect, read)
        try:
            _check_status(resp, name, what, retry=False)
            m = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
            if resp.status == 206 and m and m.group(3) != "*":
                info["size"] = int(m.group(3))
            elif resp.status == 200:
                info["partial"] = False
            info.update({key: resp.getheader(key) for key in ("ETag", "Last-Modified") if resp.getheader(key)})
        finally:
            self._release(conn, resp)
        return info

    def _open(self, method: str, url: str, headers: dict[str, str], what: str, connect: float,
              read: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The answer to ``method url`` after same-origin redirects, with its connection (release both)."""
        name = public_url(url)
        parts = urlsplit(url)
        headers = {**headers, "Accept-Encoding": "identity", "User-Agent": "ckptsurgeon"}
        if parts.username is not None:  # sent to every hop: they all share the URL's origin
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(user_pass).decode("ascii")
        origin, path, current = _target(url)
        seen = [current]
        while True:
            conn, resp = self._request(origin, method, path, headers, name, what, connect, read)
            if resp.status not in _REDIRECTS:
                return conn, resp
            location = resp.getheader("Location")
            status = resp.status
            self._release(conn, resp)
            if not location:
                raise FormatError(f"{name}: the server answered {what} with {status} but no Location")
            try:
                nxt_origin, nxt_path, nxt = _target(urljoin(current, location.strip()))
            except ValueError:
                if urlsplit(urljoin(current, location.strip())).scheme.lower() not in ("", "http", "https"):
                    raise FormatError(f"{name}: the server redirects to another origin ({public_url(urljoin(current, location))}); "
                                      "ckptsurgeon follows redirects only within the same scheme, host and port: "
                                      "pass the final URL itself") from None
                raise FormatError(f"{name}: the server redirects to an invalid URL {location[:200]!r}") from None
            if nxt_origin != origin:
                raise FormatError(f"{name}: the server redirects to another origin ({public_url(nxt)}); ckptsurgeon "
                                  "follows redirects only within the same scheme, host and port: pass the final URL itself")
            if nxt in seen:
                raise FormatError(f"{name}: the server redirects in a loop (back to {public_url(nxt)})")
            if len(seen) > MAX_REDIRECTS:
                raise FormatError(f"{name}: more than {MAX_REDIRECTS} redirects (the last to {public_url(nxt)})")
            seen.append(nxt)
            path, current = nxt_path, nxt

    def _request(self, origin: Origin, method: str, path: str, headers: dict[str, str], name: str, what: str,
                 connect: float, read: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One request on an idle connection of ``origin`` (a new one if none, or if the idle one was closed)."""
        for attempt in range(2):
            conn, reused = self._take(origin, connect)
            conn.clock.answer(time.monotonic(), connect, read)  # type: ignore[attr-defined]
            try:
                if conn.sock is None:
                    try:
                        conn.connect()
                    except TimeoutError:
                        raise FormatError(f"{name}: no connection within {connect:g} s "
                                          "(CKPTSURGEON_CONNECT_TIMEOUT)") from None
                conn.request(method, path, headers=headers)
                return conn, conn.getresponse()
            except Stalled as exc:
                conn.close()
                if exc.kind == "silence":
                    raise FormatError(f"{name}: the server did not answer {what} within {read:g} s "
                                      "(CKPTSURGEON_READ_TIMEOUT)") from None
                raise FormatError(f"{name}: the server did not finish answering {what} within {connect + read:g} s "
                                  "(CKPTSURGEON_CONNECT_TIMEOUT + CKPTSURGEON_READ_TIMEOUT)") from None
            except ConnectionError:  # RemoteDisconnected included
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed the idle connection: ask again on a new one
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _body(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, n: int, name: str, what: str,
              read: float) -> bytes | bytearray:
        """At most ``n`` bytes of ``resp``'s body: fewer if it ends early, refused if it brings more."""
        conn.clock.body(n, MIN_RATE)  # type: ignore[attr-defined]
        buf, got = bytearray(n), 0
        view = memoryview(buf)
        try:
            while got < n:
                k = resp.readinto(view[got:got + min(n - got, CHUNK)])
                if not k:
                    break
                got += k
            if got == n and not resp.isclosed() and resp.read(1):
                raise FormatError(f"{name}: asked for {what} ({n:,} bytes), the server sends more; refusing")
        except Stalled as exc:
            if exc.kind == "rate":
                raise FormatError(f"{name}: the server sends {what} at {exc.rate:,.0f} bytes/s, under {MIN_RATE:,} "
                                  f"bytes/s for {read:g} s (CKPTSURGEON_READ_TIMEOUT)") from None
            raise FormatError(f"{name}: the server sent nothing for {read:g} s after {got:,} of the {n:,} bytes of "
                              f"{what} (CKPTSURGEON_READ_TIMEOUT)") from None
        finally:
            view.release()
        return buf if got == n else buf[:got]

    # -- connections ----------------------------------------------------------------------------------

    def _take(self, origin: Origin, connect: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        conn = open_connection(origin[0], origin[1], origin[2], connect)
        conn.origin = origin  # type: ignore[attr-defined]
        return conn, False

    def _release(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """Keep the connection for the next request if its answer is over (a small unwanted body is read)."""
        try:
            if not resp.isclosed():
                left = resp.length  # what is left of the body (0 for HEAD), None when unknown
                if resp.chunked or left is None or left > DRAIN or resp.will_close:
                    conn.close()
                    return
                conn.clock.body(left, MIN_RATE)  # type: ignore[attr-defined]
                resp.read()
        except Exception:
            conn.close()
            return
        if resp.will_close or conn.sock is None:
            conn.close()
            return
        with self._lock:
            self._idle.setdefault(conn.origin, []).append(conn)  # type: ignore[attr-defined]


def _timeouts() -> tuple[float, float]:
    return _seconds("CKPTSURGEON_CONNECT_TIMEOUT", CONNECT_TIMEOUT), _seconds("CKPTSURGEON_READ_TIMEOUT", READ_TIMEOUT)


def _check_status(resp: http.client.HTTPResponse, name: str, what: str, retry: bool) -> None:
    """404/410 as ``FileNotFoundError``, a 5xx as ``ServerError`` when ``retry``, any other non-2xx as ``FormatError``;
    a 2xx in any ``Content-Encoding`` but identity is refused."""
    if resp.status in (404, 410):
        raise FileNotFoundError(name)
    if 200 <= resp.status < 300:
        coding = (resp.getheader("Content-Encoding") or "").strip().lower()
        if coding not in ("", "identity"):
            raise FormatError(f"{name}: the server answered {what} with Content-Encoding: {coding[:40]}, not the stored "
                              "bytes (identity was asked for); refusing")
        return
    status = f"{resp.status} {(resp.reason or '')[:80]}".strip()
    if retry and resp.status >= 500:
        raise ServerError(f"the server answered {status}")
    raise FormatError(f"{name}: the server answered {what} with {status}")
