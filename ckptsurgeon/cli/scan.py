"""``ckptsurgeon scan``: what loading checkpoints would run, without running it; a verdict per file, exit 1 per ``--fail-on``."""
from __future__ import annotations

import click

from ..check.scan import scan_files
from ..check.scan_report import fails, render_scan
from .common import allow_global_option
from .reports import check_report_paths, expand_inputs, report_options, write_reports


@click.command("scan")
@click.argument("files", nargs=-1, required=True, metavar="FILE_OR_FOLDER...", type=click.Path(dir_okay=True))
@click.option("--fail-on", type=click.Choice(["unsafe", "code"]), default="unsafe", show_default=True,
              help="The verdict that makes scan exit 1: 'unsafe', or 'code' for that too (TorchScript, Keras Lambda ...).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Processes scanning files at once (default: one per CPU from 256 files on, else one).")
@click.option("--summary", "summary_only", is_flag=True, help="The text report is only the summary table.")
@report_options
@allow_global_option
def scan_cmd(files: tuple[str, ...], fail_on: str, jobs: int | None, summary_only: bool, reports: list[tuple[str, str | None]],
             allow_globals: tuple[str, ...]) -> None:
    """List every global and opcode class the pickles in each checkpoint would need, without running
    anything; exit 1 if any is outside the allowlist or the file is refused (as 'ls' would refuse it).

    Finds pickles by content, whatever a member is called: PyTorch zip and legacy files, .bin shards,
    bare pickles, numpy object arrays (.npy, .npz), archives inside archives or concatenated to other
    bytes. A folder is scanned whole and recursively, every file whether or not an index names it; no
    link is followed. Glob patterns ('models/**/*.bin', quoted) are expanded. Files without pickles
    (safetensors, HDF5, TensorFlow) are still opened as 'ls' opens them. A Git LFS pointer is a finding
    naming the fix. From 256 files on, files are scanned in parallel (--jobs). With more than one file,
    the text report ends with a summary table of the files that are not clean.

    \b
    Verdict per file (--json: "level"):
      clean   nothing found
      code    code its loader compiles or runs by design: TorchScript, Keras Lambda layers and
              marshalled bytecode, custom objects in a Keras config
      unsafe  loading it could run arbitrary code, or it could not be read whole
    Exit codes: 0 when no file's verdict reaches --fail-on (default: unsafe), 1 when one does, 2 usage error.

    \b
    Examples:
      ckptsurgeon scan model.pt
      ckptsurgeon scan downloads/ --fail-on code --summary
      ckptsurgeon scan 'downloads/**/*.bin' --report github
      ckptsurgeon scan checkpoints/ --report github --report junit=scan.xml
      ckptsurgeon scan model.pt --json
    """
    paths = expand_inputs(files)
    check_report_paths(reports, paths)
    results = scan_files(paths, allow_globals=allow_globals, jobs=jobs)
    write_reports(reports, lambda fmt: render_scan(results, fmt, fail_on, summary_only=summary_only), paths)
    if any(fails(r.level, fail_on) for r in results):
        raise SystemExit(1)
