"""Run a parser of hostile bytes in a child process, with a wall-time and a memory limit.

For C libraries that were not written for hostile input (libhdf5): a crash, a hang or a runaway
allocation in the child becomes a one-line ``FormatError`` in the parent, which never calls the
library on the file itself. The child's input is plain data (a source name or URL, byte offsets)
so it opens the bytes itself; its answer is a JSON header and an optional raw payload.

The child is a ``fork`` of this process when that is safe and cheap (POSIX, no other Python thread
that could hold a lock the child needs), else a fresh interpreter (``python -m ckptsurgeon.isolate``),
which opens the source by its name again (a ``memory://`` source exists only in this process: it
needs the fork).
Only functions named in ``ENTRY_POINTS`` can be run.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

from .errors import CheckpointError, FormatError, UnsafeCheckpointError, one_line

__all__ = ["run_isolated", "ENTRY_POINTS", "Limits"]

# name -> "module:function"; each function takes a JSON-able dict and returns (dict, bytes).
ENTRY_POINTS = {
    "hdf5.describe": "ckptsurgeon.formats.hdf5.h5probe:describe",
    "hdf5.read": "ckptsurgeon.formats.hdf5.h5probe:read_dataset",
    "hdf5.describe_many": "ckptsurgeon.formats.hdf5.h5probe:describe_many",
}
_HEADER = struct.Struct("<Q")
_ERRORS = {"FormatError": FormatError, "UnsafeCheckpointError": UnsafeCheckpointError}


class Limits:
    """Wall time in seconds and extra address space in bytes granted to one child."""

    def __init__(self, seconds: float, memory: int) -> None:
        self.seconds, self.memory = seconds, memory


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _apply_limits(limits: Limits) -> None:
    """Cap the child's address space at what it uses now plus ``limits.memory``; no core dumps."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    used = _vm_size()
    if used is not None:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = used + limits.memory
        for cap in (soft, hard):
            if cap != resource.RLIM_INFINITY:
                want = min(want, cap)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    cpu = int(limits.seconds) + 2
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or cpu < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))


def _call(name: str, args: dict[str, Any]) -> bytes:
    """Run the entry point; any failure becomes an error header (never a traceback)."""
    try:
        module, _, func = ENTRY_POINTS[name].partition(":")
        header, payload = getattr(importlib.import_module(module), func)(args)
    except CheckpointError as exc:
        header, payload = {"error": str(exc), "class": type(exc).__name__}, b""
    except MemoryError:
        header, payload = {"error": f"needs more than the {args.get('memory_mib', '?')} MiB it may use", "class": "FormatError"}, b""
    except RecursionError:
        header, payload = {"error": "nests too deeply", "class": "FormatError"}, b""
    except BaseException as exc:  # noqa: BLE001 - the library's own errors on a damaged file
        header, payload = {"error": f"{type(exc).__name__}: {one_line(str(exc), 300)}", "class": "FormatError"}, b""
    blob = json.dumps(header).encode()
    return _HEADER.pack(len(blob)) + blob + payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: 1 << 20])
        view = view[n:]


def _child_after_fork(name: str, args: dict[str, Any], limits: Limits, out: int) -> None:
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # libhdf5 may print error stacks: never onto the user's terminal
            os.dup2(devnull, fd)
        import faulthandler

        faulthandler.disable()  # a crash here is reported by the parent, in one line
        _apply_limits(limits)
        _write_all(out, _call(name, args))
    except BaseException:  # noqa: BLE001
        code = 3
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffered output


# Threads whose library resets its own state in a forked child (os.register_at_fork), so a fork is safe.
FORK_SAFE_THREADS = ("fsspecIO",)  # fsspec's event loop (remote sources): fsspec.asyn.reset_after_fork


def _fork_ok() -> bool:
    """A fork copies one thread; another thread holding a lock at that moment would leave it held forever."""
    if os.environ.get("CKPTSURGEON_ISOLATE") == "spawn" or not hasattr(os, "fork"):
        return False
    me = threading.current_thread()
    return all(t is me or t.name in FORK_SAFE_THREADS for t in threading.enumerate())


def _collect(fd: int, deadline: float, cap: int) -> tuple[bytes | None, bool]:
    """Read until EOF or the deadline; returns (data, timed_out). Data over ``cap`` bytes is an error."""
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, True
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks), False
        total += len(chunk)
        if total > cap:
            return None, False
        chunks.append(chunk)


def _signal_name(num: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(num).name
    return f"signal {num}"


def run_isolated(name: str, args: dict[str, Any], limits: Limits, *, where: str, what: str,
                 reply_cap: int | None = None, preload: tuple[str, ...] = (),
                 needs_fork: bool = False) -> tuple[dict[str, Any], bytes]:
    """Run ``ENTRY_POINTS[name](args)`` in a child; its errors, crash or timeout raise ``FormatError``.

    ``what`` names the work in messages ("libhdf5 reading the metadata"). ``preload`` modules are
    imported here first when the child is a fork, so that every child starts with them loaded
    (importing a library runs none of it on the file). ``needs_fork``: the input exists only in this
    process (``memory://``), so the child must be a fork even when other threads run.
    """
    args = dict(args, memory_mib=limits.memory >> 20)
    cap = reply_cap if reply_cap is not None else limits.memory
    deadline = time.monotonic() + limits.seconds
    data: bytes | None = None
    timed_out = False
    if _fork_ok() or (needs_fork and hasattr(os, "fork")):
        for module in preload:
            importlib.import_module(module)
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "fork with threads"; checked above
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            _child_after_fork(name, args, limits, w)
        os.close(w)
        finished = False
        try:
            data, timed_out = _collect(r, deadline, cap)
            finished = data is not None
        finally:
            os.close(r)
            if not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    else:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-m", "ckptsurgeon.isolate"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            request = json.dumps({"name": name, "args": args, "seconds": limits.seconds, "memory": limits.memory})
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(request.encode())
                proc.stdin.close()
            data, timed_out = _collect(proc.stdout.fileno(), deadline, cap)
        finally:
            if data is None and proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        signum = -proc.returncode if proc.returncode < 0 else 0
    if timed_out:
        raise FormatError(f"{where}: {what} did not finish within {limits.seconds:g} s (a damaged file can make it "
                          "loop forever); refusing. If the file is only very large, raise CKPTSURGEON_HDF5_TIMEOUT")
    if data is None:
        raise FormatError(f"{where}: {what} answered with more than {cap:,} bytes; refusing")
    if signum:
        kind = "ran out of its memory or time limit" if signum in (signal.SIGKILL, getattr(signal, "SIGXCPU", -1)) \
            else f"crashed ({_signal_name(signum)})"
        raise FormatError(f"{where}: {what} {kind}; the file is damaged or hostile")
    if len(data) < _HEADER.size:
        raise FormatError(f"{where}: {what} stopped without an answer; the file is damaged or hostile")
    (n,) = _HEADER.unpack_from(data)
    try:
        header = json.loads(data[_HEADER.size:_HEADER.size + n])
    except ValueError:
        raise FormatError(f"{where}: {what} gave a malformed answer") from None
    if "error" in header:
        raise _ERRORS.get(header.get("class"), FormatError)(header["error"])
    return header, data[_HEADER.size + n:]


def _main() -> None:  # pragma: no cover - runs in the spawned child
    request = json.loads(sys.stdin.buffer.read())
    _apply_limits(Limits(request["seconds"], request["memory"]))
    sys.stdout.buffer.write(_call(request["name"], request["args"]))
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    _main()
