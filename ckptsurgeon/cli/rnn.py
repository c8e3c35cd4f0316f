"""``ckptsurgeon rnn`` and ``ckptsurgeon verify``: recurrent groups, and numeric equivalence."""
from __future__ import annotations

import click

from ..rnn.group import RecurrentGroup
from ..rnn.onnx_graph import not_converted
from ..rnn.recognize import recognize
from ..rnn.verify import PROVES, verify
from .common import allow_expanded_option, allow_global_option, emit_json, scope_options
from .hints import open_index
from .rnn_options import build_options, fact_options, rnn_options

# facts shown per group, in this order, when the group has a provenance for them
_SHOWN = ("reset_after", "recurrent_activation", "activation", "forget_bias", "cell_clip", "proj_clip", "topology",
          "go_backwards", "merge_mode", "orientation", "clip", "input_forget")


def _value(g: RecurrentGroup, fact: str) -> str:
    value = getattr(g, fact)
    if fact == "reset_after":
        return g.family or "unknown"
    if fact == "clip" and value is None and fact in g.provenance and not g.provenance[fact].startswith("missing"):
        return "none"
    if value is None:
        return "none (no clipping)" if fact in ("cell_clip", "proj_clip") else "unknown"
    if fact.endswith("activation"):
        from ..rnn.activations import formula

        return f"{value} = {formula(value)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _summary(g: RecurrentGroup) -> str:
    sizes = f"input {g.input_size}, hidden {g.hidden_size}" + (f", proj {g.proj_size}" if g.proj_size else "")
    extra = [f"{g.num_layers} layers" if g.num_layers > 1 else "", "bidirectional" if g.directions == 2 else "",
             "peepholes" if g.peepholes else "", f"bias: {g.bias}"]
    return f"{g.scope or '/'}: {g.kind.upper()} [{g.variant}] {sizes}; " + ", ".join(e for e in extra if e)


@click.command("rnn")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@rnn_options
@fact_options
@click.option("--json", "as_json", is_flag=True, help="The groups as a JSON list.")
@allow_global_option
def rnn_cmd(checkpoint, scope, exclude, regex, forget_bias, orientation, gate_names, var_names, facts, as_json,
            allow_globals):
    """Find LSTM/GRU parameter groups; show their layout and every computation-relevant fact with its source.

    \b
    Sources: file (names, shapes, stored config), version default (the rule is named),
    flag (you declared it), assumed / missing (conversions refuse: the flag to pass is named).

    \b
    Examples:
      ckptsurgeon rnn model.pt
      ckptsurgeon rnn model.ckpt --scope 'LSTMcell/*' --json
      ckptsurgeon rnn model.ckpt --forget-bias 0.0
      ckptsurgeon rnn old_keras.h5 --recurrent-activation hard_sigmoid_keras2
    """
    index = open_index(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    options = build_options(forget_bias, orientation, gate_names, var_names, **facts)
    groups = recognize(index, options)
    if as_json:
        emit_json([g.describe() for g in groups])
        return
    others = not_converted(index)
    if not groups and not others:
        click.echo("no recurrent groups found (groups are recognized from the file's model config or graph, and from the "
                   "names and shapes of the PyTorch, Keras, TF1, ONNX, Flax, Paddle and TFLite layouts; tensors named "
                   "otherwise can be renamed into one first, e.g. "
                   "`ckptsurgeon extract FILE --map '{m}_w_{x}={m}/weight_{x}' -o renamed.safetensors`)")
        for note in index.notes:  # a TFLite WHILE loop computing a GRU op by op: say why it is no group
            if "recurrent loop" in note:
                click.echo(f"note: {note}")
        return
    for g in groups:
        click.echo(_summary(g))
        for fact in [f for f in _SHOWN if f in g.provenance] + [f for f in g.provenance if f not in _SHOWN]:
            value = _value(g, fact) if hasattr(g, fact) else "not usable"
            click.echo(f"  {fact}: {value}  ({g.provenance[fact]})")
        for note in g.notes:
            click.echo(f"  note: {note}")
    for scope, op, members, why in others:
        tensors = f" ({', '.join(members)})" if members else ""
        click.echo(f"{scope}: {op} [ONNX {op} node]{tensors}: not converted: {why}")


@click.command("verify")
@click.argument("source", type=click.Path(dir_okay=True))
@click.argument("converted", type=click.Path(dir_okay=True))
@scope_options
@click.option("--atol", type=float, default=1e-5, show_default=True, help="Largest allowed output difference.")
@rnn_options
@fact_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group pair.")
@allow_global_option
@allow_expanded_option
def verify_cmd(source, converted, scope, exclude, regex, atol, forget_bias, orientation, gate_names, var_names, facts,
               as_json, allow_globals):
    """Run both checkpoints' recurrent groups on the same random inputs; exit 1 above --atol.

    Each side runs its own semantics (activations, GRU family, forget_bias, topology, go_backwards);
    the fact flags apply to SOURCE only (CONVERTED states its own facts when ckptsurgeon wrote it).
    A pass proves the conversion reproduces SOURCE as ckptsurgeon reads it; each fact that reading
    rests on is printed with where it came from (the file's model config, its layout, a documented
    version default, a flag). Only the framework that wrote SOURCE can confirm the reading itself.

    \b
    Examples:
      ckptsurgeon verify model.ckpt cell.safetensors --scope LSTMcell
      ckptsurgeon verify model.pt converted.h5 --atol 1e-6 --json
    """
    opts = build_options(forget_bias, orientation, gate_names, var_names, **facts)
    a = open_index(source, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    b = open_index(converted, allow_globals=allow_globals)
    rows = verify(a, b, atol=atol, options_a=opts, options_b=build_options(None, orientation, gate_names, var_names))
    if as_json:
        emit_json([r.as_dict() for r in rows])
    else:
        for r in rows:
            why = f" ({r.reason})" if r.reason else ""
            click.echo(f"{'ok  ' if r.ok else 'FAIL'} {r.source or '/'} -> {r.converted or '/'} ({r.kind}): "
                       f"max abs diff {r.max_abs_diff:.3g}{why}")
            for fact, value in r.facts.items():
                click.echo(f"       {fact}: {value}")
        if rows and all(r.ok for r in rows):
            click.echo(f"what this proves: {PROVES}.")
    if not all(r.ok for r in rows):
        raise SystemExit(1)
