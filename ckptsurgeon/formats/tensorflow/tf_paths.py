"""Find a TensorFlow checkpoint's prefix from what the user gave: prefix, .index, .data shard,
a folder with a ``checkpoint`` state file, a SavedModel folder, or a local folder holding one bundle
(a SavedModel's ``variables/``). Local or remote (``location``)."""
from __future__ import annotations

import os
import posixpath
import re

from ... import location as loc
from ...errors import FormatError, UnsafeCheckpointError
from ...source import is_url

__all__ = ["resolve_prefix", "prefix_of", "looks_like_tf"]

_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")
_STATE = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.M)


_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.S)
_SIMPLE = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63}
MAX_STATE = 1 << 20
STATE_FILE = "checkpoint"  # a folder's state file naming its latest checkpoint
SAVED_MODEL_VARIABLES = "variables"  # a SavedModel's folder of its variables bundle


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
    state = loc.join(folder, STATE_FILE)
    text = loc.read_small(state, MAX_STATE, "checkpoint state file").decode("utf-8", "replace")
    match = _STATE.search(text)
    if not match:
        raise FormatError(f"{state}: no model_checkpoint_path line")
    named = _unescape(match.group(1), state)
    if not named.strip("./") or "\x00" in named:
        raise FormatError(f"{state}: model_checkpoint_path {named!r} names no checkpoint")
    if not os.path.isabs(named) and not is_url(named) and _escapes(named, folder):
        raise UnsafeCheckpointError(f"{state} names {named!r}, outside {folder}; refusing to follow it "
                                    "(pass that checkpoint's prefix itself if it is the one you mean)")
    candidates = [named] if not os.path.isabs(named) and not is_url(named) else []
    if not is_url(folder) and os.path.isabs(named) and _inside(named, folder):
        candidates.append(named)
    candidates.append(loc.basename(named))  # a moved folder: TF state files often hold absolute paths
    for cand in candidates:
        prefix = cand if os.path.isabs(cand) and not is_url(folder) else loc.join(folder, cand)
        if loc.isfile(prefix + ".index"):
            return prefix
    raise FormatError(f"{state} names {named!r}, but no {loc.basename(named)}.index is in {folder}")


def _bundles(folder: str) -> list[str]:
    """Prefixes of the bundles in a local ``folder``: ``<prefix>.index`` beside a ``<prefix>.data-*`` shard (no links)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    shards = {_DATA.sub("", n) for n in names if _DATA.search(n)}
    return [n[: -len(".index")] for n in names if n.endswith(".index") and n[: -len(".index")] in shards
            and os.path.isfile(os.path.join(folder, n)) and not os.path.islink(os.path.join(folder, n))]


def _inside(path: str, folder: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def _escapes(relative: str, folder: str) -> bool:
    """Whether a relative name leads out of ``folder`` (``../other/model.ckpt``, or a link inside it)."""
    if is_url(folder):
        return posixpath.normpath(relative).startswith("..")
    target = os.path.join(folder, relative)
    if relative not in ("", ".", "..") and os.sep not in relative and (os.altsep or os.sep) not in relative:
        # one name, as state files hold: inside unless it is a link (what realpath, a call per folder level, finds)
        return os.path.islink(target) and not _inside(target, folder)
    return not _inside(target, folder)


def resolve_prefix(path: str) -> str | None:
    """The checkpoint prefix for ``path``, or None when ``path`` is not a TF checkpoint."""
    return prefix_of(path, loc.kind(path))


def prefix_of(path: str, kind: str | None) -> str | None:
    """``resolve_prefix(path)``, ``path`` being of ``kind`` (``location.kind``: the caller has just asked)."""
    if kind == "directory" or (kind is None and is_url(path)):
        saved = loc.join(path, SAVED_MODEL_VARIABLES, "variables")
        if loc.isfile(saved + ".index"):
            return saved  # SavedModel
        if loc.isfile(loc.join(path, STATE_FILE)):
            return _from_state(path)
        if kind == "directory" and not is_url(path):
            found = _bundles(path)
            if len(found) > 1:
                raise FormatError(f"{path}: holds {len(found)} TensorFlow checkpoints and no 'checkpoint' file naming "
                                  f"the latest; pass one prefix: {', '.join(os.path.join(path, p) for p in found)}")
            return os.path.join(path, found[0]) if found else None
        if kind == "directory":
            return None
    if path.endswith(".index") and kind == "file":
        return path[: -len(".index")]
    if _DATA.search(path) and kind == "file":
        return _DATA.sub("", path)
    if kind is None and loc.isfile(path + ".index"):
        return path
    return None


def looks_like_tf(path: str) -> bool:
    return resolve_prefix(path) is not None
