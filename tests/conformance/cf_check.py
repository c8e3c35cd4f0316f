"""The conformance check of one source against every target: each case ends exact or refused by a rule.

For each recurrent group of the source and each target:
1. the reference cells run the group as ckptsurgeon recognized it: they must compute the source
   framework's own outputs (so ``verify`` is itself checked against the framework);
2. the group is converted as a user would (``ckptsurgeon.extract(..., to=target)`` or the CLI, into a
   file of the drawn format; ckptsurgeon verifies it first);
3. a refusal must be one the rule table expects, for exactly the reasons it expects, each named in the
   message; a conversion the table expects to be refused fails, with how far its outputs are off;
4. the written file is read with the format's own library and loaded into the real target framework
   (PyTorch modules with ``strict=True``, Keras 3 layers built from the reported configuration,
   onnxruntime nodes with the reported attributes); its outputs must equal the source's (1e-5);
   flax and paddle run in their own venv (cf_fw.py: one persistent process per session; their files are
   ``.msgpack`` and ``.pdparams``, whatever format was drawn): flax.linen models restored from the file
   (``from_state_dict``, every parameter with its shape and dtype), ``paddle.nn.LSTM``/``GRU`` taking the
   file's entries with ``set_state_dict`` (no missing or unexpected key);
   tf1 and gates have no runtime here: their files are read back by ckptsurgeon and run by the reference
   cells (the tf1 target is proven against TensorFlow by the recorded ``tf1_targets`` fixtures);
5. round trip: the file converted back to the source's layout holds the same values (1e-6) and, loaded
   into the source framework, computes the source's outputs again.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import ckptsurgeon
import cf_fw
from cf_frameworks import (keras_layer, keras_weights, load_torch_state, merge, read_output, relative,
                           run_keras_layer, run_onnx, run_torch, torch_module)
from cf_rules import expected, match_reasons
from cf_sources import Layer, Source
from ckptsurgeon.errors import CheckpointError
from ckptsurgeon.rnn import ConversionError, ConvertOptions, recognize, refusals, run_stack

__all__ = ["Outcome", "check_source", "Mismatch", "FORMATS"]

FORMATS = ("safetensors", "npz", "h5", "pt")
ATOL, VALUES_ATOL = 1e-5, 1e-6


class Mismatch(AssertionError):
    """A silent wrong result, an unexpected refusal or a refusal for other reasons than the rule table's."""


@dataclass
class Outcome:
    source: str
    scope: str
    target: str
    status: str  # exact | refused
    rules: list[str] = field(default_factory=list)
    max_diff: float | None = None  # exact: largest output difference in the real target framework (None: no runtime)


class _Refused(Exception):
    pass


