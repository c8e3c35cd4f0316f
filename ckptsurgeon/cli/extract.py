"""``ckptsurgeon extract``: write selected scopes to a new checkpoint."""
from __future__ import annotations

import click

from .. import api
from ..formats import WRITERS
from .common import LazyChoice, count, where, allow_expanded_option, allow_global_option, dequantize_option, byte_progress, emit_json, human_bytes, parse_pairs, scope_options
from .rnn_options import build_options, fact_options, rnn_options


def _targets() -> list[str]:
    from ..rnn.convert import TARGETS

    return list(TARGETS)


@click.command("extract")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@click.option("--rename", multiple=True, metavar="OLD=NEW",
              help="Replace a scope prefix, like TF's assignment_map: --rename LSTMcell/=encoder/lstm/ (repeatable).")
@click.option("--map", "maps", multiple=True, metavar="SRC=DST", help="Remap rule applied last: --map 'LSTMcell/*=encoder/lstm/*'.")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output file (a folder with --max-shard-size; a checkpoint prefix for TensorFlow).")
@click.option("--max-shard-size", default=None, metavar="SIZE",
              help="Write Hugging Face shards of at most SIZE (5GB, 500MB: decimal units) into the folder -o; with "
                   "--format tensorflow, data-0000k-of-0000n shards of the prefix -o.")
@click.option("--format", "fmt", type=click.Choice(sorted(WRITERS)), default=None,
              help="Output format (default: from the output suffix; .ckpt needs tensorflow or pt unless --to tf1).")
@click.option("--include-optimizer", is_flag=True, help="Keep optimizer state (left out by default).")
@click.option("--force", is_flag=True, help="Replace an existing output file (never an input).")
@click.option("--to", "to", type=LazyChoice(_targets), default=None,
              help="Convert recurrent groups to this layout (other tensors pass through).")
@click.option("--gates", default=None, metavar="LIST", help="With --to gates: only these gates (input,forget,cell,output / reset,update,new).")
@click.option("--allow-approx", is_flag=True, help="Convert activations the target lacks (hard_sigmoid) and report the error.")
@click.option("--allow-concat-merge", is_flag=True,
              help="Convert a Keras Bidirectional that merges with sum/mul/ave into a target that keeps the directions "
                   "apart; you merge them downstream.")
@click.option("--verify/--no-verify", "verify_", default=True, show_default=True,
              help="With --to: read each converted group back and run it against the source first; write nothing "
                   "above --atol.")
@click.option("--atol", type=float, default=1e-5, show_default=True, help="Tolerance for --verify.")
@rnn_options
@fact_options
@click.option("--source-sha256", is_flag=True,
              help="Also record the sha256 of the whole source file (reads all of it; provenance otherwise "
                   "reads only the header).")
@click.option("--json", "as_json", is_flag=True, help="Report what was written as JSON.")
@allow_global_option
@allow_expanded_option
@dequantize_option
def extract_cmd(checkpoint: str, scope: tuple[str, ...], exclude: tuple[str, ...], regex: bool,
                rename: tuple[str, ...], maps: tuple[str, ...], output: str, max_shard_size: str | None, fmt: str | None, include_optimizer: bool, force: bool,
                to: str | None, gates: str | None, allow_approx: bool, verify_: bool, atol: float,
                allow_concat_merge: bool, forget_bias: float | None, orientation: str | None,
                gate_names: tuple[str, ...], var_names: tuple[str, ...], facts: dict,
                source_sha256: bool, as_json: bool, allow_globals: tuple[str, ...]) -> None:
    """Extract the selected scopes into a new checkpoint (byte-exact, atomic).

    \b
    Examples:
      ckptsurgeon extract model.pt --scope 'encoder/*' -o enc.safetensors
      ckptsurgeon extract model.ckpt --scope LSTMcell --rename LSTMcell/=encoder/lstm/ -o lstm.safetensors
      ckptsurgeon extract legacy.pt --scope '**' -o all.npz
      ckptsurgeon extract lightning.ckpt -s 'state_dict/encoder/**' --rename state_dict/= -o enc.pt
      ckptsurgeon extract model.ckpt -s 'LSTMcell/*' --to torch-cell --rename LSTMcell/= -o cell.safetensors
      ckptsurgeon extract model.ckpt -s 'LSTMcell/*' --to tf1 --rename LSTMcell/= -o out/model.ckpt   # TF1 LSTMCell
      ckptsurgeon extract model.pt -s 'encoder/*' --format tensorflow -o out/enc.ckpt
      ckptsurgeon extract model.pt -s 'encoder/*' --to gates --gates input,forget -o g.safetensors
      ckptsurgeon extract keras1.h5 --to onnx -o gru.npz        # hard_sigmoid: ONNX HardSigmoid(0.2, 0.5)
      ckptsurgeon extract big.safetensors --max-shard-size 5GB -o out/
      ckptsurgeon extract https://host/model.safetensors -s 'encoder/*' -o enc.safetensors

    \b
    Every --to conversion is read back and run against the source before anything is written
    (--no-verify skips it); the output's metadata describes each group (rnn:<scope>).
    """
    options = build_options(forget_bias, orientation, gate_names, var_names, allow_approx=allow_approx,
                            allow_concat_merge=allow_concat_merge,
                            gates=tuple(g.strip() for g in gates.split(",")) if gates else (), **facts) if to else None
    with byte_progress("extract", quiet=as_json) as progress:
        result = api.extract(
            checkpoint, output, scope=scope, exclude=exclude, regex=regex,
            rename=parse_pairs(rename, "--rename"), format=fmt, include_optimizer=include_optimizer,
            force=force, allow_globals=allow_globals, to=to, options=options, verify_atol=atol if verify_ else None,
            map=maps, max_shard_size=max_shard_size, source_sha256=source_sha256, progress=progress,
        )
    if as_json:
        emit_json({"output": result.path, "files": result.files, "format": result.format, "tensors": result.written,
                   "nbytes": result.nbytes, "skipped_optimizer": result.skipped_optimizer,
                   "converted": result.converted, "checks": result.checks, "notes": result.notes})
        return
    for group in result.converted:
        click.echo(f"converted {group['scope'] or '/'} ({group['variant']}) to {group['target']}: "
                   f"{len(group['tensors'])} tensors")
        for note in group["notes"]:
            click.echo(f"  note: {note}")
    for note in result.notes:
        click.echo(f"note: {note}")
    for check in result.checks:
        click.echo(f"verified {check['source'] or '/'}: max abs diff {check['max_abs_diff']:.3g} "
                   f"(atol {check['atol']:g})")
    click.echo(f"wrote {count(len(result.written), 'tensor')} ({human_bytes(result.nbytes)}) to {where(result)}")
    if result.skipped_optimizer:
        click.echo(f"left out {result.skipped_optimizer} optimizer tensors (pass --include-optimizer to keep them)")
