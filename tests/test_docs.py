"""Every command and code block of the documentation site (docs/**/*.md) runs, as written.

Each page is one test: its blocks run in order in one fresh folder holding a copy of ``fixtures/`` and
``examples/``, with the project's venv first on PATH (so ``ckptsurgeon`` and ``python`` are the installed ones).

- ```` ```bash ````: run with ``bash -euo pipefail``; a non-zero exit fails the page.
- ```` ```console ````: each ``$ `` line is a command (``\\`` continues it); the lines after it are what it
  printed, and each must appear in the real output (spaces collapsed; ``...`` stands for anything).
  A command must exit 0 unless the next command is ``echo $?``, which then shows the code expected.
- ```` ```python ````: run with the venv's interpreter; each block stands alone (its own imports).
- Other languages (text, toml, yaml, json ...) are not run.

Markers, an HTML comment on the line before a block (invisible on the site):

- ``<!-- norun: why -->``: not run (``pip install``, URLs of real servers); the reason is required.
- ``<!-- file: NAME -->``: the block is written to NAME in the page's folder (a rules file, a config).
- ``<!-- run: tensorflow -->``: a python block run with the tests' TensorFlow venv (tests/tfenv.py), or a
  console block that needs what such a block made; skipped where there is no such venv (a failure in CI, as for
  every TensorFlow test).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
RUN = {"bash", "console", "python"}
NOT_RUN = {"text", "toml", "yaml", "json", "pycon"}
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.S | re.M)
MARKER = re.compile(r"<!--\s*(norun|file|run)\s*:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    body: str
    marker: tuple[str, str] | None

    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        indent = len(m.group("indent"))
        body = "".join(line[indent:] + "\n" for line in m.group("body").splitlines())
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found = MARKER.search(before)
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group("lang"), body,
                         (found.group(1), found.group(2)) if found else None))
    return out


PAGES = sorted(p for p in DOCS.rglob("*.md") if not any(part.startswith("_") for part in p.relative_to(DOCS).parts))


def test_every_block_is_run_or_says_why_not():
    """A block in an unknown language, or a marker without its reason, would be passed over silently."""
    problems = []
    for page in PAGES:
        for b in blocks(page):
            if b.lang not in RUN | NOT_RUN:
                problems.append(f"{b.where()}: language {b.lang!r} is neither run ({sorted(RUN)}) nor known not to be")
            if b.marker and not b.marker[1]:
                problems.append(f"{b.where()}: <!-- {b.marker[0]}: ... --> needs its argument")
            if b.marker and b.marker[0] == "run" and (b.marker[1] != "tensorflow" or b.lang not in ("python", "console")):
                problems.append(f"{b.where()}: only python and console blocks take <!-- run: tensorflow -->")
    assert not problems, "\n".join(problems)
    assert sum(1 for p in PAGES for b in blocks(p) if b.lang in RUN and not b.marker) >= 40


def _env() -> dict[str, str]:
    venv = os.path.dirname(sys.executable)
    return dict(os.environ, PATH=f"{venv}:{os.environ['PATH']}", KERAS_BACKEND="torch", NO_COLOR="1",
                PYTHONDONTWRITEBYTECODE="1")


def _fail(block: Block, what: str, proc: subprocess.CompletedProcess) -> None:
    pytest.fail(f"{block.where()}: {what}\n--- block ---\n{block.body}--- stdout ---\n{proc.stdout[-6000:]}"
                f"--- stderr ---\n{proc.stderr[-6000:]}")


def _squash(s: str) -> str:
    return " ".join(s.split())


def _shown(expected: str, actual_lines: list[str]) -> bool:
    """``expected`` (one documented output line, ``...`` eliding) appears in one line of the output."""
    pieces = [_squash(p) for p in _squash(expected).split("...")]
    for line in actual_lines:
        at = 0
        for piece in pieces:
            found = line.find(piece, at)
            if found < 0:
                break
            at = found + len(piece)
        else:
            return True
    return False


def _console(block: Block) -> tuple[list[str], list[list[str]]]:
    """The commands of a console block and the output lines shown under each."""
    commands: list[str] = []
    shown: list[list[str]] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            cmd = line[2:]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            commands.append(cmd)
            shown.append([])
        elif commands and line.strip() and line.strip() != "...":
            shown[-1].append(line)
        elif not commands and line.strip():
            raise AssertionError(f"{block.where()}: a console block starts with a '$ ' command")
        i += 1
    return commands, shown


def _run_console(block: Block, cwd: Path) -> None:
    commands, shown = _console(block)
    script = []
    for n, cmd in enumerate(commands):
        script.append(f"{{ {cmd}\n}} 2>&1\n__s=$?; printf '\\n@@ckptsurgeon-docs {n} %d@@\\n' $__s; (exit $__s)")
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=600)
    # each command's stderr goes with its stdout: a console block shows what a terminal shows
    parts = re.split(r"\n?@@ckptsurgeon-docs (\d+) (-?\d+)@@\n", proc.stdout)
    outputs, statuses = parts[0::3], [int(s) for s in parts[2::3]]
    if len(statuses) != len(commands):
        _fail(block, f"ran {len(statuses)} of {len(commands)} commands", proc)
    for n, cmd in enumerate(commands):
        expects_failure = n + 1 < len(commands) and commands[n + 1].strip() == "echo $?"
        if statuses[n] != 0 and not expects_failure:
            _fail(block, f"`{cmd}` exited {statuses[n]}; it printed:\n{outputs[n][-3000:]}", proc)
        actual = [_squash(a) for a in outputs[n].splitlines()]
        missing = [s for s in shown[n] if not _shown(s, actual)]
        if missing:
            _fail(block, f"`{cmd}` did not print:\n  " + "\n  ".join(missing) + f"\nit printed:\n{outputs[n][-3000:]}", proc)


def _tf_python() -> str | None:
    cand = os.environ.get("CKPTSURGEON_TF_PYTHON") or str(ROOT / ".tfvenv" / "bin" / "python")
    if os.path.exists(cand):
        return cand
    if os.environ.get("CI"):
        pytest.fail(f"{cand} is missing: scripts/test.sh builds it with scripts/tfenv.sh")
    return None


def run_page(page: Path, cwd: Path) -> int:
    """Run every block of ``page`` in ``cwd``; returns how many ran."""
    ran = 0
    for n, block in enumerate(blocks(page)):
        kind, arg = block.marker or ("", "")
        if kind == "norun":
            continue
        if kind == "file":
            (cwd / arg).parent.mkdir(parents=True, exist_ok=True)
            (cwd / arg).write_text(block.body)
            continue
        if block.lang == "bash":
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=cwd, env=_env(),
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode:
                _fail(block, f"exited {proc.returncode}", proc)
        elif block.lang == "console":
            if kind == "run" and _tf_python() is None:
                continue
            _run_console(block, cwd)
        elif block.lang == "python":
            python = sys.executable
            env = _env()
            if kind == "run":
                tf = _tf_python()
                if tf is None:
                    continue
                python = tf
                env = {k: v for k, v in env.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
            script = cwd / f"_docs_block_{n}.py"
            script.write_text(block.body)
            proc = subprocess.run([python, script.name], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            if proc.returncode:
                _fail(block, f"exited {proc.returncode}", proc)
        else:
            continue
        ran += 1
    return ran


RUNNABLE = [p for p in PAGES if any(b.lang in RUN and (b.marker or ("",))[0] != "norun" for b in blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(DOCS)) for p in RUNNABLE])
def test_page_runs(page, tmp_path):
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    assert run_page(page, tmp_path) > 0


def test_a_failing_block_fails(tmp_path):
    """The runner itself: a command that fails, or prints other than shown, fails the page."""
    page = tmp_path / "page.md"
    for body in ("```bash\nckptsurgeon ls no-such-file.pt\n```\n",
                 "```console\n$ ckptsurgeon --version\nckptsurgeon, version 99\n```\n",
                 "```python\nraise SystemExit(3)\n```\n"):
        page.write_text(body)
        with pytest.raises(pytest.fail.Exception):
            run_page(page, tmp_path)
    page.write_text("```console\n$ ckptsurgeon ls no-such-file.pt\nerror: ... no such file\n$ echo $?\n1\n```\n")
    assert run_page(page, tmp_path) == 1
