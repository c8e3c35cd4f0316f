"""One exception hierarchy. Library code raises these; only ``ckptsurgeon.cli`` prints them."""
from __future__ import annotations

import re

__all__ = [
    "one_line",
    "CheckpointError",
    "FormatError",
    "CheckpointNotFoundError",
    "CheckpointIsADirectoryError",
    "TensorNotFoundError",
    "UnsafeCheckpointError",
    "SelectionError",
    "OutputError",
    "MissingDependencyError",
]


class CheckpointError(Exception):
    """Base class: bad or unsafe input, or an operation that failed. The CLI exits 1 on it.

    Messages are one line: text quoted from elsewhere (numpy, zipfile, libhdf5) may hold line
    breaks, which are folded into spaces here, once for every error.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` without line breaks or control characters (terminal escapes), cut to ``limit`` characters."""
    text = re.sub(r"\s*[\r\n\v\f\x85\u2028\u2029]+\s*", " ", text)
    text = re.sub(r"[\x00-\x08\x0e-\x1f\x7f]", "?", text)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


class FormatError(CheckpointError):
    """The file is not what it claims to be, is truncated, or is internally inconsistent."""


class CheckpointNotFoundError(FormatError, FileNotFoundError):
    """No file, folder or URL at that name: a ``FormatError`` for the CLI, a ``FileNotFoundError`` for Python code."""

    def __init__(self, message: str) -> None:
        FormatError.__init__(self, message)


class CheckpointIsADirectoryError(FormatError, IsADirectoryError):
    """A folder where a checkpoint file (or a checkpoint folder: DCP, shards, TensorFlow) was needed:
    a ``FormatError`` for the CLI, an ``IsADirectoryError`` for Python code."""

    def __init__(self, message: str) -> None:
        FormatError.__init__(self, message)


class UnsafeCheckpointError(CheckpointError):
    """The file asks for something we refuse to do (run code, follow a link, allocate absurdly)."""


class SelectionError(CheckpointError):
    """A scope pattern, key or rename that does not fit the checkpoint."""


class TensorNotFoundError(SelectionError, KeyError):
    """``index[path]`` of a path the checkpoint does not hold: a ``KeyError`` (mapping semantics) whose
    message names the closest paths; ``index.get(path)`` returns None instead."""

    def __str__(self) -> str:  # KeyError's own would print the message quoted, as a repr
        return str(self.args[0]) if self.args else ""


class OutputError(CheckpointError):
    """The output cannot be written as asked (exists, is an input, unsupported dtype ...)."""


class MissingDependencyError(CheckpointError):
    """An optional dependency is needed for this operation."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {package}; install it with: pip install 'ckptsurgeon[{extra}]'"
        )