def _close(got: np.ndarray, want: np.ndarray, atol: float) -> float:
    """Largest difference, scaled for float32 outputs larger than 1; inf on a shape mismatch."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    return float(np.max(np.abs(got - want))) / scale if got.size else 0.0


_FLAG = {"forget_bias": "--forget-bias", "orientation": "--orientation", "activation": "--activation",
         "recurrent_activation": "--recurrent-activation", "merge_mode": "--merge-mode", "cell_clip": "--cell-clip",
         "proj_clip": "--proj-clip"}


def _cli_flags(options: dict) -> list[str]:
    args: list[str] = []
    for key, value in options.items():
        if value is None:
            continue
        if key == "reset_after":
            args.append("--reset-after" if value else "--reset-before")
        elif key == "go_backwards":
            args.append("--go-backwards" if value else "--no-go-backwards")
        elif key == "allow_concat_merge":
            args += ["--allow-concat-merge"] if value else []
        else:
            args += [_FLAG[key], str(value)]
    return args


def convert_file(path: Path, scope: str, target: str, out: Path, *, via: str, fmt: str, options: dict) -> dict:
    """Convert one group as a user would; returns the report (``output``: the self-description, ``checks``)."""
    if via == "cli":
        from click.testing import CliRunner

        from ckptsurgeon.cli import cli

        args = ["extract", str(path), "--to", target, "-o", str(out), "--format", fmt, "--json"]
        args += (["--scope", scope] if scope else []) + _cli_flags(options)
        res = CliRunner().invoke(cli, args)
        if res.exit_code == 1 and "cannot convert" in res.output:
            raise _Refused(res.output)
        if res.exit_code != 0:
            raise Mismatch(f"ckptsurgeon {' '.join(args)} failed (exit {res.exit_code}): {res.output}")
        data = json.loads(res.output)
        return {"output": data["converted"][0]["output"], "checks": data["checks"], "notes": data["converted"][0]["notes"]}
    try:
        res = ckptsurgeon.extract(path, out, scope=[scope] if scope else [], to=target, options=ConvertOptions(**options),
                                  format=fmt)
    except ConversionError as exc:
        raise _Refused(str(exc)) from None
    return {"output": res.converted[0]["output"], "checks": res.checks, "notes": res.converted[0]["notes"]}


# --- running the written file in the real target framework ---------------------------------------------------

def _layers(rel: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    if n == 1:
        return [rel]
    return [{k[len(f"layer_{i}/"):]: v for k, v in rel.items() if k.startswith(f"layer_{i}/")} for i in range(n)]


# the file format each target is written in when it has one of its own (else the drawn format)
TARGET_FORMATS = {"flax": ("flax", ".msgpack"), "paddle": ("paddle", ".pdparams")}


def run_target(target: str, out: Path, scope: str, x: np.ndarray, stated: dict | None = None) -> tuple[np.ndarray | None, dict]:
    """The written file in the real target framework, built from the file's own self-description (``stated``: the
    conversion's report of it, for paddle, whose files hold none; flax's must be the one the file holds)."""
    if target in cf_fw.FW_TARGETS:
        assert stated is not None, f"{target}: run_target needs the conversion's self-description"
        y, meta = cf_fw.run(target, out, scope, x, stated)
        if target == "flax":
            held = json.loads(meta[f"rnn:{scope}"])
            assert held == json.loads(json.dumps(stated)), f"{out}: the file's rnn:{scope} is not the report's"
        return y, stated
    arrays, meta = read_output(out)
    desc = json.loads(meta[f"rnn:{scope}"])
    rel = relative(arrays, scope)
    kind, D = desc["kind"], desc["directions"]
    if target in ("torch", "torch-cell"):
        cell = target == "torch-cell"
        module = torch_module(kind, desc["input_size"], desc["hidden_size"], desc["num_layers"], D == 2,
                              bias=any("bias_ih" in k for k in rel), proj=desc["proj_size"], cell=cell)
        load_torch_state(module, rel)
        return run_torch(module, x), desc
    if target == "keras":
        y = x
        for sub in _layers(rel, desc["num_layers"]):
            use_bias = any(k.endswith("cell/bias") for k in sub)
            layer = keras_layer(kind, desc["hidden_size"], activation=desc["activation"],
                                recurrent_activation=desc["recurrent_activation"], use_bias=use_bias,
                                reset_after=desc.get("reset_after", True), go_backwards=desc["go_backwards"],
                                bidirectional=D == 2, merge_mode=desc.get("merge_mode", "concat"))
            y = run_keras_layer(layer, y, keras_weights(sub, D == 2, use_bias))
        return y, desc
    if target == "onnx":
        attrs, y = desc["onnx"], x
        for sub in _layers(rel, desc["num_layers"]):
            got = run_onnx(kind, sub, attrs, y)
            if "activations" not in attrs:  # onnx.reference computes only the default activations
                again = run_onnx(kind, sub, attrs, y, runtime="reference")
                assert _close(again, got, ATOL) <= ATOL, "onnxruntime and onnx.reference disagree"
            y = got
        return (y[::-1] if desc["go_backwards"] else y), desc  # ONNX reverse: Y aligned with X; Keras: last step first
    return None, desc


# --- values ---------------------------------------------------------------------------------------------------

def effective(stack) -> list[np.ndarray]:
    """What a stack computes with, biases as its family uses them (summed where only the sum matters)."""
    out = []
    for layer in stack:
        for c in layer:
            b_ih, b_hh = (np.asarray(b, np.float64) for b in c.biases())
            b, extra = b_ih + b_hh, np.zeros(0)
            if c.kind == "gru" and c.reset_after:
                H = c.hidden
                b[2 * H:], extra = b_ih[2 * H:], b_hh[2 * H:]
            out += [np.asarray(c.w_ih, np.float64), np.asarray(c.w_hh, np.float64), b, extra,
                    np.zeros(0) if c.peepholes is None else np.asarray(c.peepholes, np.float64),
                    np.zeros(0) if c.w_hr is None else np.asarray(c.w_hr, np.float64)]
    return out


def _values_diff(a, b) -> float:
    ea, eb = effective(a), effective(b)
    if len(ea) != len(eb) or any(x.shape != y.shape for x, y in zip(ea, eb)):
        return float("inf")
    return max((float(np.max(np.abs(x - y))) for x, y in zip(ea, eb) if x.size), default=0.0)


# --- the check ------------------------------------------------------------------------------------------------

def _as_source_returns(y: np.ndarray, layer: Layer, target: str, merged: bool = False) -> np.ndarray:
    """A target's output as the source returned it: Keras merges the directions (the user does it downstream);
    ``merged``: the target's model merged them already (its self-description states the merge_mode)."""
    t = layer.truth
    if target != "keras" and not merged and t.directions == 2 and t.merge_mode in ("sum", "mul", "ave"):
        return merge(t.merge_mode, y, layer.width)
    return y


