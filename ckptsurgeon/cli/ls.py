"""``ckptsurgeon ls``: every tensor with shape, dtype and size."""
from __future__ import annotations

import click

from .common import allow_global_option, count, emit_json, human_bytes, scope_options
from .hints import open_index


@click.command("ls")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object: format, tensors, metadata.")
@allow_global_option
def ls_cmd(checkpoint: str, scope: tuple[str, ...], exclude: tuple[str, ...], regex: bool,
           as_json: bool, allow_globals: tuple[str, ...]) -> None:
    """List tensors: scope path, shape, dtype, size; then totals.

    A tensor stored once under several paths (tied weights) is listed once, its other paths
    after it as "(also: ...)" ("aliases" in --json); every path can still be selected and extracted.

    \b
    Examples:
      ckptsurgeon ls model.pt
      ckptsurgeon ls model.pt --scope 'encoder/*' --json
      ckptsurgeon ls lightning.ckpt --exclude 'optimizer_states'
    """
    index = open_index(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    aliases = index.aliases()
    hidden = {p for paths in aliases.values() for p in paths}
    refs = [r for r in index.values() if r.path not in hidden]  # a shared tensor is listed once
    if as_json:
        emit_json({
            "format": index.format,
            "files": list(index.files),
            "tensors": (  # a generator: written as it is consumed, one tensor's dict at a time
                {"path": r.path, "key": r.key, "dtype": r.dtype_name, "shape": list(r.shape),
                 "nbytes": r.nbytes, "optimizer": r.optimizer, "aliases": aliases.get(r.path, [])}
                for r in refs
            ),
            "metadata": index.metadata,
            "notes": index.notes,
        })
        return
    shapes: dict[tuple[int, ...], str] = {}  # checkpoints repeat a few shapes and sizes many times
    sizes: dict[int, str] = {}
    for r in refs:
        if r.shape not in shapes:
            shapes[r.shape] = "x".join(map(str, r.shape)) or "scalar"
    rows = [(r.path, shapes[r.shape], r.dtype_name, sizes.get(n) or sizes.setdefault(n, human_bytes(n)),
             "optimizer" if r.optimizer else "") for r in refs for n in (r.nbytes,)]
    widths = [max([0] + [len(row[i]) for row in rows]) for i in range(4)]
    w0, w1, w2, w3 = widths
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d:>{w3}}  {e}".rstrip() for a, b, c, d, e in rows]
    if aliases:
        lines = [line + ("  " + _also(aliases[r.path]) if r.path in aliases else "") for line, r in zip(lines, refs)]
    if lines:
        click.echo("\n".join(lines))  # one write: echo per line costs more than the listing itself
    params = sum(r.numel for r in refs)
    n_opt = sum(r.optimizer for r in refs)
    click.echo(f"{count(len(refs), 'tensor')}, {count(params, 'parameter')}, {human_bytes(sum(r.nbytes for r in refs))} "
               f"({index.format})" + (f"; {count(n_opt, 'optimizer tensor')}" if n_opt else "")
               + (f"; {len(hidden)} alias path{'s' if len(hidden) > 1 else ''} of listed tensors" if hidden else ""))
    if index.metadata:
        click.echo(f"{count(len(index.metadata), 'metadata entry', 'metadata entries')} (see --json)")
    for note in index.notes:
        click.echo(f"note: {note}")


def _also(paths: list[str], show: int = 3) -> str:
    """``(also: a, b, c +N more)``: the other paths of a shared tensor."""
    if not paths:
        return ""
    more = f" +{len(paths) - show} more" if len(paths) > show else ""
    return f"(also: {', '.join(paths[:show])}{more})"
