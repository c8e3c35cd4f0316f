"""Run the CLI on one (mutated) input in a child process with a memory limit and a timeout, and judge
the outcome: exit 0, or exit 1 with exactly one ``error: ...`` line that is not an internal error;
never a signal, a hang, a traceback, a warning on stderr, a second stderr line, a file left behind or a
changed input. Commands whose exit 1 means "found something" (scan, verify, diff, validate) may also exit 1 with
their report on stdout and nothing on stderr: that is the outcome ``findings``.

``verify``, ``diff`` and ``validate --like`` compare the mutant (``{target}``) with its unmutated seed (``{ref}``),
so a mutant always meets a well-formed counterpart. A remote case's ``{target}`` is a URL (``remote.py``).

The children are forks of a worker that imported ``ckptsurgeon.cli`` once (fast, and nothing but
ckptsurgeon runs in it). Each child leads its own process group, so a timeout also kills whatever it
started (the HDF5 metadata child).
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .seeds import Seed

__all__ = ["Outcome", "run_case", "write_files", "read_files", "COMMANDS", "ALL_COMMANDS", "WRITE_COMMANDS", "FINDING_COMMANDS", "Limits"]

# The commands an input can go through; OUT is the case's output folder, REF the unmutated seed's target.
COMMANDS: dict[str, list[str]] = {
    "ls": ["ls", "--json", "{target}"],
    "extract": ["extract", "{target}", "-s", "**", "--include-optimizer", "-o", "{out}/x.safetensors"],
    "scan": ["scan", "{target}", "--json"],
    "rnn": ["rnn", "--json", "{target}"],
    "stats": ["stats", "--json", "--include-optimizer", "{target}"],
    "verify": ["verify", "{target}", "{ref}"],
    "diff": ["diff", "--json", "{target}", "{ref}"],
    "validate": ["validate", "{target}", "--like", "{ref}", "--check-finite", "--include-optimizer"],
    "tree": ["tree", "{target}"],
    # the writers and targets of issue 24: Flax msgpack and Paddle pdparams outputs, a graft into a Flax template
    # (``{tpl}``: seeds/rnn_linen.msgpack, copied beside the input), and a selection that cuts groups' cells
    "to-flax": ["extract", "{target}", "-s", "**", "--to", "flax", "-o", "{out}/x.msgpack"],
    "to-paddle": ["extract", "{target}", "-s", "**", "--to", "paddle", "-o", "{out}/x.pdparams"],
    "to-paddle-cell": ["extract", "{target}", "-s", "**", "--to", "paddle-cell", "-o", "{out}/x.pdparams"],
    "graft-flax": ["graft", "{target}", "--into", "{tpl}", "-o", "{out}/x.msgpack"],
    "cut-flax": ["extract", "{target}", "-s", "**", "--exclude", "**/*bias*", "--to", "flax", "-o", "{out}/x.msgpack"],
}
TEMPLATE = Path(__file__).resolve().parent / "seeds" / "rnn_linen.msgpack"  # what graft-flax grafts into
# the writer commands (issue 24) run when asked for, ``--commands writers``: not in ``all`` (CI's reader campaigns)
WRITE_COMMANDS = ("to-flax", "to-paddle", "to-paddle-cell", "graft-flax", "cut-flax")
ALL_COMMANDS = tuple(c for c in COMMANDS if c not in WRITE_COMMANDS)
# Exit 1 with a report on stdout and an empty stderr is an answer, not a refusal.
FINDING_COMMANDS = frozenset({"scan", "verify", "diff", "validate"})


@dataclass
class Limits:
    seconds: float = 10.0
    memory_mib: int = 2048


@dataclass
class Outcome:
    command: str
    kind: str  # "ok", "refused", "findings" or a failure: timeout, signal, internal, warning, multiline, traceback ...
    rc: int | None
    stderr: str
    seconds: float
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.kind not in ("ok", "refused", "findings")

    @property
    def signature(self) -> str:
        return f"{self.command}:{self.kind}:{self.detail}"

    def as_dict(self) -> dict:
        return asdict(self)


def _child(argv: list[str], cwd: str, stdout: str, stderr: str, limits: Limits) -> None:  # pragma: no cover
    code = 70
    try:
        os.setpgid(0, 0)
        os.chdir(cwd)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(err, 2)
        cap = limits.memory_mib << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sys.argv = ["ckptsurgeon", *argv]
        from ckptsurgeon.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - anything that escapes the CLI is a finding: show it
        import traceback

        traceback.print_exc()
        code = 71
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run(argv: list[str], cwd: str, scratch: str, limits: Limits) -> tuple[int | None, str, float, bool]:
    """(exit code or -signal, stderr, seconds, timed out); stdout stays in ``scratch/stdout``."""
    stdout, stderr = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        _child(argv, cwd, stdout, stderr, limits)
    timed_out = False
    status = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > limits.seconds:
            timed_out = True
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.003)
    peak_rss[0] = usage.ru_maxrss * 1024 if usage else 0
    try:  # a grandchild (the HDF5 metadata child) must not outlive the case
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    seconds = time.monotonic() - start
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    try:
        err = Path(stderr).read_text(errors="replace")
    except OSError:
        err = ""
    return rc, err, seconds, timed_out


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


_NUMBERS = re.compile(r"\d+")
_WARNING = re.compile(r"^(?:.*?([\w.]+\.py):\d+: )?(\w*Warning): ", re.M)
peak_rss = [0]  # bytes, of the last command run
MAX_RSS = 1 << 30  # a command on a small input that needs more than this has a memory blow-up


def judge(command: str, rc: int | None, stderr: str, timed_out: bool, leftovers: list[str],
          input_changed: bool, seconds: float, names: str | tuple[str, ...] = "") -> Outcome:
    """The outcome of one command; one of ``names`` must appear in an error line (the input's folder, or the
    template a graft writes into)."""
    # "note: ..." lines are the CLI's own remarks (a deprecated option, quantized tensors listed): not failures
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note: ")]

    def out(kind: str, detail: str = "") -> Outcome:
        return Outcome(command, kind, rc, stderr.strip()[-2000:], round(seconds, 3), detail)

    if timed_out:
        return out("timeout")
    if "MemoryError" in stderr or peak_rss[0] > MAX_RSS:
        return out("memory", f"{peak_rss[0] >> 20} MiB")
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return out("signal", name)
    if "Traceback (most recent call last)" in stderr:
        last = lines[-1] if lines else ""
        return out("traceback", last.split(":")[0][:60])
    warning = _WARNING.search(stderr)
    if warning:  # numpy's RuntimeWarning on inf/nan, a DeprecationWarning ...: never the user's business
        return out("warning", f"{warning.group(2)}@{warning.group(1) or '?'}")
    if input_changed:
        return out("input-modified")
    if leftovers:
        return out("leftover", ",".join(sorted(_NUMBERS.sub("N", x) for x in leftovers))[:80])
    if rc == 0:
        return out("ok") if not lines else out("stderr-on-success", lines[0][:60])
    if rc == 1 and command in FINDING_COMMANDS and not lines:  # the report is on stdout, stderr stays empty
        return out("findings")
    if rc == 1:
        if len(lines) != 1:
            return out("multiline", str(len(lines)))
        if not lines[0].startswith("error: "):
            return out("bad-error-line")
        m = re.match(r"error: internal error: (\w+)(?::\s*(.*?))?(?: \(rerun with CKPTSURGEON_DEBUG.*)?$", lines[0])
        if m:
            detail = m.group(1) + ":" + _NUMBERS.sub("N", (m.group(2) or "")[:50])
            return out("internal", detail)
        if names and not any(n in lines[0] for n in ((names,) if isinstance(names, str) else names)):
            # one signature per kind of message (its first words), not per group or tensor name it quotes
            return out("unnamed", _NUMBERS.sub("N", " ".join(lines[0][7:].split()[:2])))
        return out("refused")
    return out("exit", str(rc))


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path (``/``-separated), but those under a top-level ``skip``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def run_case(seed: Seed, files: dict[str, bytes], commands: list[str], limits: Limits,
             keep: Path | None = None, serve: Callable[[Path], str] | None = None) -> list[Outcome]:
    """Write ``files`` to a fresh folder (and the unmutated seed beside it) and run each command on them; the judged
    outcomes. ``serve(input folder)``, for remote cases, puts the input behind a server and returns the URL to read."""
    root = Path(tempfile.mkdtemp(prefix="ckfuzz-", dir=keep))
    try:
        inp, ref, out, scratch, tpl = root / "in", root / "ref", root / "out", root / "scratch", root / "tpl"
        for d in (inp, ref, out, scratch, tpl):
            d.mkdir()
        write_files(inp, files)  # names may hold folders (an Orbax checkpoint's d/, ocdbt.process_0/ ...)
        write_files(ref, seed.files)
        template = tpl / TEMPLATE.name
        template.write_bytes(TEMPLATE.read_bytes())
        target = str(inp / seed.target) if seed.target else str(inp)
        reference = str(ref / seed.target) if seed.target else str(ref)
        names = str(inp)
        if serve is not None:
            target = serve(inp)
            names = target.split("/", 3)[2]  # 127.0.0.1:PORT: an error names the URL it was reading
        before = _digest(root / "in"), _digest(ref), _digest(tpl)
        results = []
        for command in commands:
            argv = [a.format(target=target, out=str(out), ref=reference, tpl=str(template)) for a in COMMANDS[command]]
            rc, err, seconds, timed_out = _run(argv, str(out), str(scratch), limits)
            made = Path(argv[argv.index("-o") + 1]).name if "-o" in argv and rc == 0 else None  # the output written
            left = [p.name for p in out.iterdir() if p.name != made]
            changed = (_digest(inp), _digest(ref), _digest(tpl)) != before
            allowed = (names, str(template)) if command == "graft-flax" else names
            outcome = judge(command, rc, err, timed_out, left, changed, seconds, names=allowed)
            if command == "scan" and outcome.kind == "ok" and any(r.command == "ls" and r.kind == "refused" for r in results):
                ls = next(r for r in results if r.command == "ls")
                outcome = Outcome(command, "scan-passed-refused", rc, ls.stderr, outcome.seconds)
            results.append(outcome)
            for p in out.iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            if changed:
                break
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)
