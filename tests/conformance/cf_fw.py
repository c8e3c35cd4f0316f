"""The conformance suite's client of the framework side (cf_fw_side.py): one persistent process of the framework
venv's python per test session, spoken to in JSON lines, so that each hypothesis example costs a forward pass,
not an interpreter start and a flax/paddle import.

``FW_TARGETS`` are the targets run there. ``live_targets(targets)`` drops them when the venv is missing (a failure
in CI, where scripts/test.sh builds it, as tests/fwenv.py does); ``run(target, file, scope, x, desc)`` returns the
real framework's output and what it read from the file.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["FW_TARGETS", "fw_python", "live_targets", "run"]

FW_TARGETS = ("flax", "paddle")
SIDE = Path(__file__).resolve().with_name("cf_fw_side.py")
ROOT = Path(__file__).resolve().parents[2]
_PROC: list[subprocess.Popen] = []


def fw_python() -> str | None:
    """The framework venv's interpreter (CKPTSURGEON_FW_PYTHON, else .fwvenv), None when missing."""
    cand = os.environ.get("CKPTSURGEON_FW_PYTHON") or str(ROOT / ".fwvenv" / "bin" / "python")
    return cand if os.path.exists(cand) else None


def live_targets(targets: tuple[str, ...]) -> tuple[str, ...]:
    """``targets`` without flax and paddle when their venv is missing (warned; in CI an error)."""
    if fw_python() is not None or not any(t in FW_TARGETS for t in targets):
        return targets
    msg = "no framework venv (.fwvenv: bash scripts/fwenv.sh, or CKPTSURGEON_FW_PYTHON): flax and paddle targets not run"
    if os.environ.get("CI"):
        raise RuntimeError(msg)
    warnings.warn(msg, stacklevel=2)
    return tuple(t for t in targets if t not in FW_TARGETS)


def _proc() -> subprocess.Popen:
    if _PROC and _PROC[0].poll() is None:
        return _PROC[0]
    python = fw_python()
    if python is None:
        raise RuntimeError("no framework venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.Popen([python, str(SIDE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, cwd=str(ROOT))
    _PROC[:] = [proc]
    return proc


def _stop() -> None:
    for proc in _PROC:
        if proc.poll() is None and proc.stdin is not None:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


atexit.register(_stop)


def run(target: str, file: Path, scope: str, x: np.ndarray, desc: dict) -> tuple[np.ndarray, dict]:
    """The written file in the real ``target`` framework, built from ``desc``; raises AssertionError with the
    framework's complaint when it does not load or run."""
    with tempfile.TemporaryDirectory(prefix="cf-fw-") as tmp:
        xp, yp = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(xp, np.asarray(x, np.float32))
        req = {"target": target, "file": str(Path(file).resolve()), "scope": scope, "x": str(xp), "y": str(yp),
               "desc": desc}
        proc = _proc()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            _PROC.clear()
            raise AssertionError(f"the {target} side ({fw_python()} {SIDE}) died on {req}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise AssertionError(f"real {target} does not load or run {file} (scope {scope!r}): {answer['error']}")
        return np.load(yp), answer["meta"]


if __name__ == "__main__":  # a smoke test: python cf_fw.py FILE SCOPE TARGET DESC_JSON
    x = np.random.default_rng(0).standard_normal((5, 2, json.loads(sys.argv[4])["input_size"]))
    print(run(sys.argv[3], Path(sys.argv[1]), sys.argv[2], x, json.loads(sys.argv[4]))[0].shape)
