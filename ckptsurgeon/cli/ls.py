"""``ckptsurgeon ls``: every tensor with shape, dtype and size."""
from __future__ import annotations

import click

from .. import api
from .common import allow_global_option, emit_json, human_bytes, scope_options


@click.command("ls")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object: format, tensors, metadata.")
@allow_global_option
def ls_cmd(checkpoint: str, scope: tuple[str, ...], exclude: tuple[str, ...], regex: bool,
           as_json: bool, allow_globals: tuple[str, ...]) -> None:
    """List tensors: scope path, shape, dtype, size; then totals.

    \b
    Examples:
      ckptsurgeon ls model.pt
      ckptsurgeon ls model.pt --scope 'encoder/*' --json
      ckptsurgeon ls lightning.ckpt --exclude 'optimizer_states'
    """
    index = api.open(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    if as_json:
        emit_json({
            "format": index.format,
            "files": list(index.files),
            "tensors": [
                {"path": r.path, "key": r.key, "dtype": r.dtype_name, "shape": list(r.shape),
                 "nbytes": r.nbytes, "optimizer": r.optimizer}
                for r in index.values()
            ],
            "metadata": index.metadata,
            "notes": index.notes,
        })
        return
    rows = [(r.path, "x".join(map(str, r.shape)) or "scalar", r.dtype_name, human_bytes(r.nbytes),
             "optimizer" if r.optimizer else "") for r in index.values()]
    widths = [max([0] + [len(row[i]) for row in rows]) for i in range(4)]
    for row in rows:
        line = f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}  {row[4]}"
        click.echo(line.rstrip())
    params = sum(r.numel for r in index.values())
    n_opt = sum(r.optimizer for r in index.values())
    click.echo(f"{len(index)} tensors, {params:,} parameters, {human_bytes(index.nbytes)} ({index.format})"
               + (f"; {n_opt} optimizer tensors" if n_opt else ""))
    if index.metadata:
        click.echo(f"{len(index.metadata)} metadata entries (see --json)")
    for note in index.notes:
        click.echo(f"note: {note}")
