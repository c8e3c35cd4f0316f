"""Remap rules: an ordered list, each mapping source paths (glob with ``{name}`` captures, or a
regex) to a target key template, with optional transforms, ``drop`` and ``required``.

Like ``--scope``, a pattern matches a path or any scope above it; the part below the matched scope
is appended to the target, so ``LSTMcell/*`` -> ``encoder/lstm/*`` maps whole subtrees.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, SelectionError
from ..scopes import _segment_regex, as_patterns
from ..source import read_small_file
from .transforms import Transform, parse_transform

MAX_RULES = 16 << 20  # bytes of a rules file

__all__ = ["Rule", "load_rules", "parse_map", "Match"]


@dataclass
class Match:
    target: str
    captures: dict[str, str]


@dataclass
class Rule:
    """One remap rule: a source pattern (glob or regex), its target (``{1}`` captures), transforms, or ``drop``."""

    source: str
    target: str | None = None
    regex: bool = False
    transforms: list[Transform] = field(default_factory=list)
    drop: bool = False
    required: bool = False
    index: int = 0

    def __post_init__(self) -> None:
        if not self.drop and self.target is None:
            raise SelectionError(f"rule {self.index + 1} ({self.source!r}) needs a target or drop = true")
        self._rx = _compile_regex(self.source) if self.regex else _compile_glob(self.source)

    def match(self, path: str) -> Match | None:
        m = self._rx.match(path)
        if m is None:
            return None
        groups = {k: v for k, v in m.groupdict().items() if not k.startswith("_") and v is not None}
        numbered = list(m.groups()[:-1])  # the user's regex groups; the last group is _rest
        anon = [m.group(f"_a{i}") or "" for i in range(1, self._rx.groups + 1) if f"_a{i}" in self._rx.groupindex]
        rest = m.group("_rest") or ""
        if self.target is None:
            return Match("", groups)
        return Match(render(self.target, groups, anon, numbered) + rest, groups)

    def describe(self) -> str:
        src = f"/{self.source}/" if self.regex else self.source
        return f"{src} -> drop" if self.drop else f"{src} -> {self.target}"


def _compile_glob(pattern: str) -> re.Pattern[str]:
    body, anon = "", 0
    segs = pattern.strip("/").split("/")
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            anon += 1
            body += f"(?P<_a{anon}>.*)" if last else f"(?P<_a{anon}>(?:[^/]+/)*)"
            continue
        part, pos = "", 0
        for m in re.finditer(r"\{(\w+)\}|\*", seg):
            part += _segment_regex(seg[pos:m.start()])
            if m.group(0) == "*":
                anon += 1
                part += f"(?P<_a{anon}>[^/]*)"
            else:
                part += f"(?P<{m.group(1)}>[^/]+)"
            pos = m.end()
        body += part + _segment_regex(seg[pos:]) + ("" if last else "/")
    return re.compile(f"(?:{body})(?P<_rest>/.*)?\\Z")


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(f"(?:{pattern})(?P<_rest>/.*)?\\Z")
    except re.error as exc:
        raise SelectionError(f"invalid rule regex {pattern!r}: {exc}") from None


def render(template: str, named: dict[str, str], anon: list[str], numbered: list[str | None]) -> str:
    """Fill ``{name}`` / ``{1}`` placeholders, then each ``*`` / ``**`` with the anonymous captures in order."""
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key.isdigit():
            i = int(key) - 1
            if i >= len(numbered) or numbered[i] is None:
                raise SelectionError(f"target {template!r} uses {{{key}}}, which the source pattern does not capture")
            return numbered[i]
        if key not in named:
            raise SelectionError(f"target {template!r} uses {{{key}}}, which the source pattern does not capture")
        return named[key]

    out = re.sub(r"\{(\w+)\}", sub, template)
    parts = re.split(r"(\*\*|\*)", out)
    filled, i = [], 0
    for part in parts:
        if part in ("*", "**"):
            filled.append(anon[i].rstrip("/") if i < len(anon) else "")
            i += 1
        else:
            filled.append(part)
    return re.sub("/+", "/", "".join(filled)).strip("/")


def parse_map(values: str | Sequence[str]) -> list[Rule]:
    """``--map 'SRC=DST'`` shorthands, in order (one string or several)."""
    rules = []
    for i, value in enumerate(as_patterns(values, "map")):
        src, sep, dst = value.partition("=")
        if not sep or not src:
            raise SelectionError(f"--map {value!r} is not SRC=DST")
        rules.append(Rule(source=src, target=dst, index=i))
    return rules


def _toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(read_small_file(str(path), MAX_RULES, "a rules file").decode("utf-8"))
    except CheckpointError as exc:
        raise SelectionError(f"cannot read rules: {exc}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise SelectionError(f"{path}: cannot read rules: {exc}") from None


def load_rules(path: str | Path) -> list[Rule]:
    """Rules from a TOML file: ``[[rule]]`` tables with source | regex, target, transforms, drop, required."""
    path = Path(path)
    data = _toml(path)
    tables = data.get("rule") or data.get("rules")
    if not isinstance(tables, list) or not tables:
        raise SelectionError(f"{path}: no [[rule]] tables")
    rules = []
    for i, t in enumerate(tables):
        where = f"{path}: rule {i + 1}"
        unknown = set(t) - {"source", "regex", "target", "transforms", "drop", "required"}
        if unknown:
            raise SelectionError(f"{where}: unknown keys {sorted(unknown)}")
        if ("source" in t) == ("regex" in t):
            raise SelectionError(f"{where}: give exactly one of source (glob) or regex")
        rules.append(Rule(source=t.get("source") or t["regex"], target=t.get("target"), regex="regex" in t,
                          transforms=[parse_transform(s, where) for s in t.get("transforms", [])],
                          drop=bool(t.get("drop", False)), required=bool(t.get("required", False)), index=i))
    return rules
