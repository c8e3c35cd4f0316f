"""The README's end-to-end example runs as written."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("torch")


def test_readme_end_to_end_block_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- e2e:start -->\s*```bash\n(.*?)```\s*<!-- e2e:end -->", text, re.S).group(1)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    venv = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=f"{venv}:{os.environ['PATH']}")
    script = block.replace('export PATH="$PWD/.venv/bin:$PATH"', "")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "matched encoder/rnn (nn.LSTM) -> lstm (nn.LSTM)" in proc.stdout
    assert "its LSTM computes the pretrained encoder's outputs: True" in proc.stdout
