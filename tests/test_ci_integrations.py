"""CI that pastes and runs (issue 21, item 3): the pre-commit hooks through ``pre-commit try-repo``, and the
composite GitHub Action's own script run as the runner runs it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml

from conftest import FIXTURES, ROOT

MODEL = FIXTURES / "torch" / "model.pt"
VENV_BIN = Path(sys.executable).parent
# What `pip install` of the project needs, and the hook definitions: the working tree as it is now (try-repo
# clones a repository at its HEAD, so uncommitted files would not be seen in /work/main itself).
PROJECT_FILES = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "ckptsurgeon")


def _git(cwd: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def _repo_of(files: dict[str, Path], where: Path) -> Path:
    where.mkdir()
    for name, src in files.items():
        dst = where / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    _git(where, "init", "-q")
    _git(where, "add", "-A")
    _git(where, "commit", "-q", "-m", "snapshot")
    return where


def test_pre_commit_hooks_through_try_repo(tmp_path):
    """Both hooks take any number of files; validate finds each file's lock beside it with no args.

    Slow (a minute or more): pre-commit builds a venv and pip installs the project and its dependencies."""
    pre_commit = shutil.which("pre-commit", path=str(VENV_BIN)) or shutil.which("pre-commit")
    if pre_commit is None:
        pytest.skip("pre-commit is not installed")
    project = _repo_of({name: ROOT / name for name in PROJECT_FILES}, tmp_path / "project")
    subprocess.run([str(VENV_BIN / "ckptsurgeon"), "layout", str(MODEL), "-o", str(tmp_path / "model.layout.json")],
                   check=True, capture_output=True)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # protocol 0: os.system('echo pwned'), never loaded
    user = _repo_of({"ckpt/model.pt": MODEL, "ckpt/model.layout.json": tmp_path / "model.layout.json",
                     "ckpt/copy.pt": MODEL, "ckpt/copy.layout.json": tmp_path / "model.layout.json",
                     "ckpt/other.pt": FIXTURES / "torch" / "legacy.pt", "ckpt/evil.pkl": evil}, tmp_path / "user")
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"), PATH=f"{VENV_BIN}:{os.environ['PATH']}")

    def try_repo(hook: str, *files: str) -> subprocess.CompletedProcess:
        return subprocess.run([pre_commit, "try-repo", str(project), hook, "--verbose", "--files", *files],
                              cwd=user, env=env, capture_output=True, text=True, timeout=900)

    ok = try_repo("ckptsurgeon-validate", "ckpt/model.pt", "ckpt/copy.pt")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: ckpt/model.pt matches ckpt/model.layout.json" in ok.stdout
    assert "ok: ckpt/copy.pt matches ckpt/copy.layout.json" in ok.stdout
    bad = try_repo("ckptsurgeon-validate", "ckpt/model.pt", "ckpt/other.pt")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "ckpt/other.pt: no layout lock beside it; make one with 'ckptsurgeon layout ckpt/other.pt" in bad.stdout
    scan = try_repo("ckptsurgeon-scan", "ckpt/model.pt", "ckpt/evil.pkl")
    assert scan.returncode == 1, scan.stdout + scan.stderr
    assert "global posix.system" in scan.stdout or "global os.system" in scan.stdout
    assert "summary: 2 file(s): 1 clean, 1 unsafe" in scan.stdout
    assert not (user / "pwned").exists()


def test_pre_commit_hooks_file():
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"ckptsurgeon-validate", "ckptsurgeon-scan"}
    for hook in hooks.values():
        assert hook["language"] == "python" and hook["entry"].startswith("ckptsurgeon ")
        assert hook.get("pass_filenames", True) and not hook.get("require_serial", False)
        assert re.search(hook["files"], "checkpoints/model.pt") and not re.search(hook["files"], "model.layout.json")


def _action_script() -> tuple[dict, str]:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip"
    install = next(s for s in steps if "pip install" in s.get("run", ""))
    assert "${{ github.action_path }}" in install["env"]["ACTION_PATH"]
    return action, steps[-1]["run"]


@pytest.mark.parametrize("command, files, extra, code", [
    ("validate", "ckpt/*.pt", {"LAYOUT": "model.layout.json"}, 0),
    ("validate", "ckpt/*.pt lfs.pt", {"LAYOUT": "model.layout.json"}, 1),
    ("scan", "ckpt", {"ARGS": "--fail-on code"}, 0),
])
def test_action_runs_its_command(tmp_path, command, files, extra, code):
    """The action's last step, run by bash as the runner runs it, with the inputs as its environment."""
    action, script = _action_script()
    (tmp_path / "ckpt").mkdir()
    shutil.copy(MODEL, tmp_path / "ckpt" / "a.pt")
    shutil.copy(MODEL, tmp_path / "ckpt" / "b.pt")
    (tmp_path / "lfs.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    subprocess.run([str(VENV_BIN / "ckptsurgeon"), "layout", str(MODEL), "-o", str(tmp_path / "model.layout.json")],
                   check=True, capture_output=True)
    inputs = {k.upper().replace("-", "_"): str(v.get("default", "")) for k, v in action["inputs"].items()}
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    env.update(inputs)
    env.update(COMMAND=command, FILES=files, JUNIT="report.xml", **extra)
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == code, proc.stdout + proc.stderr
    root = ET.parse(tmp_path / "report.xml").getroot()
    assert int(root.get("failures")) == code * 1  # the LFS pointer is the one failure
    if code:
        assert "::error file=lfs.pt,title=ckptsurgeon unreadable::" in proc.stdout and "lfs: true" in proc.stdout
    else:
        assert "::error" not in proc.stdout


def test_docs_workflow_checks_out_with_lfs_and_caches_pip():
    text = (ROOT / "docs" / "guides" / "ci.md").read_text()
    block = text.split("```yaml\nname: checkpoints\n", 1)[1].split("```", 1)[0]
    workflow = yaml.safe_load("name: checkpoints\n" + block)
    steps = workflow["jobs"]["checkpoints"]["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@") and steps[0]["with"]["lfs"] is True
    assert steps[1]["uses"].startswith("actions/setup-python@") and steps[1]["with"]["cache"] == "pip"
    runs = " ".join(s.get("run", "") for s in steps)
    assert "--report github" in runs and "--report junit=" in runs
