"""Git LFS pointers: the small text file a checkout without LFS leaves where a checkpoint should be."""
from __future__ import annotations

import os
import stat

__all__ = ["LFS_MAGIC", "is_lfs_pointer", "lfs_message"]

LFS_MAGIC = b"version https://git-lfs.github.com/spec/v1"
_MAX_POINTER = 1024  # pointer files are about 130 bytes
_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def is_lfs_pointer(path: str) -> bool:
    """Whether ``path`` is a local file holding a Git LFS pointer instead of the object it points to."""
    try:
        st = os.lstat(path)  # one call: a link, a folder or a large file is no pointer
        if not stat.S_ISREG(st.st_mode) or not len(LFS_MAGIC) <= st.st_size <= _MAX_POINTER:
            return False
        fd = os.open(path, _FLAGS)  # not open(): a file object costs more than the read (scan asks of every file)
        try:
            return os.read(fd, len(LFS_MAGIC)) == LFS_MAGIC
        finally:
            os.close(fd)
    except (OSError, ValueError):  # ValueError: a name with a NUL byte
        return False


def lfs_message(path: str) -> str:
    """One line naming the file and the fix."""
    return (f"{path}: is a Git LFS pointer, not the checkpoint (the repository was checked out without LFS): "
            "run 'git lfs pull', or in GitHub Actions give actions/checkout 'lfs: true'")
