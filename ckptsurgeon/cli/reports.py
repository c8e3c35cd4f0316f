"""One report convention for ``validate`` and ``scan``: ``--report FORMAT[=PATH]`` (repeatable), ``--json``, ``-o``.

The checkpoint is read once; every report is rendered from the same results. ``--format`` (the old spelling)
is kept hidden for one release and prints a one-line deprecation note on stderr.
"""
from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..atomic import atomic_output, check_output
from ..check.report import FORMATS
from ..source import is_url

__all__ = ["report_options", "write_reports", "expand_inputs", "check_report_paths", "Report", "stdout_formats"]

Report = tuple[str, str | None]  # (format, path; None: stdout)
_SOLO = ("json", "junit")  # formats that must be alone on stdout to stay parseable


def _parse(value: str) -> Report:
    fmt, sep, path = value.partition("=")
    if fmt not in FORMATS:
        raise click.BadParameter(f"{value!r}: the format is one of {', '.join(FORMATS)} (e.g. --report junit=report.xml)",
                                 param_hint="--report")
    if sep and not path:
        raise click.BadParameter(f"{value!r}: give a path after '=' (or leave '=' out for stdout)", param_hint="--report")
    return fmt, (None if not sep or path == "-" else path)


def resolve_reports(reports: Sequence[str], as_json: bool, fmt: str | None, output: str | None) -> list[Report]:
    """The reports asked for, in order; ``text`` on stdout when none is."""
    out = [_parse(r) for r in reports]
    if fmt is not None:
        click.echo(f"note: --format {fmt} is deprecated for reports; use --report {fmt}"
                   + (f"={output}" if output else "") + " (--format will be removed in the next release)", err=True)
        out.append((fmt, None))
    if as_json:
        out.append(("json", None))
    if not out:
        out.append(("text", None))
    if output is not None:
        pathless = [i for i, (_, p) in enumerate(out) if p is None]
        if len(pathless) != 1:
            raise click.UsageError("-o/--output names the path of the one report given without a path; "
                                   "give each report its own: --report junit=report.xml --report github")
        out[pathless[0]] = (out[pathless[0]][0], output)
    on_stdout = [f for f, p in out if p is None]
    if len(on_stdout) > 1 and any(f in _SOLO for f in on_stdout):
        raise click.UsageError(f"{' and '.join(on_stdout)} reports would share stdout; give one a path: "
                               "--report json=report.json")
    paths = [p for _, p in out if p is not None]
    if len(set(paths)) != len(paths):
        raise click.UsageError("two reports name the same path; give each its own")
    return out


def report_options(f: Callable) -> Callable:
    """Adds ``--report``, ``--json``, ``-o`` and the hidden ``--format``; the command receives ``reports``."""

    @functools.wraps(f)
    def run(*args: Any, report_specs: tuple[str, ...] = (), as_json: bool = False, fmt: str | None = None,
            output: str | None = None, **kwargs: Any) -> Any:
        return f(*args, reports=resolve_reports(report_specs, as_json, fmt, output), **kwargs)

    run = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, hidden=True,
                       help="Deprecated: --report FORMAT.")(run)
    run = click.option("-o", "--output", type=click.Path(dir_okay=False),
                       help="The path of the one report given without '=PATH' (default: stdout).")(run)
    run = click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout (same as --report json).")(run)
    return click.option(
        "--report", "report_specs", multiple=True, metavar="FORMAT[=PATH]",
        help=f"A report: {'|'.join(FORMATS)}, to PATH or stdout (repeatable; the checkpoint is read once). "
             "Default: text on stdout.")(run)


def stdout_formats(reports: Sequence[Report]) -> list[str]:
    return [f for f, p in reports if p is None]


def write_reports(reports: Sequence[Report], render: Callable[[str], str], inputs: Sequence[str]) -> None:
    """Render each format once and write it (files atomically; an input is never overwritten)."""
    texts: dict[str, str] = {}
    for fmt, path in reports:
        text = texts.get(fmt)
        if text is None:
            text = texts[fmt] = render(fmt)
        if path is None:
            click.echo(text)
        else:
            check_output(path, list(inputs), True)
            with atomic_output(path) as fh:
                fh.write((text + "\n").encode())


_GLOB = frozenset("*?[")


def expand_inputs(args: Sequence[str]) -> list[str]:
    """Each argument as given when it exists (or is a URL); else a glob pattern (``**`` any depth, for shells and
    CI steps that pass patterns quoted) expanded in name order. A pattern matching nothing is an error."""
    out: list[str] = []
    for arg in args:
        if is_url(arg) or os.path.lexists(arg) or not (_GLOB & set(arg)):
            out.append(arg)
            continue
        hits = sorted(glob.glob(arg, recursive=True))
        if not hits:
            raise click.UsageError(f"{arg!r}: no file matches this pattern; check the path (patterns are expanded "
                                   "relative to the current folder)")
        out += hits
    return list(dict.fromkeys(out))  # a file named twice is checked once


def check_report_paths(reports: Sequence[Report], inputs: Sequence[str]) -> None:
    """Refuse a report path that cannot be written before any checkpoint is read."""
    for _, path in reports:
        if path is not None:
            check_output(path, list(inputs), True)
