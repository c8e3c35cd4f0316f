"""Find a TensorFlow checkpoint's prefix from what the user gave: prefix, .index, .data shard,
a folder with a ``checkpoint`` state file, or a SavedModel folder."""
from __future__ import annotations

import os
import re

from ...errors import FormatError, UnsafeCheckpointError
from ...source import open_source

__all__ = ["resolve_prefix", "looks_like_tf"]

_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")
_STATE = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.M)


_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.S)
_SIMPLE = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63}
MAX_STATE = 1 << 20


def _unescape(text: str, where: str) -> str:
    """A text-format protobuf string (C escapes: \\n, \\", \\NNN octal, \\xNN) as text."""
    def byte(m: re.Match[str]) -> str:
        octal, hexa, char = m.groups()
        if char is not None and char not in _SIMPLE:
            raise FormatError(f"{where}: invalid escape \\{char} in model_checkpoint_path")
        value = int(octal, 8) if octal else int(hexa, 16) if hexa else _SIMPLE[char]
        if value > 255:
            raise FormatError(f"{where}: invalid escape \\{octal} in model_checkpoint_path")
        return chr(value)

    raw = _ESCAPE.sub(byte, text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise FormatError(f"{where}: model_checkpoint_path is not UTF-8 text") from None


def _from_state(folder: str) -> str:
    state = os.path.join(folder, "checkpoint")
    src = open_source(state)  # a regular file, no link (a FIFO named "checkpoint" would block a plain open)
    if src.size > MAX_STATE:
        raise FormatError(f"{state}: {src.size} bytes is too large for a checkpoint state file")
    match = _STATE.search(bytes(src.read(0, src.size)).decode("utf-8", "replace"))
    if not match:
        raise FormatError(f"{folder}/checkpoint: no model_checkpoint_path line")
    named = _unescape(match.group(1), state)
    if not named.strip("./") or "\x00" in named:
        raise FormatError(f"{state}: model_checkpoint_path {named!r} names no checkpoint")
    if not os.path.isabs(named) and not _inside(os.path.join(folder, named), folder):
        raise UnsafeCheckpointError(f"{state} names {named!r}, outside {folder}; refusing to follow it "
                                    "(pass that checkpoint's prefix itself if it is the one you mean)")
    candidates = [named] if not os.path.isabs(named) else []
    if os.path.isabs(named) and _inside(named, folder):
        candidates.append(named)
    candidates.append(os.path.basename(named))  # a moved folder: TF state files often hold absolute paths
    for cand in candidates:
        prefix = cand if os.path.isabs(cand) else os.path.join(folder, cand)
        if os.path.isfile(prefix + ".index"):
            return prefix
    raise FormatError(f"{folder}/checkpoint names {named!r}, but no {os.path.basename(named)}.index is in {folder}")


def _inside(path: str, folder: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def resolve_prefix(path: str) -> str | None:
    """The checkpoint prefix for ``path``, or None when ``path`` is not a TF checkpoint."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "variables", "variables.index")):
            return os.path.join(path, "variables", "variables")  # SavedModel
        if os.path.lexists(os.path.join(path, "checkpoint")):  # _from_state refuses anything but a regular file
            return _from_state(path)
        return None
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if _DATA.search(path) and os.path.isfile(path):
        return _DATA.sub("", path)
    if not os.path.exists(path) and os.path.isfile(path + ".index"):
        return path
    return None


def looks_like_tf(path: str) -> bool:
    return resolve_prefix(path) is not None
