"""A loopback HTTP server with byte ranges, ETags and a byte counter, for the remote tests.

Serves the files of one local folder at ``http://127.0.0.1:PORT/<relative path>``; ``HEAD`` answers
size and ETag; ``GET`` with ``Range: bytes=a-b`` answers 206 with exactly those bytes. ``sent`` counts
body bytes sent; ``drop_after`` makes every ranged answer stop after that many bytes and close.
"""
from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["RangeServer"]


class RangeServer:
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

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def reset(self) -> None:
        with self._lock:
            self.sent = 0
            self.requests.clear()

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
