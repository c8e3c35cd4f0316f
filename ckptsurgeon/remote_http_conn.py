"""HTTP/1.1 connections (the standard library's ``http.client``) whose every socket read is under a clock.

``open_connection`` returns an ``http.client`` connection that connects within the connect timeout and then
reads through a ``Clock``: while an answer's status and headers arrive (``Clock.answer``) each read may wait
``read`` seconds of silence and the whole answer, connection included, ``connect + read``; while a body arrives
(``Clock.body``) it may pause ``read`` seconds at most and each ``read``-second window must bring ``min_rate``
bytes/s (or the rest of the body). A broken limit raises ``Stalled`` from inside the read, so ``http.client``
never waits past it; the caller turns it into a one-line error. No fsspec, no asyncio: importing this costs
what ``http.client`` does.
"""
from __future__ import annotations

import http.client
import io
import socket
import time
from typing import Any

__all__ = ["Clock", "Stalled", "open_connection"]


class Stalled(Exception):
    """A limit of the ``Clock`` broken: ``kind`` is ``silence``, ``total`` (answer) or ``rate`` (body)."""

    def __init__(self, kind: str, rate: float = 0.0) -> None:
        super().__init__(kind)
        self.kind = kind
        self.rate = rate


class Clock:
    """The time limits of the reads of one request, by phase (see the module docstring)."""

    def __init__(self) -> None:
        self.phase = "answer"
        self.read = 30.0
        self.deadline = 0.0  # answer phase: status and headers complete by then
        self.min_rate = 0
        self.expected = 0  # body phase: bytes still wanted at the start of the window
        self.received = 0
        self.window = self.mark = self.last = 0.0

    def answer(self, start: float, connect: float, read: float) -> None:
        self.phase, self.read, self.deadline = "answer", read, start + connect + read

    def body(self, expected: int, min_rate: int) -> None:
        now = time.monotonic()
        self.phase, self.expected, self.min_rate = "body", expected, min_rate
        self.received, self.mark, self.window, self.last = 0, 0, now, now

    def timeout(self, now: float) -> float:
        """Seconds the next socket read may wait (raises ``Stalled`` when none are left)."""
        if self.phase == "answer":
            left = self.deadline - now
            if left <= 0:
                raise Stalled("total")
            return min(self.read, left)
        self._check_window(now)
        return max(min(self.last + self.read, self.window + self.read) - now, 0.001)

    def expired(self, now: float) -> None:
        """A socket read timed out: raise, or return to read again (a window that met its rate ended)."""
        if self.phase == "answer":
            raise Stalled("total" if now >= self.deadline else "silence")
        if self._check_window(now):
            return
        if now - self.last >= self.read:
            raise Stalled("silence")

    def arrived(self, n: int, now: float) -> None:
        if self.phase == "body":
            self.received += n
            if n:
                self.last = now
            self._check_window(now)

    def _check_window(self, now: float) -> bool:
        """At the end of a window: nothing came (silence), too little came (rate), or a new window starts."""
        if now - self.window < self.read:
            return False
        got = self.received - self.mark
        if got == 0:
            raise Stalled("silence")
        if got < min(self.min_rate * self.read, self.expected - self.mark):
            raise Stalled("rate", got / (now - self.window))
        self.window, self.mark = now, self.received
        return True


class _Raw(io.RawIOBase):
    """The socket's bytes, each ``recv_into`` under the connection's clock."""

    def __init__(self, sock: socket.socket, clock: Clock, owner: _Sock | None = None) -> None:
        self._sock, self._clock, self._owner = sock, clock, owner

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self._owner is not None:
            self._owner.released()
        super().close()

    def readinto(self, buf: Any) -> int:
        while True:
            now = time.monotonic()
            self._sock.settimeout(self._clock.timeout(now))
            try:
                n = self._sock.recv_into(buf)
            except (socket.timeout, TimeoutError):
                self._clock.expired(time.monotonic())
                continue
            self._clock.arrived(n, time.monotonic())
            return n


class _Sock:
    """A connected socket whose ``makefile`` reads through the clock (what ``http.client`` asks of a socket)."""

    def __init__(self, sock: socket.socket, clock: Clock) -> None:
        self._sock, self._clock = sock, clock
        self._readers, self._closing = 0, False

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_Raw(self._sock, self._clock, self))

    def sendall(self, data: Any) -> None:
        self._sock.settimeout(self._clock.read)
        self._sock.sendall(data)

    def close(self) -> None:
        """Closed once no reader is left, as ``socket.socket`` does with its ``makefile`` readers: ``http.client``
        closes the connection as soon as an answer says ``Connection: close``, while its response still reads the
        body from the socket."""
        self._closing = True
        if self._readers <= 0:
            self._sock.close()

    def released(self) -> None:
        self._readers -= 1
        if self._closing and self._readers <= 0:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Timed:
    """Mixin: after connecting (TLS included, within the connect timeout), reads go through ``self.clock``."""

    clock: Clock
    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock = _Sock(self.sock, self.clock)


class _HTTP(_Timed, http.client.HTTPConnection):
    pass


class _HTTPS(_Timed, http.client.HTTPSConnection):
    pass


_CONTEXT: Any = None


def open_connection(scheme: str, host: str, port: int | None, connect: float) -> http.client.HTTPConnection:
    """A not yet connected ``http.client`` connection with a ``clock``; it connects on its first request."""
    global _CONTEXT
    if scheme == "https":
        if _CONTEXT is None:
            import ssl

            _CONTEXT = ssl.create_default_context()  # certificates verified, as any https client does
        conn: http.client.HTTPConnection = _HTTPS(host, port, timeout=connect, context=_CONTEXT)
    else:
        conn = _HTTP(host, port, timeout=connect)
    conn.clock = Clock()  # type: ignore[attr-defined]
    return conn