def _pick(groups, layer: Layer, k: int):
    if layer.scope is None:
        return groups[k] if k < len(groups) else None
    return next((g for g in groups if g.scope == layer.scope), None)


def _fmt_of(source: Source) -> tuple[str, str]:
    if source.config is not None:
        return source.config.out_format, source.config.via
    h = zlib.crc32(source.label.encode())
    return FORMATS[h % len(FORMATS)], ("cli" if h % 3 == 0 else "api")


def check_source(source: Source, targets, tmp: Path) -> list[Outcome]:
    """Every group of ``source`` against every target; raises Mismatch (with the configuration) on any failure."""
    index = ckptsurgeon.open(source.path)
    fmt, via = _fmt_of(source)
    outcomes = []
    base = recognize(index, ConvertOptions(**source.options))
    if len(base) != len(source.layers):
        raise Mismatch(f"{source.label}: {len(base)} groups recognized ({[g.scope for g in base]}), "
                       f"{len(source.layers)} built")
    for k, layer in enumerate(source.layers):
        options = {**source.options, **layer.options}
        group = _pick(recognize(index, ConvertOptions(**options)), layer, k)
        if group is None:
            raise Mismatch(f"{source.label}: no group {layer.scope!r} recognized (found {[g.scope for g in base]})")
        where = f"{source.label} group {group.scope or '/'}"
        if not expected(layer.truth, "gates") and layer.want is not None:
            ref = _as_source_returns(run_stack(group.cells(), layer.x), layer, "reference")
            err = _close(ref, layer.want, ATOL)
            if err > ATOL:
                raise Mismatch(f"{where}: the reference cells compute {err:.3g} away from the source framework")
        for target in targets:
            outcomes.append(_check_one(source, layer, group, target, options, tmp / f"g{k}-{target}", fmt, via, where))
    return outcomes


def _check_one(source: Source, layer: Layer, group, target: str, options: dict, stem: Path, fmt: str, via: str,
               where: str) -> Outcome:
    want_rules = expected(layer.truth, target)
    out_fmt, suffix = TARGET_FORMATS.get(target, (fmt, "." + fmt))
    out = stem.with_suffix(suffix)
    allow_merge = bool(options.get("allow_concat_merge"))
    try:
        select = group.scope.rpartition("/")[0] if layer.select == ".." else (layer.select or group.scope)
        report = convert_file(source.path, select, target, out, via=via, fmt=out_fmt, options=options)
    except _Refused as exc:
        message = str(exc)
        reasons = refusals(group, target, allow_concat_merge=allow_merge)
        got = match_reasons(reasons)
        if not want_rules:
            raise Mismatch(f"{where} -> {target}: refused, but no rule expects it: {message}") from None
        if None in got or set(got) != set(want_rules):
            raise Mismatch(f"{where} -> {target}: refused for {got}, the rule table expects {want_rules}: {message}") from None
        missing = [r for r in reasons if r not in message]
        if missing:
            raise Mismatch(f"{where} -> {target}: the message does not name {missing}: {message}") from None
        return Outcome(source.label, group.scope, target, "refused", want_rules)
    if want_rules:
        y = None if layer.x is None else _run(target, out, group.scope, layer, report["output"])
        off = "" if y is None else f" (its outputs are {_close(y, layer.want, ATOL):.3g} off)"
        raise Mismatch(f"{where} -> {target}: converted, but the rule table expects a refusal ({want_rules}){off}")
    for check in report["checks"]:
        if not check["ok"] or check["max_abs_diff"] > ATOL:
            raise Mismatch(f"{where} -> {target}: ckptsurgeon's own verification reports {check}")
    err = None
    if layer.want is not None:
        y = _run(target, out, group.scope, layer, report["output"])
        if y is not None:
            err = _close(y, layer.want, ATOL)
            if err > ATOL:
                raise Mismatch(f"{where} -> {target}: SILENT MISMATCH: the real {target} framework computes {err:.3g} "
                               f"away from the source (notes: {report['notes']})")
    _round_trip(source, layer, group, target, out, stem, fmt, where)
    if layer.want is not None and target in ("torch", "torch-cell", "keras"):
        _graft(source, layer, group, target, report["output"], options, stem, where)
    return Outcome(source.label, group.scope, target, "exact", [], err)


