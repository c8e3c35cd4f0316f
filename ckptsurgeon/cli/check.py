"""``layout``, ``validate``, ``diff`` and ``stats``: checkpoints in CI, and how weights were initialized."""
from __future__ import annotations

import json
import os

import click

from ..atomic import atomic_output, check_output
from ..check.diff import diff
from ..check.layout import load_layout, make_layout
from ..check.lfs import is_lfs_pointer, lfs_message
from ..check.report import FileReport, render_reports
from ..check.stats import checkpoint_stats
from ..check.validate import Case, validate
from ..errors import CheckpointError, SelectionError, one_line
from .common import allow_expanded_option, dequantize_option, allow_global_option, byte_progress, emit_json, scope_options
from .hints import open_index
from .reports import check_report_paths, expand_inputs, report_options, stdout_formats, write_reports
from .rnn_options import build_options, rnn_options


def _write_text(path: str, text: str, inputs: list[str], force: bool = True) -> None:
    check_output(path, inputs, force)
    with atomic_output(path) as fh:
        fh.write(text.encode())


@click.command("layout")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@click.option("--hash", "hash_", is_flag=True, help="Record each tensor's sha256 too.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the lock file here (default: stdout).")
@rnn_options
@allow_global_option
@allow_expanded_option
@dequantize_option
def layout_cmd(checkpoint, scope, exclude, regex, hash_, output, forget_bias, orientation, gate_names, var_names, allow_globals):
    """Write a layout lock: format, every tensor's path, shape, dtype, and recurrent groups.

    \b
    Examples:
      ckptsurgeon layout model.pt -o model.layout.json
      ckptsurgeon layout model.pt --hash --scope 'encoder/*' -o encoder.layout.json
    """
    index = open_index(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    with byte_progress("hash", quiet=not hash_) as progress:
        layout = make_layout(index, hash=hash_, options=build_options(forget_bias, orientation, gate_names, var_names),
                             progress=progress)
    text = json.dumps(layout, indent=2)
    if output:
        _write_text(output, text + "\n", list(index.files))
        click.echo(f"wrote layout of {len(index)} tensors to {output}", err=True)
    else:
        click.echo(text)


@click.command("validate")
@click.argument("checkpoints", nargs=-1, required=True, metavar="CHECKPOINT...", type=click.Path(dir_okay=True))
@click.option("--layout", "layout_file", type=click.Path(exists=True, dir_okay=False), help="A lock file from 'ckptsurgeon layout'.")
@click.option("--like", "reference", type=click.Path(dir_okay=True), help="A reference checkpoint (any format).")
@scope_options
@click.option("--allow-extra", is_flag=True, help="Tensors and groups the reference lacks are fine.")
@click.option("--allow-missing", multiple=True, metavar="GLOB", help="Reference tensors that may be absent.")
@click.option("--check-finite", is_flag=True, help="Report NaN/inf values (reads every float tensor).")
@click.option("--hash/--no-hash", "hash_", default=None,
              help="Compare values by sha256: with --like, hash both sides; a lock's recorded hashes are compared "
                   "whenever it has them (--no-hash skips them).")
@click.option("--include-optimizer", is_flag=True,
              help="With --like: compare optimizer state too (left out of both sides by default, as in extract).")
@report_options
@rnn_options
@allow_global_option
@allow_expanded_option
@dequantize_option
def validate_cmd(checkpoints, layout_file, reference, scope, exclude, regex, allow_extra, allow_missing, check_finite,
                 hash_, include_optimizer, reports, forget_bias, orientation, gate_names, var_names, allow_globals):
    """Check a checkpoint against a layout lock or a reference; exit 1 on any finding.

    Every CHECKPOINT (several files, or glob patterns such as 'ckpt/**/*.pt', as pre-commit passes them) is
    checked against the same --layout lock or --like reference, and reported per file. Without either,
    each file is checked against the lock beside it: model.pt against model.layout.json (what
    'ckptsurgeon layout model.pt -o model.layout.json' writes), or model.pt.layout.json. A file that cannot
    be read (a Git LFS pointer, a truncated file) or has no lock is a failure of every report, never only
    a message. A lock that records sha256 hashes (layout --hash) has them checked.

    Findings: missing, unexpected, shape, dtype, recurrent (kind, sizes, layout, GRU family),
    nonfinite, hash. Across formats (--like a PyTorch file for a Keras checkpoint) recurrent
    groups are compared by meaning, not names. With --like, optimizer state is left out of both
    sides unless --include-optimizer (a training checkpoint validates against its weights).

    Reports: --report FORMAT[=PATH], repeatable (text, json, github annotations, junit with one test
    case per tensor and check, <skipped/> for checks that did not run); the checkpoint is read once.

    \b
    Examples:
      ckptsurgeon validate model.pt --layout model.layout.json
      ckptsurgeon validate model.keras --like reference.pt --check-finite --report github
      ckptsurgeon validate model.pt --layout model.layout.json --report github --report junit=report.xml
      ckptsurgeon validate 'checkpoints/*.pt' --json        # each against its own NAME.layout.json
    """
    if layout_file and reference:
        raise click.UsageError("give one of --layout FILE or --like REFERENCE, not both")
    files = expand_inputs(checkpoints)
    check_report_paths(reports, files)
    options = build_options(forget_bias, orientation, gate_names, var_names)
    # a lock lists what it lists; against a reference, optimizer state is compared only when asked for
    optimizer = include_optimizer or not reference
    quiet = not (hash_ or check_finite) or stdout_formats(reports) not in ([], ["text"])
    locks: dict[str, tuple[dict | None, str | None]] = {}

    def lock_for(file: str) -> tuple[dict | None, str, str | None]:
        """(layout, its name in reports, why there is none)."""
        if reference:
            name = reference
        else:
            name = layout_file or _lock_beside(file) or ""
            if not name:
                stem = os.path.splitext(file.rstrip("/"))[0]
                return None, f"{stem}.layout.json", (
                    f"{file}: no layout lock beside it; make one with 'ckptsurgeon layout {file} -o {stem}.layout.json', "
                    "or pass --layout LOCK or --like REFERENCE")
        if name not in locks:
            try:
                if reference:
                    ref = open_index(reference, allow_globals=allow_globals).select(
                        *scope, exclude=exclude, regex=regex, include_optimizer=optimizer)
                    with byte_progress("hash reference", quiet=quiet or not hash_) as progress:
                        locks[name] = make_layout(ref, hash=bool(hash_), options=options, progress=progress), None
                else:
                    locks[name] = _load_lock(name), None
            except CheckpointError as exc:
                locks[name] = None, f"the reference could not be read: {one_line(str(exc))}"
        layout, error = locks[name]
        return layout, name, error

    results = []
    for file in files:
        layout, ref_name, error = lock_for(file)
        if layout is None:
            results.append(FileReport(file, ref_name, error=error))
            continue
        cases: list = []
        try:
            index = open_index(file, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex,
                                                                        include_optimizer=optimizer)
            with byte_progress("validate", quiet=quiet) as progress:
                findings = validate(index, layout, allow_extra=allow_extra, allow_missing=allow_missing,
                                    check_finite=check_finite, check_hash=hash_, options=options, progress=progress,
                                    cases=cases)
            results.append(FileReport(file, ref_name, findings, cases))
        except CheckpointError as exc:  # every check of the lock did not run: each a skipped test case
            why = "not run: the file could not be read"
            results.append(FileReport(file, ref_name, error=one_line(str(exc)), cases=[
                Case(t["path"], check, "skipped", why) for t in layout["tensors"] for check in ("present", "shape", "dtype")]))
    if stdout_formats(reports) != ["text"]:  # the text report on stdout already says it
        for r in results:
            if r.error:
                click.echo(f"error: {r.error}", err=True)
    write_reports(reports, lambda fmt: render_reports(results, fmt), files)
    if not all(r.ok for r in results):
        raise SystemExit(1)


def _lock_beside(file: str) -> str | None:
    """``model.layout.json`` (or ``model.pt.layout.json``) beside ``model.pt``; None when there is neither."""
    bare = file.rstrip("/" + os.sep)
    for name in (os.path.splitext(bare)[0] + ".layout.json", bare + ".layout.json"):
        if os.path.isfile(name):
            return name
    return None


def _load_lock(path: str) -> dict:
    if is_lfs_pointer(path):
        raise SelectionError(lfs_message(path))
    return load_layout(path)


@click.command("diff")
@click.argument("a", type=click.Path(dir_okay=True))
@click.argument("b", type=click.Path(dir_okay=True))
@scope_options
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance for value changes.")
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance for value changes.")
@rnn_options
@click.option("--json", "as_json", is_flag=True, help="The differences as JSON.")
@allow_global_option
@allow_expanded_option
@dequantize_option
def diff_cmd(a, b, scope, exclude, regex, atol, rtol, forget_bias, orientation, gate_names, var_names, as_json, allow_globals):
    """Compare two checkpoints (any formats): tensors by path, recurrent groups by what they compute.

    Groups pair by scope, then normalized scope, then kind and sizes when only one group on each
    side fits (never file order); each pair says how it was made. A group on one side only is a
    difference. Paired groups compare the GRU family and activations, then per gate the kernels and
    the biases as the cell uses them (an LSTM only adds b_ih + b_hh, so a bias moved between them is
    the same function), then the outputs of both on the same random inputs. The last line is the
    verdict: identical, identical within tolerance, same function (stored differently), or different.
    Exit 1 only if they are different beyond --atol/--rtol.

    \b
    Examples:
      ckptsurgeon diff before.pt after.pt --atol 1e-6
      ckptsurgeon diff model.ckpt converted.safetensors --scope LSTMcell --json
    """
    options = build_options(forget_bias, orientation, gate_names, var_names)
    x = open_index(a, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    y = open_index(b, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    result = diff(x, y, atol=atol, rtol=rtol, options=options)
    if as_json:
        emit_json(result)
    else:
        _print_diff(result)
    if not result["equivalent"]:
        raise SystemExit(1)


def _sizes(g: dict) -> str:
    proj = f", proj {g['proj_size']}" if g.get("proj_size") else ""
    return (f"{g['kind'].upper()} input {g['input_size']}, hidden {g['hidden_size']}{proj}, "
            f"{g['num_layers']} layer(s) x {g['directions']} direction(s)")


def _print_diff(result: dict) -> None:
    for path in result["only_in_a"]:
        click.echo(f"only in A  {path}")
    for path in result["only_in_b"]:
        click.echo(f"only in B  {path}")
    for g in result["groups_only_in_a"]:
        click.echo(f"only in A  group {g['scope'] or '/'} ({g['variant']}: {_sizes(g)})")
    for g in result["groups_only_in_b"]:
        click.echo(f"only in B  group {g['scope'] or '/'} ({g['variant']}: {_sizes(g)})")
    for c in result["changed"]:
        click.echo(f"changed    {c['path']}: {c['a'][0]} {c['a'][1]} -> {c['b'][0]} {c['b'][1]}")
    for v in result["values"]:
        tol = (" (within tolerance)" if v["within_tolerance"] else
               f" (judged by what group {v['group']} computes)" if "group" in v else "")
        click.echo(f"values     {v['path']}: max abs {v['max_abs']:.3g}, max rel {v['max_rel']:.3g}{tol}")
    for g in result["groups"]:
        name = f"{g['a'] or '/'} vs {g['b'] or '/'}"
        click.echo(f"paired     {name} by {g['paired_by']}")
        if g.get("mismatch"):
            click.echo(f"group      {name}: {g['mismatch']}")
        for s in g["semantics"]:
            click.echo(f"group      {name}: {s['property']} {s['a']} vs {s['b']}")
        for c in g["constants"]:
            click.echo(f"constant   {name}: {c['property']} {c['a']:g} vs {c['b']:g} ({c['note']})")
        for row in g["gates"]:
            click.echo(f"gate       {name}: layer {row['layer']} {row['direction']} "
                       f"{row['gate']} {row['part']}: max abs {row['max_abs']:.3g}")
        if g.get("bias_rounding"):
            click.echo(f"biases     {name}: split differently between input and recurrent bias; "
                       f"their sums agree to rounding ({g['bias_rounding']:.3g})")
        if g.get("output_max_abs") is not None:
            click.echo(f"outputs    {name}: max abs {g['output_max_abs']:.3g} on the same random inputs")
    click.echo(result["verdict"] + (": stored differently, computes the same" if result["verdict"] == "same function" else ""))


@click.command("stats")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@scope_options
@click.option("--plot", type=click.Path(dir_okay=False), help="Write per-gate histograms to this PNG (needs matplotlib).")
@click.option("--include-optimizer", is_flag=True, help="Also optimizer state (left out by default, as in extract).")
@rnn_options
@click.option("--json", "as_json", is_flag=True, help="Every statistic as JSON.")
@allow_global_option
@allow_expanded_option
@dequantize_option
def stats_cmd(checkpoint, scope, exclude, regex, plot, include_optimizer, forget_bias, orientation, gate_names, var_names,
              as_json, allow_globals):
    """Statistics per tensor and per gate, and a best guess of how each was initialized.

    Guesses: zeros, constant (e.g. Keras unit_forget_bias), PyTorch default U(+-1/sqrt(H)),
    Glorot/He/LeCun uniform and normal, orthogonal, truncated normal (mean, stddev),
    or "not an initializer (trained)"; each with its evidence. Tensors of recurrent groups are
    judged in their group's context. Small tensors (under 32 values) list every initializer that
    fits ("one of: ..."). Optimizer state is left out unless --include-optimizer. Also lists
    recurrent groups holding identical values.

    \b
    Examples:
      ckptsurgeon stats model.pt --scope 'encoder/*'
      ckptsurgeon stats model.keras --json
      ckptsurgeon stats model.ckpt --plot gates.png
    """
    options = build_options(forget_bias, orientation, gate_names, var_names)
    index = open_index(checkpoint, allow_globals=allow_globals).select(*scope, exclude=exclude, regex=regex)
    with byte_progress("stats", quiet=as_json) as progress:
        result = checkpoint_stats(index, options, include_optimizer=include_optimizer, progress=progress)
    if plot:
        from ..check.plot import plot_gates

        check_output(plot, list(index.files), True)
        with atomic_output(plot) as fh:
            plot_gates(index, result, fh, options)
    if as_json:
        emit_json(result)
        return
    for t in result["tensors"]:
        orth = f" orth {t['orthogonality']:.2g}" if t["orthogonality"] is not None else ""
        click.echo(f"{t['path']}  {'x'.join(map(str, t['shape'])) or 'scalar'}  mean {t['mean']:.3g} std {t['std']:.3g} "
                   f"min {t['min']:.3g} max {t['max']:.3g} zeros {t['zeros']:.0%} L2 {t['l2']:.3g}{orth}  -> {t['init']}")
    for g in result["groups"]:
        click.echo(f"{g['scope'] or '/'} ({g['variant']}) per gate:")
        for r in g["gates"]:
            click.echo(f"  l{r['layer']} {r['direction']:<8} {r['gate']:<7} {r['part']:<16} mean {r['mean']:+.3g} std {r['std']:.3g}"
                       f"  -> {r['init']}")
    for scopes in result["identical_groups"]:
        click.echo(f"identical values: {' == '.join(scopes)}")
    if result["left_out_optimizer"]:
        click.echo(f"left out {result['left_out_optimizer']} optimizer tensors (pass --include-optimizer to see them)")
    if plot:
        click.echo(f"wrote {plot}")
