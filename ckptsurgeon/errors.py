"""One exception hierarchy. Library code raises these; only ``ckptsurgeon.cli`` prints them."""
from __future__ import annotations

__all__ = [
    "CheckpointError",
    "FormatError",
    "UnsafeCheckpointError",
    "SelectionError",
    "OutputError",
    "MissingDependencyError",
]


class CheckpointError(Exception):
    """Base class: bad or unsafe input, or an operation that failed. The CLI exits 1 on it."""


class FormatError(CheckpointError):
    """The file is not what it claims to be, is truncated, or is internally inconsistent."""


class UnsafeCheckpointError(CheckpointError):
    """The file asks for something we refuse to do (run code, follow a link, allocate absurdly)."""


class SelectionError(CheckpointError):
    """A scope pattern, key or rename that does not fit the checkpoint."""


class OutputError(CheckpointError):
    """The output cannot be written as asked (exists, is an input, unsupported dtype ...)."""


class MissingDependencyError(CheckpointError):
    """An optional dependency is needed for this operation."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {package}; install it with: pip install 'ckptsurgeon[{extra}]'"
        )
