"""``ckptsurgeon remap`` and ``ckptsurgeon graft``."""
from __future__ import annotations

import click

from .. import api
from ..formats import WRITERS, writer_for
from ..graft import graft
from ..remap import Remap, load_rules, parse_map
from ..remap.verify import uses_gates, verify_plan, write_plan
from .common import allow_expanded_option, allow_global_option, byte_progress, emit_json, fail, scope_options
from .hints import open_index
from .rnn_options import build_options, fact_options, rnn_options


@click.command("remap")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@click.option("--rules", type=click.Path(exists=True, dir_okay=False), help="A TOML file of [[rule]] tables.")
@click.option("--map", "maps", multiple=True, metavar="SRC=DST", help="A rule without a file: --map 'LSTMcell/*=encoder/lstm/*'.")
@click.option("--drop-unmatched", is_flag=True, help="Leave out tensors no rule matches (kept by default).")
@click.option("-o", "--output", type=click.Path(), help="Output file, or folder with --max-shard-size (not needed with --dry-run).")
@click.option("--max-shard-size", default=None, metavar="SIZE", help="Write Hugging Face shards of at most SIZE (5GB) into the folder -o.")
@click.option("--format", "fmt", type=click.Choice(sorted(WRITERS)), default=None, help="Output format (default: from the suffix).")
@click.option("--dry-run", is_flag=True, help="Print the plan (source -> target, shapes, dtypes, transforms); write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
@click.option("--no-verify", is_flag=True, help="With a gates transform: skip running the result's recurrent groups against the source's.")
@click.option("--atol", type=float, default=1e-5, show_default=True, help="Tolerance of that verification.")
@rnn_options
@allow_global_option
@allow_expanded_option
def remap_cmd(checkpoint, scope, exclude, regex, rules, maps, drop_unmatched, output, max_shard_size, fmt, dry_run, force,
              as_json, no_verify, atol, forget_bias, orientation, gate_names, var_names, allow_globals):
    """Rename, reshape, cast, split or reorder tensors by rules: plan first, then write.

    \b
    Examples:
      ckptsurgeon remap model.ckpt --map 'LSTMcell/*=encoder/lstm/*' -o out.safetensors
      ckptsurgeon remap model.pt --rules rules.toml --dry-run
      ckptsurgeon remap model.pt --rules rules.toml -o out.npz --json

    \b
    A rules file (TOML):
      [[rule]]
      source = "encoder/layer_{n}/kernel"       # glob with {name} captures (or: regex = '...')
      target = "rnn.weight_ih_l{n}"
      transforms = [{op = "transpose"}, {op = "gates", kind = "lstm", from = "keras", to = "torch"}]
      required = true
      [[rule]]
      source = "optimizer/**"
      drop = true
    Transforms: transpose/permute (axes), reshape (shape), cast (dtype), slice (axis, start, stop),
    split (axis, parts, index), concat (axis, with), gates (kind, from, to, axis, hidden), scale (by), offset (by).
    With kind = "gru" and tf1 on one side, gates maps TF1's [r, u] gates tensor (hidden required);
    the candidate is a separate tensor in TF1 and gets its own rule.

    When a rule has a gates transform, the result is verified before it is written: its recurrent
    groups are paired with the source's and run on the same random inputs (--no-verify skips).
    """
    rule_list = parse_map(maps) + (load_rules(rules) if rules else [])
    if not rule_list:
        raise click.UsageError("give --rules FILE or at least one --map SRC=DST")
    index = open_index(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    plan = Remap(rule_list, keep_unmatched=not drop_unmatched).plan(index)
    if dry_run or as_json:
        click.echo(plan.to_json() if as_json else plan.table())
    if dry_run:
        return
    if not output:
        raise click.UsageError("-o/--output is required unless --dry-run")
    verify_atol = atol if uses_gates(rule_list) and not no_verify else None
    options = build_options(forget_bias, orientation, gate_names, var_names)
    metadata = {"source": checkpoint, "remap": " ".join(maps) or str(rules)}
    if not max_shard_size and writer_for(output, fmt).name == "npz":
        metadata = {}  # npz has no hidden place: a __metadata__ member would be one more array for numpy.load users
    if max_shard_size:
        report = verify_plan(plan, atol=verify_atol, options=options) if verify_atol is not None else None
        res = api.save_sharded(plan.lazy(), output, max_shard_size=max_shard_size, format=fmt, force=force,
                               inputs=index.files, metadata=metadata)
        path = f"{res.index or res.files[0]} ({len(res.files)} files)"
    else:
        path, report = write_plan(plan, output, format=fmt, force=force, inputs=index.files, metadata=metadata,
                                  verify_atol=verify_atol, options=options)
    echo = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    for check in report.checks if report else []:
        echo(f"verified {check['source'] or '/'} -> {check['converted'] or '/'} (paired by {check['paired_by']}): "
             f"max abs diff {check['max_abs_diff']:.3g}")
    for line in report.unverified if report else []:
        echo(f"not verified: {line}")
    if not as_json:
        click.echo(f"wrote {len(plan.mapped)} tensors to {path}")


@click.command("graft")
@click.argument("source", type=click.Path(dir_okay=True))
@click.option("--into", "template", required=True, type=click.Path(dir_okay=True),
              help="The downstream model's own checkpoint; the output has exactly its tensors, names and format.")
@click.option("-o", "--output", type=click.Path(),
              help="Output file; a prefix for a TensorFlow template; a folder for a sharded template or a SavedModel "
                   "(not needed with --dry-run).")
@scope_options
@click.option("--map", "maps", multiple=True, metavar="SRC=DST", help="Pair scopes or tensors: --map 'LSTMcell/*=cell/*'.")
@click.option("--rules", type=click.Path(exists=True, dir_okay=False), help="A TOML rules file (see remap --help).")
@click.option("--strict", is_flag=True, help="Untouched template tensors or unused source tensors are errors.")
@click.option("--dry-run", is_flag=True, help="Report what would be replaced; write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--allow-approx", is_flag=True, help="Graft even when the template computes other activations; "
              "report the measured error.")
@click.option("--allow-concat-merge", is_flag=True,
              help="Graft a Keras Bidirectional that merges with sum/mul/ave into a template that does not; you merge "
                   "the directions downstream.")
@click.option("--allow-aliased", is_flag=True,
              help="Write even when a replaced tensor shares storage with other template tensors; each one it changes is reported.")
@click.option("--verify/--no-verify", "verify_", default=True, show_default=True,
              help="Run each grafted template group against the source group first; write nothing above --atol.")
@click.option("--atol", type=float, default=1e-5, show_default=True, help="Tolerance for --verify.")
@rnn_options
@fact_options
@click.option("--template-fact", "template_facts", multiple=True, metavar="NAME=VALUE",
              help="A fact of TEMPLATE's recurrent layers that its file does not state (weights only, a TF1 Saver "
                   "bundle): activation, recurrent_activation, forget_bias, go_backwards, merge_mode, reset_after, "
                   "cell_clip, proj_clip. Never overrides what the file states. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@allow_expanded_option
def graft_cmd(source, template, output, scope, exclude, regex, maps, rules, strict, dry_run, force, allow_approx,
              allow_concat_merge, allow_aliased, verify_, atol, forget_bias, orientation, gate_names, var_names, facts,
              template_facts, as_json):
    """Write SOURCE's tensors into a copy of the downstream model's checkpoint TEMPLATE.

    Recurrent groups are converted to the template's layout (TF1 -> PyTorch, PyTorch -> Keras ...) with
    the template group's own constants and activations, and verified (--no-verify skips it);
    everything not replaced stays byte-identical to TEMPLATE. Exit 1 when nothing would be replaced.
    The fact flags (--forget-bias, --recurrent-activation ...) describe SOURCE; --template-fact describes
    TEMPLATE where its file does not (a TF1 LSTMCell built with forget_bias=0 stores no forget_bias).

    \b
    Examples:
      ckptsurgeon graft pretrained.ckpt --into downstream.pt -o grafted.pt --scope LSTMcell
      ckptsurgeon graft lstm.pt --into model.weights.h5 -o out.weights.h5 --map 'rnn=bi'
      ckptsurgeon graft model.ckpt --into init.pt --map 'LSTMcell/*=encoder.cell/*' --dry-run --json
      ckptsurgeon graft lstm2.pt --into model.weights.h5 -o out.weights.h5 --map 'rnn=bi1,bi2'   # a stack into 2 layers
      ckptsurgeon graft pretrained.pt --into tf_ckpt/ -o out/model.ckpt     # TF1 Saver / TF2 checkpoint template
      ckptsurgeon graft pretrained.pt --into saved_model/ -o grafted_model/ # a whole SavedModel
      ckptsurgeon graft lstm.pt --into tf1/model.ckpt -o out/model.ckpt --template-fact forget_bias=0
    """
    if not dry_run and not output:
        raise click.UsageError("-o/--output is required unless --dry-run")
    if exclude or regex:
        fail("graft takes --scope globs only")
    options = build_options(forget_bias, orientation, gate_names, var_names, allow_approx=allow_approx,
                            allow_concat_merge=allow_concat_merge, **facts)
    with byte_progress("graft", quiet=as_json or dry_run) as progress:
        report = graft(source, template, output, scope=scope, map=maps, rules=rules, strict=strict, dry_run=dry_run,
                       force=force, options=options, verify_atol=atol if verify_ else None, allow_aliased=allow_aliased,
                       progress=progress, template_facts=list(template_facts) or None)
    if as_json:
        emit_json(report.as_dict())
        return
    for line in report.groups:
        click.echo(f"matched {line}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    for check in report.checks:
        click.echo(f"verified {check.source or '/'} -> {check.converted or '/'}: max abs diff {check.max_abs_diff:.3g} "
                   f"(atol {check.atol:g})")
    for row in report.replaced:
        cast = f" (cast from {row.cast_from})" if row.cast_from else ""
        click.echo(f"replace {row.target} <- {row.source}{cast}")
    for alias in report.aliased:
        click.echo(f"aliased {alias['path']} changes too (shares storage with {', '.join(alias['shares_with'])})")
    aliased = f"{len(report.aliased)} changed through shared storage, " if report.aliased else ""
    click.echo(f"{len(report.replaced)} replaced, {aliased}{len(report.untouched)} template tensors untouched, "
               f"{len(report.unused)} source tensors unused" + ("" if dry_run else f"; wrote {report.out}"))
