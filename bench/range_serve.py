"""A Range-capable HTTP server on 127.0.0.1 for the P8 row, in its own process, counting the body bytes it sends.

    python bench/range_serve.py ROOT        # prints the port on its first line, then serves until killed

Serves the files of ROOT at ``http://127.0.0.1:PORT/<name>``: HEAD answers size and ETag; GET with
``Range: bytes=a-b`` answers 206 with exactly those bytes, without it 200 and the whole file. Bodies go out with
``sendfile`` (the kernel copies from the page cache), so the anchor's download of the whole file is as fast as
loopback allows, not slowed by the server. ``GET /__sent`` answers (and resets) what was sent since the last such
call: ``{"sent": body bytes, "requests": ["GET a-b", ...]}`` - the bench reads it after every run.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(sys.argv[1])
LOCK = threading.Lock()
STATE: dict = {"sent": 0, "requests": []}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _path(self) -> str | None:
        rel = self.path.split("?")[0].lstrip("/")
        path = os.path.join(ROOT, rel)
        if ".." in rel.split("/") or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return path

    def _headers(self, code: int, length: int, path: str, extra=()) -> None:
        st = os.stat(path)
        self.send_response(code)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"')
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        path = self._path()
        if path:
            self._headers(200, os.path.getsize(path), path)
            with LOCK:
                STATE["requests"].append("HEAD")

    def do_GET(self):
        if self.path == "/__sent":
            with LOCK:
                body = json.dumps(STATE).encode()
                STATE.update(sent=0, requests=[])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = self._path()
        if not path:
            return
        size = os.path.getsize(path)
        m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        start, end = (int(m.group(1)), int(m.group(2)) + 1 if m.group(2) else size) if m else (0, size)
        end = min(end, size)
        if m:
            self._headers(206, end - start, path, [("Content-Range", f"bytes {start}-{end - 1}/{size}")])
        else:
            self._headers(200, size, path)
        self.wfile.flush()
        sent = 0
        try:
            with open(path, "rb") as fh:
                while start + sent < end:
                    n = os.sendfile(self.connection.fileno(), fh.fileno(), start + sent, min(end - start - sent, 1 << 26))
                    if not n:
                        break
                    sent += n
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with LOCK:
                STATE["sent"] += sent
                STATE["requests"].append(f"GET {start}-{end}")


if __name__ == "__main__":
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()
