"""``ckptsurgeon consolidate``: a DCP folder or HF shards into one file or new shards, streaming."""
from __future__ import annotations

import click

from .. import api
from ..formats import WRITERS
from .common import count, where, allow_expanded_option, allow_global_option, emit_json, human_bytes


@click.command("consolidate")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output file, or a folder with --max-shard-size.")
@click.option("--max-shard-size", default=None, metavar="SIZE",
              help="Write Hugging Face shards of at most SIZE (5GB, 500MB: decimal units) into the folder -o.")
@click.option("--format", "fmt", type=click.Choice(sorted(WRITERS)), default=None,
              help="Output format (default: from the suffix; safetensors shards with --max-shard-size).")
@click.option("--include-optimizer", is_flag=True, help="Keep optimizer state (left out by default).")
@click.option("--force", is_flag=True, help="Replace an existing output (never an input).")
@click.option("--json", "as_json", is_flag=True, help="Report what was written as JSON.")
@allow_global_option
@allow_expanded_option
def consolidate_cmd(checkpoint: str, output: str, max_shard_size: str | None, fmt: str | None,
                    include_optimizer: bool, force: bool, as_json: bool, allow_globals: tuple[str, ...]) -> None:
    """Turn a DCP folder or sharded checkpoint (local or a URL) into one file or new shards.

    Tensors are read, reassembled and written one at a time: memory stays near the largest tensor,
    however big the checkpoint. Non-tensor state stays behind; optimizer state is left out unless
    --include-optimizer.

    \b
    Examples:
      ckptsurgeon consolidate checkpoints/step_1000 -o model.safetensors
      ckptsurgeon consolidate checkpoints/step_1000 -o hf_model/ --max-shard-size 5GB
      ckptsurgeon consolidate hf_model/model.safetensors.index.json -o model.safetensors
    """
    result = api.extract(checkpoint, output, format=fmt, include_optimizer=include_optimizer, force=force,
                         allow_globals=allow_globals, max_shard_size=max_shard_size)
    if as_json:
        emit_json({"output": result.path, "files": result.files, "format": result.format, "tensors": len(result.written),
                   "nbytes": result.nbytes, "skipped_optimizer": result.skipped_optimizer})
        return
    click.echo(f"wrote {count(len(result.written), 'tensor')} ({human_bytes(result.nbytes)}) to {where(result)}")
    if result.skipped_optimizer:
        click.echo(f"left out {result.skipped_optimizer} optimizer tensors (pass --include-optimizer to keep them)")
