"""Helpful misses: when a path is not a checkpoint, say what to pass instead (one line, naming the file and the fix).

- a Git LFS pointer: ``git lfs pull`` (or ``lfs: true`` in ``actions/checkout``);
- a TensorFlow ``.meta`` file: the checkpoint prefix beside it;
- a folder that is no checkpoint itself: the checkpoints found below it (bounded depth and count).
"""
from __future__ import annotations

import os
import re
from collections import deque
from typing import Any

from .. import api
from ..errors import CheckpointError, CheckpointNotFoundError, FormatError
from ..formats import detect
from ..index import CheckpointIndex
from ..source import is_url

__all__ = ["open_index", "hint_for", "checkpoints_below", "MAX_DEPTH", "MAX_LOOKED_AT", "MAX_SHOWN"]

MAX_DEPTH = 3  # folder levels searched below the one given
MAX_LOOKED_AT = 2000  # files and folders looked at
MAX_SHOWN = 8  # checkpoints named in the message
_TF_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")


def open_index(path: str, **kwargs: Any) -> CheckpointIndex:
    """``api.open(path)``; a ``FormatError`` gets the hint of ``hint_for`` (same class, so exit codes stay)."""
    try:
        return api.open(path, **kwargs)
    except FormatError as exc:
        better = hint_for(path, str(exc))
        if better is None or isinstance(exc, CheckpointNotFoundError):
            raise
        raise type(exc)(better) from None


def hint_for(path: str, message: str) -> str | None:
    """A better one-line message for ``path`` that was refused with ``message``; None when there is none."""
    from ..check.lfs import is_lfs_pointer, lfs_message  # only when something went wrong: ls stays light

    if is_url(path):
        return None
    if is_lfs_pointer(path):
        return lfs_message(path)
    if path.endswith(".meta") and os.path.isfile(path):
        prefix = path[: -len(".meta")]
        if os.path.exists(prefix + ".index"):
            return (f"{path}: is a TensorFlow MetaGraph (the graph, no weights); pass the checkpoint prefix "
                    f"{prefix!r} (its .index and .data-* files hold the weights)")
        return (f"{path}: is a TensorFlow MetaGraph (the graph, no weights) and no {os.path.basename(prefix)}.index "
                "is beside it; pass the checkpoint prefix (the name before .index/.data-00000-of-00001)")
    if os.path.isdir(path):
        found, more = checkpoints_below(path)
        if found:
            names = ", ".join(f"{f} ({fmt})" for f, fmt in found) + (f" and {more} more" if more else "")
            return f"{message}; checkpoints found below it: {names}; pass one of them"
    return None


def checkpoints_below(folder: str) -> tuple[list[tuple[str, str]], int]:
    """Checkpoints under ``folder`` (not itself), breadth first in name order, at most ``MAX_DEPTH`` levels down:
    up to ``MAX_SHOWN`` (path, format) pairs and how many more were found. A folder that is a checkpoint (DCP,
    Hugging Face shards, TensorFlow) is one entry; TensorFlow files are named by their prefix; links are skipped."""
    found: list[tuple[str, str]] = []
    seen_prefixes: set[str] = set()
    queue: deque[tuple[str, int]] = deque([(folder, 0)])
    looked = 0
    while queue and looked < MAX_LOOKED_AT:
        here, depth = queue.popleft()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            looked += 1
            if looked > MAX_LOOKED_AT or entry.is_symlink() or entry.name.startswith("."):
                continue
            if entry.is_dir():
                fmt = _detect(entry.path)
                if fmt is not None:
                    found.append((entry.path + os.sep, fmt))
                elif depth + 1 < MAX_DEPTH:
                    queue.append((entry.path, depth + 1))
                continue
            fmt = _detect(entry.path)
            if fmt is None:
                continue
            if fmt == "tensorflow":
                prefix = _TF_DATA.sub("", entry.path.removesuffix(".index"))
                if prefix in seen_prefixes:
                    continue
                seen_prefixes.add(prefix)
                found.append((prefix, fmt))
            else:
                found.append((entry.path, fmt))
    return found[:MAX_SHOWN], max(0, len(found) - MAX_SHOWN)


def _detect(path: str) -> str | None:
    try:
        return detect(path)
    except (CheckpointError, OSError, RecursionError):
        return None
