"""MkDocs hook: render click's ``\\b`` (no-rewrap) paragraphs of the CLI help as text blocks.

mkdocs-click hands a command's help to Markdown as it is. Our help texts keep examples and tables in
``\\b`` paragraphs, which Markdown would reflow and read as markup (``'encoder/*'`` loses its ``*``,
``rnn:<scope>`` its ``<scope>``). Here those paragraphs become fenced text blocks, and the others have
the characters Markdown would take for markup escaped, so the page says what ``--help`` says.
"""
from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import mkdocs_click._docs as click_docs

_original = click_docs._make_description


def _escape(line: str) -> str:
    return html.escape(line, quote=False).replace("*", "\\*").replace("_", "\\_")


def _description(ctx: Any, remove_ascii_art: bool = False) -> Iterator[str]:
    fenced = False
    for line in _original(ctx, remove_ascii_art=remove_ascii_art):
        if line.strip() == "\b":
            if not fenced:
                yield "```text"
                fenced = True
            continue
        if fenced and not line.strip():
            yield "```"
            fenced = False
        yield line if fenced else _escape(line)
    if fenced:
        yield "```"


def on_config(config: Any) -> Any:
    click_docs._make_description = _description
    return config