def _graft(source: Source, layer: Layer, group, target: str, desc: dict, options: dict, stem: Path, where: str) -> None:
    """The same conversion by ``graft`` into a fresh model the target framework built from the reported
    configuration (the downstream-model workflow): loaded strictly, it computes the source's outputs."""
    import torch

    D = desc["directions"]
    tpl = stem.with_name(stem.name + "-template")
    if target == "keras":
        if desc["num_layers"] > 1 or "hard_sigmoid_keras2" in (desc["activation"], desc["recurrent_activation"]):
            return  # one template group per Keras layer (graft pairs one group); a lambda activation is not saved
        import keras

        use_bias = group.bias != "none"
        layer_ = keras_layer(desc["kind"], desc["hidden_size"], activation=desc["activation"],
                             recurrent_activation=desc["recurrent_activation"], use_bias=use_bias,
                             reset_after=desc.get("reset_after", True), go_backwards=desc["go_backwards"],
                             bidirectional=D == 2, merge_mode=desc.get("merge_mode", "concat"))
        model = keras.Sequential([keras.Input((None, desc["input_size"])), layer_])
        tpl = tpl.with_suffix(".keras")
        model.save(tpl)
    else:
        module = torch_module(desc["kind"], desc["input_size"], desc["hidden_size"], desc["num_layers"], D == 2,
                              bias=group.bias != "none", proj=desc["proj_size"], cell=target == "torch-cell")
        tpl = tpl.with_suffix(".pt")
        torch.save(module.state_dict(), tpl)
    out = tpl.with_name(tpl.stem + "-grafted" + tpl.suffix)
    opts = ConvertOptions(**{k: v for k, v in options.items()})
    try:
        report = ckptsurgeon.graft(source.path, tpl, out, scope=[group.scope] if group.scope else [], options=opts)
    except CheckpointError as exc:
        raise Mismatch(f"{where} -> {target}: extract converts it exactly, graft into a {target} template refuses: "
                       f"{exc}") from None
    if not report.checks or not all(c.ok for c in report.checks):
        raise Mismatch(f"{where} -> graft {target}: verification {report.checks}")
    if target == "keras":
        model.load_weights(out)
        y = run_keras_layer(layer_, layer.x)
    else:
        module.load_state_dict(torch.load(out, weights_only=True), strict=True)
        y = run_torch(module, layer.x)
    err = _close(_as_source_returns(y, layer, target), layer.want, ATOL)
    if err > ATOL:
        raise Mismatch(f"{where} -> graft into {target}: SILENT MISMATCH, {err:.3g} away from the source")


def _run(target: str, out: Path, scope: str, layer: Layer, stated: dict) -> np.ndarray | None:
    y, _ = run_target(target, out, scope, layer.x, stated)
    merged = (stated or {}).get("merge_mode") in ("sum", "mul", "ave")
    return None if y is None else _as_source_returns(y, layer, target, merged)


def _round_trip(source: Source, layer: Layer, group, target: str, out: Path, stem: Path, fmt: str, where: str) -> None:
    """A -> B -> A: the same values, and the source framework computes the same outputs from them."""
    if source.layout is None:
        return
    back = stem.with_name(stem.name + "-back").with_suffix("." + fmt)
    try:
        ckptsurgeon.extract(out, back, to=source.layout, format=fmt)
    except ConversionError as exc:
        raise Mismatch(f"{where} -> {target} -> {source.layout}: the round trip is refused: {exc}") from None
    again = [g for g in recognize(ckptsurgeon.open(back)) if g.scope == group.scope]
    if len(again) != 1:
        raise Mismatch(f"{where} -> {target} -> {source.layout}: the round trip does not read back as one group")
    diff = _values_diff(group.cells(), again[0].cells())
    if diff > VALUES_ATOL:
        raise Mismatch(f"{where} -> {target} -> {source.layout}: values changed by {diff:.3g}")
    if layer.load_back is not None and layer.want is not None:
        arrays, _ = read_output(back)
        y = layer.load_back(relative(arrays, group.scope))
        err = _close(y, layer.want, ATOL)
        if err > ATOL:
            raise Mismatch(f"{where} -> {target} -> {source.layout}: the source framework computes {err:.3g} away "
                           "from the original with the round-tripped weights")
