"""The fuzzer in CI: a fixed seed and a fixed number of mutants per format (about a minute), each run
under a memory limit and a timeout; any internal error, timeout, signal, multi-line stderr, unnamed
file or leftover file fails. ``FUZZ_SECONDS=3600`` turns it into a long campaign that shrinks and
saves a reproducer of each new failure under ``tests/fuzz/reproducers/`` (replayed below)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CASES_PER_FORMAT = 60
SEED = 20260513


def _campaign(tmp_path: Path, *args: str, timeout: float) -> dict:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.campaign", "--report", str(report), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert report.exists(), proc.stderr[-3000:]
    result = json.loads(report.read_text())
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=1))
    return result


def test_fuzz_every_format(tmp_path):
    seconds = os.environ.get("FUZZ_SECONDS")
    if seconds:  # a long campaign: new failures are shrunk and saved as reproducers
        result = _campaign(tmp_path, "--seconds", seconds, timeout=float(seconds) * 2 + 1800)
    else:
        result = _campaign(tmp_path, "--seed", str(SEED), "--cases", str(CASES_PER_FORMAT), "--no-save",
                           "--max-seconds", "150", timeout=900)
    assert result["total_executions"] > 0
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)


def test_saved_reproducers_stay_fixed(tmp_path):
    result = _campaign(tmp_path, "--replay", timeout=900)
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)
