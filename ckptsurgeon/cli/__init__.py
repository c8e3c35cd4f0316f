"""The ``ckptsurgeon`` command line."""
from __future__ import annotations

import gc
import os
from importlib import import_module

# Before numpy is imported: its OpenBLAS would start a thread per core and allocate their buffers,
# a quarter of the start-up of `ckptsurgeon ls`; these commands multiply no matrix big enough to use them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402

from .. import __version__  # noqa: E402
from .common import Group  # noqa: E402

__all__ = ["cli", "main", "COMMANDS", "DOCS_URL"]

DOCS_URL = "https://ckptsurgeon.readthedocs.io"

# Subcommands are imported when invoked, so `ckptsurgeon ls` never loads h5py, torch, the recurrent
# or remap machinery. name -> (module under ckptsurgeon.cli, attribute, short help for `--help`;
# a test checks each short help against the command's own docstring).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ls": ("ls", "ls_cmd", "List tensors: scope path, shape, dtype, size; then totals."),
    "tree": ("tree", "tree_cmd", "Show the scope tree: tensors, parameters and bytes under each scope."),
    "extract": ("extract", "extract_cmd", "Extract the selected scopes into a new checkpoint (byte-exact, atomic)."),
    "rnn": ("rnn", "rnn_cmd", "Find LSTM/GRU parameter groups; show their layout and every computation-relevant fact with its source."),
    "verify": ("rnn", "verify_cmd", "Run both checkpoints' recurrent groups on the same random inputs; exit 1 above --atol."),
    "remap": ("remap", "remap_cmd", "Rename, reshape, cast, split or reorder tensors by rules: plan first, then write."),
    "graft": ("remap", "graft_cmd", "Write SOURCE's tensors into a copy of the downstream model's checkpoint TEMPLATE."),
    "layout": ("check", "layout_cmd", "Write a layout lock: format, every tensor's path, shape, dtype, and recurrent groups."),
    "validate": ("check", "validate_cmd", "Check a checkpoint against a layout lock or a reference; exit 1 on any finding."),
    "diff": ("check", "diff_cmd", "Compare two checkpoints (any formats): tensors by path, recurrent groups by what they compute."),
    "stats": ("check", "stats_cmd", "Statistics per tensor and per gate, and a best guess of how each was initialized."),
    "consolidate": ("consolidate", "consolidate_cmd", "Turn a DCP folder or sharded checkpoint (local or a URL) into one file or new shards."),
    "scan": ("scan", "scan_cmd", "List every global and opcode class the pickles in each checkpoint would need, without running anything; exit 1 if any is outside the allowlist or the file is refused (as 'ls' would refuse it)."),
}


class LazyGroup(Group):
    """A group whose subcommands are imported by name when invoked; `--help` lists them from ``COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        row = COMMANDS.get(name)
        if row is None:
            return None
        return getattr(import_module(f"{__name__}.{row[0]}"), row[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        with formatter.section("Commands"):
            formatter.write_dl([(n, click.Command(n, help=COMMANDS[n][2]).get_short_help_str(limit)) for n in names])


def _completion(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.resilient_parsing:
        return
    from .completion import install_completion, show_completion

    if value not in ("", "bash", "zsh", "fish"):
        raise click.BadParameter(f"{value!r}: completion is for bash, zsh or fish", ctx, param)
    shell = value or None
    if param.name == "show_completion":
        click.echo(show_completion(ctx.find_root().command, shell))
    else:
        click.echo(install_completion(ctx.find_root().command, shell))
    ctx.exit(0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=f"Documentation: {DOCS_URL}")
@click.version_option(__version__, prog_name="ckptsurgeon")
@click.option("--install-completion", type=str, is_flag=False, flag_value="", default=None, expose_value=False,
              is_eager=True, callback=_completion, metavar="[SHELL]",
              help="Install tab completion for your shell (bash, zsh, fish; default: from $SHELL).")
@click.option("--show-completion", type=str, is_flag=False, flag_value="", default=None, expose_value=False,
              is_eager=True, callback=_completion, metavar="[SHELL]",
              help="Print the tab completion script for your shell, to install it yourself.")
def cli() -> None:
    """Safe, lazy checkpoint surgery.

    Reads PyTorch (.pt/.pth/.bin/.ckpt, zip and legacy, TorchScript archives), safetensors, numpy
    (.npz/.npy), HDF5/Keras (.h5, .keras, .weights.h5), TensorFlow checkpoints, ONNX models, Hugging Face
    shards and PyTorch Distributed Checkpoints without running any code from them, and only the bytes it needs, locally or from
    hf://, s3://, gs://, https:// URLs. Understands LSTM/GRU layouts, converts them exactly, grafts them into
    a downstream model's checkpoint.

    \b
    Conventions: --json on every command that reports; validate and scan write
    reports with --report text|json|github|junit[=PATH] (repeatable, the checkpoint
    read once); --format is the output checkpoint format (extract, remap, consolidate).
    Exit codes: 0 ok, 1 bad or unsafe input or failed operation, 2 usage error.
    """


def main() -> None:
    from ..formats import freeze_after_reads

    freeze_after_reads()  # the process ends with the command: what it read is never garbage before then
    try:
        cli(prog_name="ckptsurgeon")
    finally:  # nor after: the interpreter's last collection would walk every object left (20 ms of a folder's scan)
        gc.freeze()
