"""The ``ckptsurgeon`` command line."""
from __future__ import annotations

import click

from .. import __version__
from .check import diff_cmd, layout_cmd, stats_cmd, validate_cmd
from .common import Group
from .consolidate import consolidate_cmd
from .extract import extract_cmd
from .ls import ls_cmd
from .remap import graft_cmd, remap_cmd
from .rnn import rnn_cmd, verify_cmd
from .scan import scan_cmd
from .tree import tree_cmd

__all__ = ["cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ckptsurgeon")
def cli() -> None:
    """Safe, lazy checkpoint surgery.

    Reads PyTorch (.pt/.pth/.bin/.ckpt, zip and legacy), safetensors, numpy (.npz/.npy), HDF5/Keras
    (.h5, .keras, .weights.h5), TensorFlow checkpoints, Hugging Face shards and PyTorch Distributed
    Checkpoints without running any code from them, and only the bytes it needs, locally or from
    hf://, s3://, gs://, https:// URLs. Understands LSTM/GRU layouts, converts them exactly, grafts them into
    a downstream model's checkpoint.

    \b
    Exit codes: 0 ok, 1 bad or unsafe input or failed operation, 2 usage error.
    """


cli.add_command(ls_cmd)
cli.add_command(tree_cmd)
cli.add_command(extract_cmd)
cli.add_command(rnn_cmd)
cli.add_command(verify_cmd)
cli.add_command(remap_cmd)
cli.add_command(graft_cmd)
cli.add_command(scan_cmd)
cli.add_command(consolidate_cmd)
for _cmd in (layout_cmd, validate_cmd, diff_cmd, stats_cmd):
    cli.add_command(_cmd)


def main() -> None:
    cli(prog_name="ckptsurgeon")
