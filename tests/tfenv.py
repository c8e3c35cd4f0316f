"""TensorFlow's side of the tests, run in the test-only venv that scripts/tfenv.sh builds (.tfvenv)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SIDE = Path(__file__).resolve().parent / "tf_side.py"


def tf_python() -> str:
    """The TensorFlow venv's interpreter; missing in CI is a failure (a missing install step), else a skip."""
    cand = os.environ.get("CKPTSURGEON_TF_PYTHON") or str(ROOT / ".tfvenv" / "bin" / "python")
    if os.path.exists(cand):
        return cand
    if os.environ.get("CI"):
        pytest.fail(f"{cand} is missing: scripts/test.sh builds it with scripts/tfenv.sh")
    pytest.skip("no TensorFlow venv: bash scripts/tfenv.sh builds .tfvenv")
    raise AssertionError  # unreachable


def run_tf(command: str, tmp: Path, **spec: object) -> dict[str, np.ndarray]:
    """Run ``tests/tf_side.py COMMAND`` in the TensorFlow venv; returns the arrays it wrote."""
    python = tf_python()
    n = len(list(tmp.glob("tf_spec_*.json")))
    spec_path, out = tmp / f"tf_spec_{n}.json", tmp / f"tf_out_{n}.npz"
    spec_path.write_text(json.dumps({**spec, "out": str(out)}))
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    proc = subprocess.run([python, str(SIDE), command, str(spec_path)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def save_x(tmp: Path, x: np.ndarray, name: str = "x.npz") -> str:
    np.savez(tmp / name, x=x)
    return str(tmp / name)
