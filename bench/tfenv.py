"""Where a Python with TensorFlow is (for the P3 anchor and the TF-written bench checkpoint)."""
from __future__ import annotations

import os
import subprocess

__all__ = ["tf_interpreter"]


def tf_interpreter() -> str | None:
    """A Python that can import TensorFlow: $CKPTSURGEON_TF_PYTHON, the tests' .tfvenv (scripts/tfenv.sh) or
    /work/tfvenv/bin/python."""
    repo_venv = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".tfvenv", "bin", "python")
    for cand in (os.environ.get("CKPTSURGEON_TF_PYTHON"), repo_venv, "/work/tfvenv/bin/python"):
        if cand and os.path.exists(cand):
            ok = subprocess.run([cand, "-c", "import tensorflow"], capture_output=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).returncode == 0
            if ok:
                return cand
    return None
