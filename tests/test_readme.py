"""The README is the front page: its two commands as .ci/run expects them, a 30-second example that runs as
written, links into docs/ that resolve, and at most 15 KB (the reference is the docs site, tests/test_docs.py)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from conftest import ROOT
from test_docs import blocks

README = ROOT / "README.md"
# .ci/run runs `bash scripts/test.sh`; a new user starts with these two lines, exactly.
HEAD = """# ckptsurgeon

```bash
bash scripts/demo.sh    # set up .venv (core only), then scan, list, extract and convert the bundled example checkpoints
bash scripts/test.sh    # set up .venv with the test dependencies (.tfvenv: TensorFlow; .fwvenv: JAX/Flax, paddle), lint, type-check, run every test
```
"""
E2E = re.compile(r"<!-- e2e:start -->\s*```bash\n(.*?)```\s*<!-- e2e:end -->", re.S)


def test_readme_starts_with_the_two_commands():
    assert README.read_text().startswith(HEAD)
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= 15_000, f"README.md is {size:,} bytes; the reference belongs in docs/"


def test_readme_links_resolve():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#", 1)[0] for link in links if "://" not in link and not link.startswith("#")]
    assert len(local) >= 15, local  # the front page points into the docs
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_blocks_run_or_say_why_not():
    """Every block is the head, the 30-second example (run below), Python (run below) or marked norun."""
    found = blocks(README)
    text = README.read_text()
    e2e = E2E.search(text).group(1)
    for b in found:
        if b.body in HEAD or b.body == e2e or b.lang == "python":
            continue
        assert b.marker and b.marker[0] == "norun" and b.marker[1], f"{b.where()}: a {b.lang} block that nothing runs"


def _env() -> dict[str, str]:
    venv = os.path.dirname(sys.executable)
    return dict(os.environ, PATH=f"{venv}:{os.environ['PATH']}", KERAS_BACKEND="torch")


def test_readme_30_second_example_runs(tmp_path):
    block = E2E.search(README.read_text()).group(1)
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    script = block.replace('export PATH="$PWD/.venv/bin:$PATH"', "")
    assert script != block, "the example sets PATH as a user from the repository root would"
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "clean" in out
    assert "LSTMcell: LSTM [hand-built per-gate LSTM] input 3, hidden 4" in out
    assert "verified LSTMcell: max abs diff 0 (atol 1e-05)" in out
    assert "wrote 4 tensors (576 B) to cell.safetensors" in out
    assert "left out 24 optimizer tensors" in out
    assert "lstm/cell/recurrent_kernel  4x16" in out


def test_readme_python_runs(tmp_path):
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    python = [b for b in blocks(README) if b.lang == "python"]
    assert python
    for b in python:
        (tmp_path / "block.py").write_text(b.body)
        proc = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{b.where()}\n{proc.stdout}{proc.stderr}"
    assert (tmp_path / "enc.safetensors").exists()
