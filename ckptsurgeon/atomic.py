"""Atomic output files: write beside the target, fsync, rename; nothing left behind on failure."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from .errors import OutputError

__all__ = ["atomic_output", "check_output"]


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
