"""CLI plumbing: the only place that turns exceptions into messages and exit codes.

Exit codes: 0 ok, 1 bad or unsafe input / failed operation, 2 usage error.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..errors import CheckpointError, one_line

__all__ = ["Group", "LazyChoice", "byte_progress", "allow_global_option", "allow_expanded_option", "scope_options",
           "human_bytes", "emit_json", "json_text", "parse_pairs", "fail", "where"]


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
        except BrokenPipeError:  # the reader stopped reading (`ls big.pt | head`): not a failure of the command
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the exit's own flush must not raise again
            raise SystemExit(0) from None
        except Exception as exc:  # a bug of ours: still one line unless debugging
            if os.environ.get("CKPTSURGEON_DEBUG"):
                raise
            raise CommandError(
                f"internal error: {type(exc).__name__}: {one_line(str(exc), 500)} (rerun with CKPTSURGEON_DEBUG=1 for a traceback)"
            ) from None


class LazyChoice(click.Choice):
    """A ``click.Choice`` whose values come from ``load()`` when first needed (help text, parsing), so
    a table living in a heavy module is imported only when the option is used."""

    def __init__(self, load: Callable[[], Any], case_sensitive: bool = True) -> None:
        self._load = load
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[Any, ...]:  # type: ignore[override]
        return tuple(self._load())


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


def dequantize_option(f: Callable) -> Callable:
    """``--dequantize``: quantized tensors (GGUF q4_0, q8_0, k-quants ...) are read as float32 (needs ``gguf``)."""
    import functools

    @functools.wraps(f)
    def run(*args: Any, dequantize: bool = False, **kwargs: Any) -> Any:
        if not dequantize:
            return f(*args, **kwargs)
        from ..formats.gguf.reader import dequantizing

        with dequantizing():
            return f(*args, **kwargs)

    return click.option(
        "--dequantize", is_flag=True,
        help="Read quantized GGUF tensors as float32, decoded by the gguf package (pip install 'ckptsurgeon[gguf]'); "
             "without it they are refused by name.",
    )(run)


def scope_options(f: Callable) -> Callable:
    f = click.option("--regex", is_flag=True, help="Treat --scope/--exclude as full regular expressions.")(f)
    f = click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out what this matches (repeatable).")(f)
    return click.option(
        "--scope", "-s", multiple=True, metavar="GLOB",
        help="Select tensors at or under matching scopes: '*' one segment, '**' any depth (repeatable: union).",
    )(f)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 tensor``, ``2 tensors``, ``1,000 parameters``."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def where(result: Any) -> str:
    """Where an extract wrote: a file, shards in a folder, or a TensorFlow checkpoint (its prefix and files)."""
    if result.format == "tensorflow":
        names = ", ".join(os.path.basename(f) for f in result.files)
        return f"TensorFlow checkpoint {result.path} ({names})"
    more = f" and {len(result.files) - 1} more files" if len(result.files) > 1 else ""
    return f"{result.path} ({result.format}){more}"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_ENCODE = json.JSONEncoder(default=str).encode  # no indent: the C encoder (indent= takes the pure-Python path)


def _member(key: Any, value: str) -> str:
    return f"{_ENCODE(key if isinstance(key, str) else str(key))}: {value}"


def _write_lines(obj: Any, depth: int, write: Callable[[str], Any], pad: str = "") -> None:
    """Write ``obj`` laid out one member per line for ``depth`` levels, each deeper value on one line.
    A generator counts as a list and is consumed as it is written: ``ls --json`` of 100,000 tensors holds
    one tensor's dict at a time, not a list of them and a string of the whole text."""
    inner = pad + "  "
    if depth and isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj):
        write("{\n")
        for i, (k, v) in enumerate(obj.items()):
            write(f",\n{inner}" if i else inner)
            write(_ENCODE(k) + ": ")
            _write_lines(v, depth - 1, write, inner)
        write("\n" + pad + "}")
        return
    if depth and isinstance(obj, Iterator):
        first = next(obj, _END)
        if first is _END:
            write("[]")
            return
        obj = itertools.chain((first,), obj)
    if depth and isinstance(obj, (list, tuple, Iterator)) and (obj or isinstance(obj, Iterator)):
        write("[\n")
        for i, v in enumerate(obj):
            write(f",\n{inner}" if i else inner)
            _write_lines(v, depth - 1, write, inner)
        write("\n" + pad + "]")
        return
    write(_ENCODE(obj))


_END = object()


def json_text(obj: Any) -> str:
    """JSON as ``--json`` prints it: the top two levels one member per line (one tensor, group or
    finding per line), deeper values compact. Encoded by the C encoder: 100,000 tensors in a blink."""
    parts: list[str] = []
    _write_lines(obj, 2, parts.append)
    return "".join(parts)


def emit_json(obj: Any) -> None:
    """Print ``json_text(obj)`` as it is made (values that are generators are written as they are consumed)."""
    out, parts = sys.stdout, []  # click.get_text_stream is deprecated (click 8.3; removed in 9.0)

    def write(text: str) -> None:
        parts.append(text)
        if len(parts) >= 8192:  # a few hundred KB per write: not one call per piece
            out.write("".join(parts))
            parts.clear()

    _write_lines(obj, 2, write)
    out.write("".join(parts) + "\n")
    out.flush()


PROGRESS_DELAY = 1.0  # seconds of work before a progress bar appears
_REDRAW = 0.1  # seconds between redraws


class _DelayedBar:
    """A ``click.progressbar`` in bytes, drawn only once the work has run ``PROGRESS_DELAY`` seconds.

    ``click.progressbar`` rather than ``rich``: click is already a dependency and already imported;
    a byte count, a percentage and an ETA are all these commands need.
    """

    def __init__(self, label: str) -> None:
        self.total, self.label = 0, label
        self.done = self.shown = 0
        self.start = self.drawn = time.monotonic()
        self.bar: Any = None

    def update(self, n: int, total: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.drawn < _REDRAW or now - self.start < PROGRESS_DELAY or total <= 0:
            return
        if self.bar is not None and total != self.total:
            self.bar.length = total
        self.total = total
        if self.bar is None:
            self.bar = click.progressbar(length=self.total, label=self.label, file=sys.stderr, show_eta=True,
                                         show_percent=True, item_show_func=lambda text: text)
            self.bar.__enter__()
        self.bar.update(self.done - self.shown, f"{human_bytes(self.done)} of {human_bytes(self.total)}")
        self.shown, self.drawn = self.done, now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.done - self.shown, f"{human_bytes(self.done)} of {human_bytes(self.total)}")
            self.bar.__exit__(None, None, None)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def byte_progress(label: str, *, quiet: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``progress(n_bytes, total_bytes)`` callback (the library's progress protocol) drawing a
    bar on stderr, or None: no bar when stderr is not a terminal (piped, redirected, CI), under
    ``quiet`` (``--json``), or for work done within ``PROGRESS_DELAY`` seconds (it appears only after)."""
    if quiet or not _is_tty(sys.stderr):
        yield None
        return
    bar = _DelayedBar(label)
    try:
        yield bar.update
    finally:
        bar.close()


def parse_pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old:
            raise click.BadParameter(f"{value!r} is not OLD=NEW", param_hint=option)
        pairs.append((old, new))
    return pairs
