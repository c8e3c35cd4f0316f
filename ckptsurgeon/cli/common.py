"""CLI plumbing: the only place that turns exceptions into messages and exit codes.

Exit codes: 0 ok, 1 bad or unsafe input / failed operation, 2 usage error.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import CheckpointError, one_line

__all__ = ["Group", "allow_global_option", "allow_expanded_option", "scope_options", "human_bytes", "emit_json", "parse_pairs", "fail"]


class CommandError(click.ClickException):
    """A library error shown as one line ``error: ...`` with exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {one_line(self.message)}", err=True)


def fail(message: str) -> None:
    raise CommandError(message)


class Group(click.Group):
    """Runs subcommands with library errors mapped to exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CheckpointError as exc:
            raise CommandError(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            sys.stderr.close()
            raise SystemExit(1) from None
        except Exception as exc:  # a bug of ours: still one line unless debugging
            if os.environ.get("CKPTSURGEON_DEBUG"):
                raise
            raise CommandError(
                f"internal error: {type(exc).__name__}: {one_line(str(exc), 500)} (rerun with CKPTSURGEON_DEBUG=1 for a traceback)"
            ) from None


def allow_global_option(f: Callable) -> Callable:
    return click.option(
        "--allow-global", "allow_globals", multiple=True, metavar="MODULE.CLASS",
        help="Admit a plain data class found in a pickle (recorded by name, never imported or called).",
    )(f)


def allow_expanded_option(f: Callable) -> Callable:
    """``--allow-expanded``: the command runs with views far larger than their stored bytes allowed."""
    import functools

    from ..index import allow_expanded_views

    @functools.wraps(f)
    def run(*args: Any, allow_expanded: bool = False, **kwargs: Any) -> Any:
        with allow_expanded_views(allow_expanded):
            return f(*args, **kwargs)

    return click.option(
        "--allow-expanded", is_flag=True,
        help="Materialize tensors stored as views far larger than their bytes (stride 0, expand()); refused by default.",
    )(run)


def scope_options(f: Callable) -> Callable:
    f = click.option("--regex", is_flag=True, help="Treat --scope/--exclude as full regular expressions.")(f)
    f = click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out what this matches (repeatable).")(f)
    return click.option(
        "--scope", "-s", multiple=True, metavar="GLOB",
        help="Select tensors at or under matching scopes: '*' one segment, '**' any depth (repeatable: union).",
    )(f)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def parse_pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old:
            raise click.BadParameter(f"{value!r} is not OLD=NEW", param_hint=option)
        pairs.append((old, new))
    return pairs
