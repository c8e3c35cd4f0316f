"""``ckptsurgeon rnn`` and ``ckptsurgeon verify``: recurrent groups, and numeric equivalence."""
from __future__ import annotations

import click

from .. import api
from ..rnn.recognize import recognize
from ..rnn.verify import verify
from .common import allow_expanded_option, allow_global_option, emit_json, scope_options
from .rnn_options import build_options, rnn_options


@click.command("rnn")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@rnn_options
@click.option("--json", "as_json", is_flag=True, help="The groups as a JSON list.")
@allow_global_option
def rnn_cmd(checkpoint, scope, exclude, regex, forget_bias, orientation, gate_names, var_names, as_json, allow_globals):
    """Find LSTM/GRU parameter groups and describe their layout.

    \b
    Examples:
      ckptsurgeon rnn model.pt
      ckptsurgeon rnn model.ckpt --scope 'LSTMcell/*' --json
      ckptsurgeon rnn model.ckpt --forget-bias 0.0
    """
    index = api.open(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    groups = recognize(index, build_options(forget_bias, orientation, gate_names, var_names))
    if as_json:
        emit_json([g.describe() for g in groups])
        return
    if not groups:
        click.echo("no recurrent groups found")
        return
    for g in groups:
        sizes = f"input {g.input_size}, hidden {g.hidden_size}" + (f", proj {g.proj_size}" if g.proj_size else "")
        extra = [f"{g.num_layers} layers" if g.num_layers > 1 else "", "bidirectional" if g.directions == 2 else "",
                 "peepholes" if g.peepholes else "", f"bias: {g.bias}",
                 ("reset-after" if g.reset_after else "reset-before") if g.kind == "gru" else "",
                 f"recurrent_activation {g.recurrent_activation} ({g.activation_source})",
                 f"forget_bias {g.forget_bias:g} folded in" if g.forget_bias else ""]
        click.echo(f"{g.scope or '/'}: {g.kind.upper()} [{g.variant}] {sizes}; " + ", ".join(e for e in extra if e))
        for note in g.notes:
            click.echo(f"  note: {note}")


@click.command("verify")
@click.argument("source", type=click.Path(dir_okay=True))
@click.argument("converted", type=click.Path(dir_okay=True))
@scope_options
@click.option("--atol", type=float, default=1e-5, show_default=True, help="Largest allowed output difference.")
@rnn_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group pair.")
@allow_global_option
@allow_expanded_option
def verify_cmd(source, converted, scope, exclude, regex, atol, forget_bias, orientation, gate_names, var_names,
               as_json, allow_globals):
    """Run both checkpoints' recurrent groups on the same random inputs; exit 1 above --atol.

    \b
    Examples:
      ckptsurgeon verify model.ckpt cell.safetensors --scope LSTMcell
      ckptsurgeon verify model.pt converted.h5 --atol 1e-6 --json
    """
    opts = build_options(forget_bias, orientation, gate_names, var_names)
    a = api.open(source, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    b = api.open(converted, allow_globals=allow_globals)
    rows = verify(a, b, atol=atol, options_a=opts, options_b=opts)
    if as_json:
        emit_json([r.as_dict() for r in rows])
    else:
        for r in rows:
            click.echo(f"{'ok  ' if r.ok else 'FAIL'} {r.source or '/'} -> {r.converted or '/'} ({r.kind}): "
                       f"max abs diff {r.max_abs_diff:.3g}")
    if not all(r.ok for r in rows):
        raise SystemExit(1)
