"""``ckptsurgeon tree``: the scope tree with tensor, parameter and byte counts per scope."""
from __future__ import annotations

from dataclasses import dataclass, field

import click

from .. import api
from ..index import CheckpointIndex
from .common import allow_global_option, count, emit_json, human_bytes, scope_options


@dataclass
class Node:
    tensors: int = 0
    params: int = 0
    nbytes: int = 0
    children: dict[str, "Node"] = field(default_factory=dict)


def build_tree(index: CheckpointIndex) -> Node:
    root = Node()
    for ref in index.values():
        node = root
        for seg in [""] + ref.path.split("/"):
            node = node.children.setdefault(seg, Node()) if seg else node
            node.tensors += 1
            node.params += ref.numel
            node.nbytes += ref.nbytes
    return root


def _lines(node: Node, depth: int | None, prefix: str = "", level: int = 1):
    items = list(node.children.items())
    for i, (name, child) in enumerate(items):
        last = i == len(items) - 1
        label = name + ("/" if child.children else "")
        yield prefix + ("└── " if last else "├── "), label, child
        if child.children and (depth is None or level < depth):
            yield from _lines(child, depth, prefix + ("    " if last else "│   "), level + 1)


def _as_dict(node: Node, depth: int | None, level: int = 0) -> dict:
    out = {"tensors": node.tensors, "parameters": node.params, "nbytes": node.nbytes}
    if node.children and (depth is None or level < depth):
        out["children"] = {k: _as_dict(v, depth, level + 1) for k, v in node.children.items()}
    return out


@click.command("tree")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@click.option("--depth", "-d", type=click.IntRange(min=1), default=None, help="Show at most N levels.")
@scope_options
@click.option("--json", "as_json", is_flag=True, help="The tree as nested JSON.")
@allow_global_option
def tree_cmd(checkpoint: str, depth: int | None, scope: tuple[str, ...], exclude: tuple[str, ...],
             regex: bool, as_json: bool, allow_globals: tuple[str, ...]) -> None:
    """Show the scope tree: tensors, parameters and bytes under each scope.

    \b
    Examples:
      ckptsurgeon tree lightning.ckpt
      ckptsurgeon tree model.pt --depth 2
    """
    index = api.open(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    root = build_tree(index)
    if as_json:
        emit_json({"format": index.format, "tree": _as_dict(root, depth)})
        return
    click.echo(f"{index.files[0]} ({index.format}): {count(root.tensors, 'tensor')}, {count(root.params, 'parameter')}, "
               f"{human_bytes(root.nbytes)}")
    rows = list(_lines(root, depth))
    width = max((len(p) + len(label) for p, label, _ in rows), default=0)
    for prefix, label, node in rows:
        stats = f"{count(node.tensors, 'tensor')}, {count(node.params, 'param')}, {human_bytes(node.nbytes)}"
        click.echo(f"{prefix}{label}".ljust(width + 2) + stats)
