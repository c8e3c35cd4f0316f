"""``ckptsurgeon scan``: every global and opcode the pickles in checkpoints would need; exit 1 on findings."""
from __future__ import annotations

import click

from ..check.report import FORMATS, render_scan
from ..check.scan import scan_file
from .check import _write_text
from .common import allow_global_option


@click.command("scan")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Report format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the report here (default: stdout).")
@allow_global_option
def scan_cmd(files: tuple[str, ...], fmt: str, output: str | None, allow_globals: tuple[str, ...]) -> None:
    """List every global and opcode class the pickles in each checkpoint would need, without running
    anything; exit 1 if any is outside the allowlist or the file is refused (as 'ls' would refuse it).

    Walks every pickle: PyTorch zip (data.pkl ...) and legacy files, .bin shards, bare pickles,
    numpy object arrays (.npy, .npz). Files without pickles (safetensors, HDF5, TensorFlow) are
    still opened as 'ls' opens them.

    \b
    Examples:
      ckptsurgeon scan model.pt
      ckptsurgeon scan downloads/*.bin --format github
      ckptsurgeon scan model.pt --format junit -o scan.xml
    """
    results = [scan_file(f, allow_globals=allow_globals) for f in files]
    text = render_scan(results, fmt)
    if output:
        _write_text(output, text + "\n", list(files))
    else:
        click.echo(text)
    if not all(r.ok for r in results):
        raise SystemExit(1)
