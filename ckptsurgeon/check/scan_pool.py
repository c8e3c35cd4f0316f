"""Chunks of work shared between this process and forked workers: ``scan`` of a folder tree on every CPU.

The workers are forks of this process, started before it does its own longer work (the reading of checkpoint
folders): they take chunks from a shared queue (a pipe of chunk numbers, each read by exactly one process) and
write their results to a file of their own; this process joins in when its own work is done, taking chunks
from the same queue. No thread is started, so this process can still fork the children that parse HDF5
(``isolate``). A chunk a worker did not finish (an error, a crash) is run again here, where its error is
raised as a serial run would raise it. Results come back in chunk order.
"""
from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable, Sequence
from typing import IO, Generic, TypeVar

__all__ = ["SharedChunks", "can_fork", "MAX_CHUNKS"]

T = TypeVar("T")
R = TypeVar("R")

_INDEX = struct.Struct("<I")
_RECORD = struct.Struct("<IQ")  # chunk number, length of its pickled results
MAX_CHUNKS = 4096  # every chunk number is written to the queue before any is read: 16 KiB, within any pipe's buffer


def can_fork() -> bool:
    """A fork copies only the calling thread: fork only where no other thread could hold a lock the child needs."""
    if not hasattr(os, "fork"):
        return False
    from ..isolate import FORK_SAFE_THREADS

    me = threading.current_thread()
    return all(t is me or t.name in FORK_SAFE_THREADS for t in threading.enumerate())


class SharedChunks(Generic[T, R]):
    """``run`` over ``chunks`` in ``workers`` forked processes and this one (``results``, once its own work is done)."""

    def __init__(self, chunks: Sequence[T], run: Callable[[T], list[R]], workers: int) -> None:
        if len(chunks) > MAX_CHUNKS:
            raise ValueError(f"at most {MAX_CHUNKS} chunks")
        self.chunks, self.run = chunks, run
        self.children: list[tuple[int, IO[bytes]]] = []
        self.queue, feed = os.pipe()
        # the objects made so far are kept out of the collector until close(), in this process and the workers: a
        # collection would write to each, copying the pages the workers share with this process (system time)
        self._thaw = gc.get_freeze_count() == 0  # a caller that froze objects itself: its collector is left as it is
        if self._thaw:
            gc.freeze()
        try:
            os.write(feed, b"".join(_INDEX.pack(i) for i in range(len(chunks))))
            for _ in range(workers):
                try:
                    out = _result_file()
                    pid = os.fork()
                except OSError:  # no room for a file or a process: the workers started (and this one) do it all
                    break
                if pid == 0:  # pragma: no cover - the worker (its coverage is not collected)
                    os.close(feed)
                    self._work(out)
                self.children.append((pid, out))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(feed)  # the queue ends (EOF) once every chunk number has been taken

    def _take(self) -> int | None:
        data = os.read(self.queue, _INDEX.size)  # the numbers were written before any read: 4 bytes or EOF
        return _INDEX.unpack(data)[0] if len(data) == _INDEX.size else None

    def _work(self, out: IO[bytes]) -> None:  # pragma: no cover - runs in the worker
        code = 0
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            while (i := self._take()) is not None:
                try:
                    blob = pickle.dumps(self.run(self.chunks[i]), pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - the chunk is run again in the parent, which raises it
                    continue
                out.write(_RECORD.pack(i, len(blob)) + blob)
                out.flush()
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)  # no atexit handlers, no flushing of the parent's buffered output

    def results(self) -> list[R]:
        """Every chunk's results in order: this process takes chunks until none is left, then reads the workers'."""
        done: dict[int, list[R]] = {}
        try:
            while (i := self._take()) is not None:
                done[i] = self.run(self.chunks[i])
            while self.children:
                pid, out = self.children[0]
                os.waitpid(pid, 0)
                self.children.pop(0)  # reaped: never killed by close(), its pid may be reused
                done.update(_records(out))
        finally:
            self.close()
        for i, chunk in enumerate(self.chunks):
            if i not in done:  # a worker failed on it: run here, raising what a serial run raises
                done[i] = self.run(chunk)
        return [r for i in range(len(self.chunks)) for r in done[i]]

    def close(self) -> None:
        """Stop the workers still running (an error or an interrupt here), release the queue and give the objects
        frozen at the start back to the collector."""
        if self._thaw:
            self._thaw = False
            gc.unfreeze()
        for pid, out in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            out.close()
        self.children = []
        if self.queue >= 0:
            os.close(self.queue)
            self.queue = -1


def _result_file() -> IO[bytes]:
    """An unnamed file for a worker's results: in memory (``memfd_create``, no import) where the system has it."""
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            return open(os.memfd_create("ckptsurgeon-scan", os.MFD_CLOEXEC), "w+b")  # noqa: SIM115 - closed by close()
    import tempfile  # here: a scan of few files starts no worker

    return tempfile.TemporaryFile()


def _records(out: IO[bytes]) -> dict[int, list]:
    """The results a worker wrote (a record cut short by a crash is dropped: its chunk is run again)."""
    try:
        out.seek(0)
        data = out.read()
    finally:
        out.close()
    found, at = {}, 0
    while at + _RECORD.size <= len(data):
        i, n = _RECORD.unpack_from(data, at)
        at += _RECORD.size
        if at + n > len(data):
            break
        found[i] = pickle.loads(data[at:at + n])  # noqa: S301 - written by our own worker, never from a checkpoint
        at += n
    return found
