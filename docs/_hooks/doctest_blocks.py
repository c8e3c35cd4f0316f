"""Griffe extension: show the ``>>>`` examples of docstrings as Python console blocks.

Our docstrings carry doctest-style examples outside any "Examples:" section; Markdown would read
``>>>`` as three nested quotes. Each run of ``>>>`` / ``...`` lines (and the output lines after it)
is fenced as ``pycon`` instead.
"""
from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        prompt = line.lstrip().startswith((">>>", "..."))
        if prompt and not inside:
            if "```" in "".join(out[-1:]):  # already fenced by its author
                out.append(line)
                continue
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring and ">>>" in obj.docstring.value and "```" not in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
