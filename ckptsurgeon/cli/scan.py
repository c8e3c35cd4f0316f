"""``ckptsurgeon scan``: what loading checkpoints would run, without running it; a verdict per file, exit 1 per ``--fail-on``."""
from __future__ import annotations

import click

from ..check.report import FORMATS
from ..check.scan import scan_file
from ..check.scan_report import fails, render_scan
from .check import _write_text
from .common import allow_global_option


@click.command("scan")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Report format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the report here (default: stdout).")
@click.option("--fail-on", type=click.Choice(["unsafe", "code"]), default="unsafe", show_default=True,
              help="The verdict that makes scan exit 1: 'unsafe', or 'code' for that too (TorchScript, Keras Lambda ...).")
@allow_global_option
def scan_cmd(files: tuple[str, ...], fmt: str, output: str | None, fail_on: str, allow_globals: tuple[str, ...]) -> None:
    """List every global and opcode class the pickles in each checkpoint would need, without running
    anything; exit 1 if any is outside the allowlist or the file is refused (as 'ls' would refuse it).

    Finds pickles by content, whatever a member is called: PyTorch zip and legacy files, .bin shards,
    bare pickles, numpy object arrays (.npy, .npz), archives inside archives or concatenated to other
    bytes. A folder is scanned whole, every file whether or not an index names it; no link is followed.
    Files without pickles (safetensors, HDF5, TensorFlow) are still opened as 'ls' opens them.

    \b
    Verdict per file (--format json: "level"):
      clean   nothing found
      code    code its loader compiles or runs by design: TorchScript, Keras Lambda layers and
              marshalled bytecode, custom objects in a Keras config
      unsafe  loading it could run arbitrary code, or it could not be read whole
    Exit codes: 0 when no file's verdict reaches --fail-on (default: unsafe), 1 when one does, 2 usage error.

    \b
    Examples:
      ckptsurgeon scan model.pt
      ckptsurgeon scan downloads/ --fail-on code
      ckptsurgeon scan downloads/*.bin --format github
      ckptsurgeon scan model.pt --format junit -o scan.xml
    """
    results = [scan_file(f, allow_globals=allow_globals) for f in files]
    text = render_scan(results, fmt, fail_on)
    if output:
        _write_text(output, text + "\n", list(files))
    else:
        click.echo(text)
    if any(fails(r.level, fail_on) for r in results):
        raise SystemExit(1)
