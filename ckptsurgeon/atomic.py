"""Atomic output files: write beside the target, fsync, rename; nothing left behind on failure.

"Failure" includes Ctrl-C and, while a temporary file exists, SIGTERM and SIGHUP (a job scheduler
stopping the process, a closed terminal): the file is removed, then the signal takes its usual course.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from .errors import OutputError

__all__ = ["atomic_output", "check_output", "output_error", "AtomicFiles", "atomic_files"]

_CLEANUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))
# Errors that say "this output cannot be written" (a read-only, immutable or full place, a quota).
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def output_error(path: str, exc: OSError) -> OutputError:
    """An ``OutputError`` naming ``path`` and what the system said (no errno noise)."""
    return OutputError(f"{path}: cannot write: {exc.strerror or exc}")


def check_output(path: str, inputs: Sequence[str], force: bool) -> None:
    """Refuse to overwrite an input (ever) or an existing file (unless ``force``)."""
    real = os.path.realpath(path)
    for inp in inputs:
        same = os.path.exists(path) and os.path.exists(inp) and os.path.samefile(path, inp)
        if same or real == os.path.realpath(inp):
            raise OutputError(f"{path}: is an input of this operation; choose another output path")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; give a file name")
    if os.path.lexists(path) and not force:
        raise OutputError(f"{path}: already exists; pass --force (API: force=True) to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"{path}: folder {parent} does not exist")


_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_beside(path: str) -> tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, mode 0600 (what ``tempfile.mkstemp`` makes)."""
    parent = os.path.dirname(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue
    raise OutputError(f"{path}: cannot create a temporary file beside it")


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM/SIGHUP while an output is being written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise _Terminated(signum)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception (so cleanup runs), where they would kill the process outright."""
    installed: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _CLEANUP_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_DFL:  # a handler the program set stays its own
                installed[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, old in installed.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; on success it replaces ``path`` in one rename.

    Errors of the output place (read-only, immutable, full) become one-line ``OutputError``s.
    """
    try:
        with _signals_unwind():
            try:
                fd, tmp = _create_beside(path)
            except OSError as exc:
                raise output_error(path, exc) from None
            try:
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
                with os.fdopen(fd, "w+b") as fh:  # readable too: patching writers read back what they wrote
                    yield fh
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.replace(tmp, path)
                except OSError as exc:
                    raise output_error(path, exc) from None
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
                    raise output_error(path, exc) from None
                raise
    except _Terminated as exc:  # the temporary file is gone: now die of the signal as we would have
        os.kill(os.getpid(), exc.signum)
        raise SystemExit(128 + exc.signum) from None


class AtomicFiles:
    """Several output files committed together (shards and their index).

    Every file is written under a temporary name; ``commit`` renames them all, the index last. A new
    folder is written as a hidden temporary folder and renamed into place whole, so readers never see
    a partial set. On any error (or Ctrl-C) every temporary file is removed and nothing is renamed.
    """

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self._new = not os.path.lexists(self.folder)
        parent = os.path.dirname(self.folder)
        if self._new:
            if not os.path.isdir(parent):
                raise OutputError(f"{folder}: folder {parent} does not exist")
            import tempfile  # only multi-file outputs need it (start-up of the common commands stays light)

            self._work = tempfile.mkdtemp(prefix="." + os.path.basename(self.folder) + ".", suffix=".tmp", dir=parent)
        else:
            if not os.path.isdir(self.folder) or os.path.islink(self.folder):
                raise OutputError(f"{folder}: exists and is not a folder; give a folder for sharded output")
            self._work = self.folder
        self._files: list[tuple[str, str]] = []  # (temporary path, final name)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        """A temporary file that becomes ``folder/name`` on commit (``name`` may hold subfolders)."""
        os.makedirs(os.path.dirname(os.path.join(self._work, name)), exist_ok=True)
        fd, tmp = _create_beside(os.path.join(self._work, name))
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        self._files.append((tmp, name))
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def makedir(self, name: str) -> None:
        """A (possibly empty) subfolder ``folder/name``."""
        os.makedirs(os.path.join(self._work, name), exist_ok=True)

    def commit(self) -> list[str]:
        finals = []
        for tmp, name in self._files:
            final = os.path.join(self._work, name)
            os.replace(tmp, final)
            finals.append(name)
        if self._new:
            umask = os.umask(0)
            os.umask(umask)
            for folder, dirs, _ in os.walk(self._work):  # mkdtemp makes 0700: a folder gets the usual permissions
                for d in [folder, *(os.path.join(folder, x) for x in dirs)]:
                    os.chmod(d, 0o777 & ~umask)
            os.rename(self._work, self.folder)
        return [os.path.join(self.folder, n) for n in finals]

    def abort(self) -> None:
        for tmp, _ in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if self._new:
            import shutil

            shutil.rmtree(self._work, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder: str) -> Iterator[AtomicFiles]:
    """``AtomicFiles`` committed on success, aborted on any exception (SIGTERM and SIGHUP included)."""
    try:
        with _signals_unwind():
            try:
                files = AtomicFiles(folder)
            except OSError as exc:
                raise output_error(folder, exc) from None
            try:
                yield files
                files.commit()
            except BaseException as exc:
                files.abort()
                if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
                    raise output_error(folder, exc) from None
                raise
    except _Terminated as exc:
        os.kill(os.getpid(), exc.signum)
        raise SystemExit(128 + exc.signum) from None
