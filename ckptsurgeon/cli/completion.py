"""``ckptsurgeon --show-completion`` and ``--install-completion``: click's own shell completion, installed.

The shell asks ``_CKPTSURGEON_COMPLETE=<shell>_complete ckptsurgeon`` for completions; the scripts printed here
(click's ``<shell>_source``) are what make the shell ask. Installing writes the script to a file once and has
the shell's start-up file source it, so opening a terminal runs no Python.
"""
from __future__ import annotations

import os
from pathlib import Path

import click
from click.shell_completion import get_completion_class

__all__ = ["COMPLETE_VAR", "show_completion", "install_completion", "detect_shell"]

COMPLETE_VAR = "_CKPTSURGEON_COMPLETE"
PROG = "ckptsurgeon"


def detect_shell() -> str:
    """The user's shell from ``$SHELL`` (bash when it is none of bash, zsh, fish)."""
    name = os.path.basename(os.environ.get("SHELL", ""))
    return name if name in ("bash", "zsh", "fish") else "bash"


def show_completion(command: click.Command, shell: str | None = None) -> str:
    """The completion script of ``shell`` for ``command``."""
    shell = shell or detect_shell()
    cls = get_completion_class(shell)
    if cls is None:  # the option's choices keep this from happening
        raise click.UsageError(f"no completion for shell {shell!r}; use bash, zsh or fish")
    return cls(command, {}, PROG, COMPLETE_VAR).source()


def install_completion(command: click.Command, shell: str | None = None) -> str:
    """Write the script and source it from the shell's start-up file (once); say what was done."""
    shell = shell or detect_shell()
    home = Path.home()
    script = show_completion(command, shell)
    if shell == "fish":  # fish loads completions from this folder by itself
        target = home / ".config" / "fish" / "completions" / f"{PROG}.fish"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(script)
        return f"wrote {target}; new fish sessions complete {PROG}"
    target = home / f".{PROG}-complete.{shell}"
    target.write_text(script)
    rc = home / (".zshrc" if shell == "zsh" else ".bashrc")
    line = f". {target}  # {PROG} tab completion"
    existing = rc.read_text() if rc.exists() else ""
    if line not in existing:
        with rc.open("a") as fh:
            fh.write(("" if not existing or existing.endswith("\n") else "\n") + line + "\n")
    return f"wrote {target} and sourced it from {rc}; open a new shell (or run: . {target})"
