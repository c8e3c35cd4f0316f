"""``ckptsurgeon tree``: the scope tree with tensor, parameter and byte counts per scope.

Scopes sort naturally (``block_2`` before ``block_10``); runs of numbered sibling scopes holding the same
tensors (names, shapes, dtypes) fold into one row (``layers/0..23/  (24x, same shapes)``) unless ``--expand``.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from ..index import CheckpointIndex
from .common import allow_global_option, count, emit_json, human_bytes, scope_options
from .hints import open_index

__all__ = ["Node", "build_tree", "natural_key", "fold_runs", "tree_cmd"]


@dataclass
class Node:
    tensors: int = 0
    params: int = 0
    nbytes: int = 0
    children: dict[str, Node] = field(default_factory=dict)
    leaf: tuple[tuple[int, ...], str] | None = None  # a tensor's (shape, dtype)
    _sig: Any = None

    def signature(self) -> Any:
        """What the sub-tree holds: names, shapes and dtypes (never values); equal sub-trees fold together."""
        if self._sig is None:
            self._sig = (self.leaf, tuple((k, v.signature()) for k, v in self.children.items()))
        return self._sig


def natural_key(name: str) -> list[Any]:
    """``block_2`` before ``block_10``: digit runs compare as numbers (str and int alternate, so keys compare)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def build_tree(index: CheckpointIndex) -> Node:
    root = Node()
    for ref in index.values():
        node = root
        for seg in [""] + ref.path.split("/"):
            node = node.children.setdefault(seg, Node()) if seg else node
            node.tensors += 1
            node.params += ref.numel
            node.nbytes += ref.nbytes
        node.leaf = (tuple(ref.shape), ref.dtype_name)
    _sort(root)
    return root


def _sort(node: Node) -> None:
    node.children = dict(sorted(node.children.items(), key=lambda item: natural_key(item[0])))
    for child in node.children.values():
        _sort(child)


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def fold_runs(children: dict[str, Node]) -> list[tuple[str, Node, int]]:
    """Sibling rows: (label, node, how many siblings it stands for). Two or more consecutive numbered siblings
    with one stem (``0, 1, 2`` or ``block_0, block_1``) and equal sub-trees fold into one row ``0..23``."""
    rows: list[tuple[str, Node, int]] = []
    items = list(children.items())
    i = 0
    while i < len(items):
        name, node = items[i]
        m = _NUMBERED.match(name)
        j = i + 1
        if m and node.children:
            stem, first = m.group(1), int(m.group(2))
            while j < len(items):
                other = _NUMBERED.match(items[j][0])
                if not (other and other.group(1) == stem and int(other.group(2)) == first + (j - i)
                        and items[j][1].signature() == node.signature()):
                    break
                j += 1
        if j - i >= 2:
            last = items[j - 1][0]
            total = Node(sum(n.tensors for _, n in items[i:j]), sum(n.params for _, n in items[i:j]),
                         sum(n.nbytes for _, n in items[i:j]), node.children)
            rows.append((f"{name}..{last[len(stem):] if stem else last}", total, j - i))
        else:
            rows.append((name, node, 1))
        i = j
    return rows


def _lines(node: Node, depth: int | None, fold: bool, prefix: str = "", level: int = 1) -> Iterator[tuple[str, str, Node, int]]:
    rows = fold_runs(node.children) if fold else [(k, v, 1) for k, v in node.children.items()]
    for i, (name, child, times) in enumerate(rows):
        last = i == len(rows) - 1
        label = name + ("/" if child.children else "")
        yield prefix + ("└── " if last else "├── "), label, child, times
        if child.children and (depth is None or level < depth):
            yield from _lines(child, depth, fold, prefix + ("    " if last else "│   "), level + 1)


def _as_dict(node: Node, depth: int | None, level: int = 0) -> dict:
    out: dict[str, Any] = {"tensors": node.tensors, "parameters": node.params, "nbytes": node.nbytes}
    if node.children and (depth is None or level < depth):
        out["children"] = {k: _as_dict(v, depth, level + 1) for k, v in node.children.items()}
    return out


def use_colour(flag: bool | None) -> bool:
    """``--color``/``--no-color`` when given; else colour on a terminal, never with ``NO_COLOR`` set (no-color.org)."""
    if flag is not None:
        return flag
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


@click.command("tree")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@click.option("--depth", "-d", type=click.IntRange(min=1), default=None, help="Show at most N levels.")
@click.option("--expand", is_flag=True, help="Show every scope: do not fold runs of identical numbered scopes.")
@click.option("--color/--no-color", "colour", default=None,
              help="Colour the tree (default: on a terminal, unless NO_COLOR is set).")
@scope_options
@click.option("--json", "as_json", is_flag=True, help="The tree as nested JSON (never folded).")
@allow_global_option
def tree_cmd(checkpoint: str, depth: int | None, expand: bool, colour: bool | None, scope: tuple[str, ...],
             exclude: tuple[str, ...], regex: bool, as_json: bool, allow_globals: tuple[str, ...]) -> None:
    """Show the scope tree: tensors, parameters and bytes under each scope.

    Scopes sort naturally (block_2 before block_10). Numbered sibling scopes holding the same tensor
    names, shapes and dtypes fold into one row, e.g. "layers/0..23/  (24x, same shapes)" with their
    totals, the scopes below it shown once (those of one of them); --expand shows every scope.

    \b
    Examples:
      ckptsurgeon tree lightning.ckpt
      ckptsurgeon tree model.pt --depth 2
      ckptsurgeon tree llama.safetensors --expand --no-color
    """
    index = open_index(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    root = build_tree(index)
    if as_json:
        emit_json({"format": index.format, "tree": _as_dict(root, depth)})
        return
    on = use_colour(colour)

    def paint(text: str, **style: Any) -> str:
        return click.style(text, **style) if on else text

    click.echo(f"{paint(str(index.files[0]), bold=True)} ({index.format}): {count(root.tensors, 'tensor')}, "
               f"{count(root.params, 'parameter')}, {human_bytes(root.nbytes)}", color=on)
    rows = list(_lines(root, depth, fold=not expand))
    labels = [label + (f"  ({times}x, same shapes)" if times > 1 else "") for _, label, _, times in rows]
    width = max((len(p) + len(label) for (p, _, _, _), label in zip(rows, labels)), default=0)
    out = []
    for (prefix, label, node, times), full in zip(rows, labels):
        stats = f"{count(node.tensors, 'tensor')}, {count(node.params, 'param')}, {human_bytes(node.nbytes)}"
        pad = " " * (width + 2 - len(prefix) - len(full))
        name = paint(label, fg="blue", bold=True) if node.children else label
        note = paint(f"  ({times}x, same shapes)", fg="yellow") if times > 1 else ""
        out.append(f"{paint(prefix, dim=True)}{name}{note}{pad}{paint(stats, dim=True)}")
    if out:
        click.echo("\n".join(out), color=on)
