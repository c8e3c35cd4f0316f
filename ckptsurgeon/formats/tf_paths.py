"""Find a TensorFlow checkpoint's prefix from what the user gave: prefix, .index, .data shard,
a folder with a ``checkpoint`` state file, a SavedModel folder, or a folder holding one bundle
(a SavedModel's ``variables/``)."""
from __future__ import annotations

import os
import re

from ..errors import FormatError

__all__ = ["resolve_prefix", "looks_like_tf"]

_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")
_STATE = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.M)


def _from_state(folder: str) -> str:
    with open(os.path.join(folder, "checkpoint"), encoding="utf-8", errors="replace") as fh:
        match = _STATE.search(fh.read(1 << 20))
    if not match:
        raise FormatError(f"{folder}/checkpoint: no model_checkpoint_path line")
    named = match.group(1).encode().decode("unicode_escape")
    candidates = [named] if not os.path.isabs(named) else []
    inside = os.path.realpath(named).startswith(os.path.realpath(folder) + os.sep)
    if os.path.isabs(named) and inside:
        candidates.append(named)
    candidates.append(os.path.basename(named))  # a moved folder: TF state files often hold absolute paths
    for cand in candidates:
        prefix = cand if os.path.isabs(cand) else os.path.join(folder, cand)
        if os.path.isfile(prefix + ".index"):
            return prefix
    raise FormatError(f"{folder}/checkpoint names {named!r}, but no {os.path.basename(named)}.index is in {folder}")


def _bundles(folder: str) -> list[str]:
    """Prefixes of the bundles in ``folder``: ``<prefix>.index`` beside a ``<prefix>.data-*`` shard (no links)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    shards = {_DATA.sub("", n) for n in names if _DATA.search(n)}
    return [n[: -len(".index")] for n in names if n.endswith(".index") and n[: -len(".index")] in shards
            and os.path.isfile(os.path.join(folder, n)) and not os.path.islink(os.path.join(folder, n))]


def resolve_prefix(path: str) -> str | None:
    """The checkpoint prefix for ``path``, or None when ``path`` is not a TF checkpoint."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "variables", "variables.index")):
            return os.path.join(path, "variables", "variables")  # SavedModel
        if os.path.isfile(os.path.join(path, "checkpoint")):
            return _from_state(path)
        found = _bundles(path)
        if len(found) > 1:
            raise FormatError(f"{path}: holds {len(found)} TensorFlow checkpoints and no 'checkpoint' file naming "
                              f"the latest; pass one prefix: {', '.join(os.path.join(path, p) for p in found)}")
        return os.path.join(path, found[0]) if found else None
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if _DATA.search(path) and os.path.isfile(path):
        return _DATA.sub("", path)
    if not os.path.exists(path) and os.path.isfile(path + ".index"):
        return path
    return None


def looks_like_tf(path: str) -> bool:
    return resolve_prefix(path) is not None
