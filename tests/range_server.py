"""Loopback HTTP servers for the remote tests: an honest one, and one that lies (``LyingServer``).

``RangeServer`` serves the files of one local folder at ``http://127.0.0.1:PORT/<relative path>``; ``HEAD`` answers
size and ETag; ``GET`` with ``Range: bytes=a-b`` answers 206 with exactly those bytes. ``sent`` counts
body bytes sent; ``drop_after`` makes every ranged answer stop after that many bytes and close.
"""
from __future__ import annotations

import functools
import os
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["RangeServer", "LyingServer", "gzip_bomb"]


class _Loopback:
    """A threaded HTTP server on 127.0.0.1 serving one handler class; a context manager."""

    sent: int
    requests: list
    _lock: threading.Lock

    def _serve(self, handler: type) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def reset(self) -> None:
        with self._lock:
            self.sent = 0
            self.requests.clear()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class RangeServer(_Loopback):
    def __init__(self, root: str) -> None:
        self.root = root
        self.sent = 0
        self.requests: list[str] = []
        self.drop_after: int | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _file(self):
                rel = self.path.split("?")[0].lstrip("/")
                path = os.path.join(server.root, rel)
                if ".." in rel.split("/") or not os.path.isfile(path):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return path

            def _headers(self, code, length, size, path, extra=()):
                st = os.stat(path)
                self.send_response(code)
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"')
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()

            def do_HEAD(self):
                path = self._file()
                if path:
                    size = os.path.getsize(path)
                    self._headers(200, size, size, path)

            def do_GET(self):
                path = self._file()
                if not path:
                    return
                size = os.path.getsize(path)
                m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
                start, end = (int(m.group(1)), int(m.group(2)) + 1 if m.group(2) else size) if m else (0, size)
                end = min(end, size)
                with server._lock:
                    server.requests.append(f"{start}-{end}")
                if m:
                    self._headers(206, end - start, size, path, [("Content-Range", f"bytes {start}-{end - 1}/{size}")])
                else:
                    self._headers(200, size, size, path)
                limit = end - start if server.drop_after is None else min(end - start, server.drop_after)
                with open(path, "rb") as fh:
                    fh.seek(start)
                    left = limit
                    while left:
                        chunk = fh.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        with server._lock:
                            server.sent += len(chunk)
                        left -= len(chunk)
                if server.drop_after is not None:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)

        self._serve(Handler)



class LyingServer(_Loopback):
    """A loopback server that lies, one way per first path segment, for the remote-limits tests.

    HEAD answers ``body``'s size honestly everywhere but ``/nohead``, ``/slowhead`` and ``/getonly``; GET:

    ``/good``      206 with exactly the bytes asked for (and everywhere not named below)
    ``/getonly``   the same, but HEAD is answered 405 (the size comes from a ranged GET)
    ``/silent``    206 headers, then nothing
    ``/trickle``   206 headers, then one byte a second
    ``/nohead``    no answer at all, to HEAD or GET
    ``/slowhead``  the HEAD answer's headers at one byte a second
    ``/oversized`` 206 announcing 3 GiB (Content-Length) and sending zeros while the client reads
    ``/endless``   206 without Content-Length (ends at close), zeros while the client reads
    ``/gzip``      206 with ``Content-Encoding: gzip``: ``gzip_bomb()``, which inflates to 4 GiB
    ``/busy``      503 Service Unavailable
    ``/away``      302 to ``away_to`` (set it to another origin)
    ``/loop``      302 to ``/loop2``, which redirects back
    ``/chain/N``   302 to ``/chain/N+1``, forever
    ``/moved``     301 to ``/hop`` (relative), which 307s to ``/good`` (absolute): a redirect that works

    ``requests`` lists ``(method, path)``; ``sent`` counts body bytes sent. Stalling answers end when
    the client goes away or the server stops.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.away_to = ""
        self.sent = 0
        self.requests: list[tuple[str, str]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _kind(self) -> str:
                with server._lock:
                    server.requests.append((self.command, self.path))
                return self.path.split("/")[1]

            def _send(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                with server._lock:
                    server.sent += len(data)

            def _redirect(self, code: int, location: str) -> None:
                self.send_response(code)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _head(self, code: int, length: int | None, extra=()) -> None:
                self.send_response(code)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", '"lying-1"')
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()

            def _stream_zeros(self, limit: int) -> None:
                zeros = bytes(1 << 16)
                left = limit
                while left > 0 and not server.stop.is_set():
                    self._send(zeros[:left])
                    left -= len(zeros)

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: that is the point
                    self.close_connection = True

            def do_HEAD(self):
                kind = self._kind()
                if kind == "nohead":
                    server.stop.wait(60)
                    self.close_connection = True
                elif kind == "slowhead":
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(server.body):
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if server.stop.wait(1):
                            break
                    self.close_connection = True
                elif kind == "getonly":
                    self.send_response(405)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif not self._redirected(kind):
                    self._head(200, len(server.body))

            def _redirected(self, kind: str) -> bool:
                rest = "/".join(self.path.split("/")[2:])
                if kind == "away":
                    self._redirect(302, server.away_to)
                elif kind == "loop":
                    self._redirect(302, f"/loop2/{rest}")
                elif kind == "loop2":
                    self._redirect(302, f"/loop/{rest}")
                elif kind == "chain":
                    n, _, tail = rest.partition("/")
                    self._redirect(302, f"/chain/{int(n) + 1}/{tail}")
                elif kind == "moved":
                    self._redirect(301, f"/hop/{rest}")
                elif kind == "hop":
                    self._redirect(307, f"http://127.0.0.1:{server.port}/good/{rest}")
                else:
                    return False
                return True

            def do_GET(self):
                kind = self._kind()
                if kind == "nohead":
                    server.stop.wait(60)
                    self.close_connection = True
                    return
                if self._redirected(kind):
                    return
                size = len(server.body)
                m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
                start, end = (int(m.group(1)), min(int(m.group(2)) + 1 if m.group(2) else size, size)) if m else (0, size)
                content_range = [("Content-Range", f"bytes {start}-{end - 1}/{size}")]
                if kind == "silent":
                    self._head(206, end - start, content_range)
                    server.stop.wait(60)
                    self.close_connection = True
                elif kind == "trickle":
                    self._head(206, end - start, content_range)
                    for i in range(start, end):
                        self._send(server.body[i:i + 1])
                        if server.stop.wait(1):
                            break
                elif kind == "oversized":
                    self._head(206, 3 << 30, content_range)
                    self._stream_zeros(3 << 30)
                    self.close_connection = True
                elif kind == "endless":
                    self._head(206, None, [*content_range, ("Connection", "close")])
                    self._stream_zeros(3 << 30)
                    self.close_connection = True
                elif kind == "busy":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind == "gzip":
                    bomb = gzip_bomb()
                    self._head(206, len(bomb), [*content_range, ("Content-Encoding", "gzip")])
                    self._send(bomb)
                else:
                    self._head(206, end - start, content_range)
                    self._send(server.body[start:end])

        self._serve(Handler)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        super().__exit__(*exc)


@functools.lru_cache(maxsize=None)
def gzip_bomb(inflated: int = 4 << 30) -> bytes:
    """A gzip stream of ``inflated`` zero bytes in about ``inflated / 1000`` bytes: one deflate block of
    1 MiB of zeros, made history-free by a full flush, repeated (its trailer's CRC is not for the whole)."""
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    return first + block * (inflated // len(zeros) - 1) + c.flush()
