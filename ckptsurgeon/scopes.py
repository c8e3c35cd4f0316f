"""Scope paths and their glob patterns.

A scope path is one slash-separated string per tensor (``encoder/rnn/weight_ih_l0``). Patterns use
shell globs per segment (``*``, ``?``, ``[..]``) plus ``**`` for any number of segments; a pattern
selects a tensor when it matches the tensor's path *or any scope above it*.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .errors import SelectionError

__all__ = ["join_path", "split_key", "key_path", "compile_glob", "compile_regex", "matches", "scopes_of", "closest_scopes",
           "as_patterns"]


def as_patterns(value: str | Iterable[str] | None, what: str = "patterns") -> tuple[str, ...]:
    """One pattern or several, as a tuple: ``scope="LSTMcell/*"`` is one pattern, not its characters.

    Every public function taking a list of patterns (scope, exclude, map, allow_globals ...) calls this.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        value = [value]
    out = tuple(value)
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise SelectionError(f"{what}: expected strings, got {bad[0]!r}")
    return out


def as_renames(value: str | Sequence[str | tuple[str, str]] | None) -> list[tuple[str, str]]:
    """``rename=`` as (old, new) prefix pairs: ``"OLD=NEW"`` strings (as the CLI takes them) or pairs, one or several."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if isinstance(item, str):
            old, sep, new = item.partition("=")
            if not sep:
                raise SelectionError(f"rename {item!r}: expected OLD=NEW (a scope prefix and its replacement)")
            out.append(("" if old == "/" else old, new))  # '/': the root, every path (as --map '/=DST' names it)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            out.append(("" if item[0] == "/" else item[0], item[1]))
        else:
            raise SelectionError(f"rename {item!r}: expected 'OLD=NEW' or an (old, new) pair of strings")
    return out


def split_key(key: str, sep: str) -> list[str]:
    """Split an original key into path segments; TF-style ``:0`` suffixes are dropped."""
    if key.endswith(":0"):
        key = key[:-2]
    return [s for s in key.split(sep)] if sep else [key]


def key_path(key: str, sep: str) -> str:
    """``join_path(split_key(key, sep))``, with a fast path for the usual key (no empty segment)."""
    if sep and not key.endswith(":0") and sep + sep not in key and not key.startswith(sep) and not key.endswith(sep) and key:
        return key.replace(sep, "/") if sep != "/" else key
    return join_path(split_key(key, sep))


def join_path(segments: Iterable[object]) -> str:
    """Join segments into a scope path; empty segments are kept visible as ``_``."""
    return "/".join([str(seg) or "_" for seg in segments])


def _segment_regex(seg: str) -> str:
    out, i = [], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = seg.find("]", i + 2 if i + 1 < len(seg) and seg[i + 1] in "!^" else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = seg[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a scope glob; the result matches a path or any ancestor scope of it.

    ``/`` (or the empty scope, as ``rnn --json`` prints a group at the file's root) is the root scope:
    everything under it."""
    pattern = pattern.strip("/")
    if not pattern:
        return re.compile(".*\\Z", re.S)
    segs = pattern.split("/")
    body = ""
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            body += ".*" if last else "(?:[^/]+/)*"
        else:
            body += _segment_regex(seg) + ("" if last else "/")
    return re.compile("(?:" + body + ")(?:/.*)?\\Z")


def compile_regex(pattern: str) -> re.Pattern[str]:
    """A full regular expression over scope paths (must match the whole path or a scope above)."""
    try:
        return re.compile("(?:" + pattern + ")(?:/.*)?\\Z")
    except re.error as exc:
        raise SelectionError(f"invalid --regex {pattern!r}: {exc}") from exc


def matches(compiled: re.Pattern[str], path: str) -> bool:
    return compiled.match(path) is not None


def scopes_of(paths: Iterable[str]) -> list[str]:
    """Every scope (each path prefix at a segment boundary) and every path, in first-seen order."""
    seen: dict[str, None] = {}
    for path in paths:
        segs = path.split("/")
        for i in range(1, len(segs) + 1):
            seen.setdefault("/".join(segs[:i]), None)
    return list(seen)


def closest_scopes(pattern: str, paths: Sequence[str], n: int = 5) -> list[str]:
    """Existing scopes that look most like ``pattern`` (for 'selects nothing' errors)."""
    import difflib  # only for error messages

    scopes = scopes_of(paths)
    plain = pattern.replace("*", "").replace("?", "").strip("/")
    close = difflib.get_close_matches(plain, scopes, n=n, cutoff=0.4)
    if not close:
        close = [s for s in scopes if "/" not in s][:n]
    return close
