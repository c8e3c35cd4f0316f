"""What a check reports: ``Finding`` (one problem), ``Case`` (one check of one tensor or group), their kinds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Finding", "Case", "KINDS", "CHECKS"]

KINDS = ("missing", "unexpected", "shape", "dtype", "recurrent", "nonfinite", "hash")
# The checks a report lists per tensor or group (JUnit: one test case each); a finding's kind names its check.
CHECKS = ("present", "shape", "dtype", "hash", "nonfinite", "recurrent")


@dataclass
class Finding:
    kind: str
    path: str
    message: str
    expected: Any = None
    actual: Any = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class Case:
    """One check of one tensor or recurrent group: ``passed``, ``failed`` (its finding's message) or ``skipped``
    (why it did not run), so a report tells a check that passed from one that never ran."""

    name: str  # tensor path or group scope
    check: str  # one of CHECKS
    status: str  # passed, failed, skipped
    message: str = ""
