"""Atomic output files: write beside the target, fsync, rename; nothing left behind on failure."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from .errors import OutputError

__all__ = ["atomic_output", "check_output", "AtomicFiles", "atomic_files"]


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
        raise OutputError(f"{path}: already exists; pass --force to replace it")
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


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; on success it replaces ``path`` in one rename."""
    fd, tmp = _create_beside(path)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        with os.fdopen(fd, "w+b") as fh:  # readable too: patching writers read back what they wrote
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
        """A temporary file that becomes ``folder/name`` on commit."""
        fd, tmp = _create_beside(os.path.join(self._work, name))
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        self._files.append((tmp, name))
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self) -> list[str]:
        finals = []
        for tmp, name in self._files:
            final = os.path.join(self._work, name)
            os.replace(tmp, final)
            finals.append(name)
        if self._new:
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
    """``AtomicFiles`` committed on success, aborted on any exception."""
    files = AtomicFiles(folder)
    try:
        yield files
        files.commit()
    except BaseException:
        files.abort()
        raise
