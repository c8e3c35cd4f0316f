"""JAX/Flax's and PaddlePaddle's side of the tests, run in the test-only venv that scripts/fwenv.sh builds (.fwvenv)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fw_python(module: str) -> str:
    """The framework venv's interpreter (``module``: flax or paddle, for the messages); missing in CI is a failure
    (a missing install step), else a skip."""
    cand = os.environ.get("CKPTSURGEON_FW_PYTHON") or str(ROOT / ".fwvenv" / "bin" / "python")
    if os.path.exists(cand):
        return cand
    if os.environ.get("CI"):
        pytest.fail(f"{cand} is missing ({module} must load what we write): scripts/test.sh builds it with scripts/fwenv.sh")
    pytest.skip(f"no {module} venv: bash scripts/fwenv.sh builds .fwvenv (or set CKPTSURGEON_FW_PYTHON)")
    raise AssertionError  # unreachable
