"""Convert recognized groups to a target layout: exact re-arrangement only, or a refusal that says why.

``convert_group(group, target)`` is the one entry point: it checks the target can compute what the
group computes (``refusals``), writes the tensors (names relative to the group scope) and the
self-description (``Converted.metadata``, stored as ``rnn:<scope>``) that lets the output be read back
exactly. With ``into`` (a template's own group, for graft) the template's run-time constants and
activations are the target's, never a global default.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..index import CheckpointIndex
from . import flax_layout, gates_layout, keras_layout, onnx_graph, onnx_layout, tf1_layout, torch_layout
from .activations import ACTIVATIONS, formula
from .cell import Stack
from .facts import META_PREFIX, describe_output
from .group import FACT_FLAGS, RecognizeOptions, RecurrentGroup, origin
from .recognize import recognize
from .reference import run_stack

__all__ = ["ConversionError", "TARGETS", "ConvertOptions", "Converted", "refusals", "check_target",
           "convert_group", "convert_stack", "convert_index", "target_semantics", "describe_converted"]


class ConversionError(CheckpointError):
    """A conversion that cannot be exact."""


@dataclass
class ConvertOptions(RecognizeOptions):
    """``RecognizeOptions`` (the user's fact declarations) plus what a conversion may do: gates to keep,
    ``allow_approx`` (other activations, measured), ``allow_concat_merge`` (a Keras merge the target cannot hold)."""

    gates: tuple[str, ...] = ()
    allow_approx: bool = False
    allow_concat_merge: bool = False  # Keras merge_mode sum/mul/ave into targets that keep the directions apart


@dataclass(frozen=True)
class _Target:
    sep: str  # key separator of the output
    write: Callable[[Stack, RecurrentGroup, ConvertOptions], dict[str, np.ndarray]]
    activations: tuple[str, ...] | None  # recurrent (gate) activations its cells compute; None: any known formula
    families: tuple[bool, ...]  # reset_after values it can hold
    peepholes: bool
    projection: bool
    independent: bool  # can hold two independent directional stacks
    go_backwards: bool  # can carry Keras's go_backwards (one direction)
    one_cell: bool = False
    clip: bool = False  # can hold ONNX's clip of gate pre-activations
    input_forget: bool = False  # can hold ONNX's input_forget (f = 1 - i)
    cell_clips: bool = False  # can carry TF1's cell_clip/proj_clip (a TF1 cell built with them, or the description)
    merges: bool = False  # can carry a Keras Bidirectional merge_mode other than concatenation
    cell_activations: tuple[str, ...] | None = ("tanh",)  # activations (candidate and output); None: any known


TARGETS: dict[str, _Target] = {
    # nn.LSTM/GRU: sigmoid gates, tanh
    "torch": _Target(".", lambda s, g, o: torch_layout.write_module(s), ("sigmoid",), (True,), False, True, False, False),
    "torch-cell": _Target(".", lambda s, g, o: torch_layout.write_cell(s), ("sigmoid",), (True,), False, False,
                          False, False, one_cell=True),
    "keras": _Target("/", lambda s, g, o: keras_layout.write(s), None, (True, False), False, False, False, True,
                     merges=True, cell_activations=None),
    # flax.linen LSTMCell/GRUCell in nn.RNN/Bidirectional: gate_fn=sigmoid, activation_fn=tanh (not stored), reset-after
    # (any activation: the cells' gate_fn/activation_fn; go_backwards: nn.RNN(reverse=True, keep_order=False);
    # a Keras merge: nn.Bidirectional(merge_fn=...); none of them stored in params: carried in notes)
    "flax": _Target("/", lambda s, g, o: flax_layout.write(s), None, (True,), False, False, False, True, merges=True,
                    cell_activations=None),
    # paddle.nn.LSTM/GRU: PyTorch's gate orders and formulas (paddle/nn/layer/rnn.py), reset-after, biases always
    "paddle": _Target(".", lambda s, g, o: torch_layout.write_paddle(s), ("sigmoid",), (True,), False, False, False, False),
    # paddle.nn.LSTMCell/GRUCell (nn.RNN(cell) holds it under cell/): PyTorch's cell names, biases always
    "paddle-cell": _Target(".", lambda s, g, o: torch_layout.write_paddle_cell(s), ("sigmoid",), (True,), False, False,
                           False, False, one_cell=True),
    # TF1 cells: sigmoid gates; activation= is the cells' constructor argument (any function; not stored: carried)
    "tf1": _Target("/", lambda s, g, o: tf1_layout.write(s, g.forget_bias), ("sigmoid",), (False,), True, True,
                   True, False, cell_clips=True, cell_activations=None),
    # every formula of activations.ACTIVATIONS (named or parametric) has an ONNX activations entry
    "onnx": _Target("/", lambda s, g, o: onnx_layout.write(s), None, (True, False), True, False, False, True,
                    clip=True, input_forget=True, cell_activations=None),
    "gates": _Target("/", lambda s, g, o: gates_layout.write_gates(s, o.gates), None, (True, False), True, True, True, True,
                     clip=True, input_forget=True, cell_clips=True, merges=True, cell_activations=None),
}


@dataclass
class Converted:
    """One group converted: tensors (names relative to the group scope) and the output's self-description."""

    group: RecurrentGroup  # the source group
    target: str
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any]  # describe_output(...) of what the tensors compute in the target
    notes: list[str] = field(default_factory=list)
    reference: Stack | None = field(default=None, repr=False)  # what the output must compute (source semantics)
    semantics: RecurrentGroup | None = field(default=None, repr=False)  # the group as the target states it
    complete: dict[str, np.ndarray] | None = field(default=None, repr=False)  # all tensors, when ``tensors`` is a subset
    stream: Any = field(default=None, repr=False)  # a stream.StreamedGroup: ``tensors`` are computed as they are read

    def stated(self, scope: str | None = None) -> dict[str, str]:
        """``{"rnn:<scope>": JSON}`` for the output file's metadata (scope: after any rename)."""
        return {META_PREFIX + (self.group.scope if scope is None else scope): json.dumps(self.metadata, sort_keys=True)}


def _name(group: RecurrentGroup) -> str:
    return f"{group.scope or '/'} ({group.variant})"


def refusals(group: RecurrentGroup, target: str, *, into: RecurrentGroup | None = None,
             allow_approx: bool = False, allow_concat_merge: bool = False) -> list[str]:
    """Every reason ``group`` cannot be converted to ``target`` (into the template group ``into``) exactly."""
    if target not in TARGETS:
        return [f"unknown target {target!r}; choose one of {', '.join(TARGETS)}"]
    t = TARGETS[target]
    why: list[str] = []
    for fact, source in group.unsettled().items():
        why.append(f"{fact}: {source.split(':', 1)[-1].strip()}")
    if into is not None:
        for fact, source in into.unsettled().items():
            text = re.sub(r"; pass --[\w/-]+(?: or --[\w-]+)?$", "", source.split(":", 1)[-1].strip())
            declare = f"; declare it: --template-fact {fact}=VALUE" if fact in FACT_FLAGS else ""
            why.append(f"the template group {into.scope!r}'s {fact}: {text}{declare}")
    if why:
        return why
    if group.kind == "gru" and group.reset_after not in t.families:
        why.append("it is a reset-before GRU (the reset gate multiplies h before the recurrent matrix) and "
                   f"{'Flax GRUCells' if target == 'flax' else 'paddle.nn.GRU cells' if target.startswith('paddle') else 'PyTorch GRUs'} "
                   "are reset-after: no weights make them compute the same; use --to keras (reset_after=False), onnx or gates"
                   if group.reset_after is False else
                   "it is a reset-after GRU and TF1 GRUCell is reset-before: no weights make them compute the same")
    if group.peepholes and not t.peepholes:
        why.append(f"it has peephole connections, which {target} LSTMs do not have (use --to tf1, onnx or gates)")
    if group.proj_size and not t.projection:
        why.append(f"it has a projection (num_proj/proj_size={group.proj_size}), which {target} cannot hold "
                   "(use --to torch, tf1 or gates)" if not target.startswith("paddle") else
                   f"it has a projection (proj_size={group.proj_size}), and paddle.nn.LSTM(proj_size=...)'s state dict "
                   "names its weight_*_l<k> entries out of step with its parameters (paddle 3.3 zips 4 names with 5 "
                   "parameters per cell), so ckptsurgeon writes no paddle layout for it; use --to torch, tf1 or gates")
    if t.one_cell and (group.num_layers > 1 or group.directions > 1):
        why.append(f"it has {group.num_layers} layer(s) x {group.directions} direction(s) and an nn.LSTMCell/GRUCell "
                   f"holds one; use --to {target.removesuffix('-cell')}")
    if group.topology == "independent" and group.num_layers > 1 and group.directions == 2 and not t.independent:
        why.append("its directions are two independent stacks (TF1 bidirectional_dynamic_rnn over MultiRNNCells: layer k "
                   f"of fw reads only layer k-1 of fw), while {target} layer k reads both directions of layer k-1; "
                   "use --to tf1 or gates, or select the forward stack alone (.../fw)")
    if group.go_backwards and group.directions == 2:
        why.append("it is a Keras Bidirectional whose forward layer has go_backwards=True, which no target here "
                   "expresses (and the reference cells do not model)")
    elif group.go_backwards and not t.go_backwards:
        why.append(f"it runs backwards (Keras go_backwards=True: last step first, outputs returned in that order), which "
                   f"{target} cannot express; use --to keras, onnx (direction=reverse) or gates")
    for fact in ("recurrent_activation", "activation"):
        name = getattr(group, fact)
        if name not in ACTIVATIONS:
            why.append(f"its {fact} {name!r} has no reference formula here, so the conversion cannot be checked")
    if group.clip is not None and not t.clip:
        why.append(f"it clips every gate pre-activation to [-{group.clip:g}, {group.clip:g}] (ONNX clip), which {target} "
                   "cells do not (TF1's cell_clip clips the cell state, another function); use --to onnx or gates")
    if group.input_forget and not t.input_forget:
        why.append(f"its forget gate is 1 - input gate (ONNX input_forget=1), which {target} cannot express; "
                   "use --to onnx or gates")
    clips = _clips(group)
    if clips and not t.cell_clips:
        why.append(f"it clips ({clips}), which {target} cells do not compute (ONNX's clip bounds the "
                   "gates' pre-activations, not the cell state); use --to tf1 or gates")
    merge = _merge_refusal(group, target, into, allow_concat_merge)
    if merge:
        why.append(merge)
    if into is not None:
        if t.clip and (group.clip, group.input_forget) != (into.clip, into.input_forget):
            why.append(f"it computes clip={group.clip}, input_forget={group.input_forget}; the template group "
                       f"{into.scope!r} computes clip={into.clip}, input_forget={into.input_forget}")
        if group.peepholes and not into.peepholes:
            why.append(f"it has peephole connections and the template group {into.scope!r} has none")
        if clips != _clips(into):
            why.append(f"it clips with {clips or 'nothing'}; the template group {into.scope!r} clips with "
                       f"{_clips(into) or 'nothing'}")
        if group.kind == "gru" and group.reset_after != into.reset_after:
            why.append(f"a {group.family} GRU cannot compute what the template's {into.family} GRU computes")
        if (group.go_backwards, group.topology if group.num_layers > 1 else "") != (
                into.go_backwards, into.topology if into.num_layers > 1 else ""):
            why.append(f"it is go_backwards={group.go_backwards}, topology {group.topology}; the template group "
                       f"{into.scope!r} is go_backwards={into.go_backwards}, topology {into.topology}")
    if not why and not allow_approx:
        wanted = _wanted_activations(group, target, into)
        if wanted is not None:
            why.append(_activation_refusal(group, target, wanted, into))
    return why


def _clips(group: RecurrentGroup) -> str:
    return ", ".join(f"{n}={getattr(group, n):g}" for n in ("cell_clip", "proj_clip") if getattr(group, n) is not None)


_MERGES = {"sum": "fw + bw", "mul": "fw * bw", "ave": "(fw + bw) / 2"}


def _merge_refusal(group: RecurrentGroup, target: str, into: RecurrentGroup | None, allowed: bool) -> str | None:
    """Keras Bidirectional merges (sum, mul, ave) that the target cannot compute: it keeps the directions apart;
    and the other way, directions kept apart going into a template group that merges them."""
    if group.directions == 2 and not allowed and into is not None and into.merge_mode in _MERGES \
            and group.merge_mode in (None, "concat"):
        return (f"its directions come out concatenated and the template group {into.scope!r} merges them with "
                f"merge_mode={into.merge_mode!r} ({_MERGES[into.merge_mode]}): the model would compute something else; "
                "pass --allow-concat-merge if that is what you want")
    if group.directions != 2 or group.merge_mode not in _MERGES or allowed:
        return None
    if into is not None:
        if into.merge_mode == group.merge_mode:
            return None
        where = f"the template group {into.scope!r} " + (f"merges with {into.merge_mode!r}" if into.merge_mode
                                                          else "keeps them apart (concatenated)")
    elif TARGETS[target].merges:
        return None
    else:
        where = f"{target} keeps them apart (concatenated, or per direction)"
    return (f"its Keras Bidirectional merges the directions with merge_mode={group.merge_mode!r} "
            f"({_MERGES[group.merge_mode]}) and {where}; pass --allow-concat-merge to get both directions and merge "
            "them yourself downstream")


def _wanted_activations(group: RecurrentGroup, target: str, into: RecurrentGroup | None) -> tuple[str, str] | None:
    """The (recurrent_activation, activation) the output will compute, when it differs from the group's."""
    have = (group.recurrent_activation, group.activation)
    if into is not None:
        want = (into.recurrent_activation, into.activation)
        return None if want == have else want
    t = TARGETS[target]
    rec_ok = t.activations is None or have[0] in t.activations
    act_ok = t.cell_activations is None or have[1] in t.cell_activations
    return None if rec_ok and act_ok else (have[0] if rec_ok else "sigmoid", have[1] if act_ok else "tanh")


def _activation_refusal(group: RecurrentGroup, target: str, want: tuple[str, str], into: RecurrentGroup | None) -> str:
    have = (group.recurrent_activation, group.activation)
    where = f"the template group {into.scope!r} computes" if into is not None else f"{target} computes"
    diff = [f"{n}: {a} = {formula(a)} ({group.provenance.get(n, 'file')}) vs {b} = {formula(b)}"
            for n, a, b in zip(("recurrent_activation", "activation"), have, want) if a != b]
    return (f"its activations differ from what {where}: {'; '.join(diff)}; pass --allow-approx to convert anyway "
            "and see the measured error")


def check_target(group: RecurrentGroup, target: str, *, into: RecurrentGroup | None = None,
                 allow_approx: bool = False, allow_concat_merge: bool = False) -> None:
    """Raise ConversionError with every reason the conversion cannot be exact."""
    why = refusals(group, target, into=into, allow_approx=allow_approx, allow_concat_merge=allow_concat_merge)
    if why:
        dest = f"the template group {into.scope or '/'} ({into.variant})" if into is not None else target
        raise ConversionError(f"cannot convert {_name(group)} to {dest} exactly: " + "; ".join(why))


def _approx(group: RecurrentGroup, stack: Stack, want: tuple[str, str]) -> tuple[Stack, str]:
    rec, act = want
    swapped = stack.map(lambda c: c.with_(recurrent_activation=rec, activation=act))
    x = np.random.default_rng(0).standard_normal((8, 4, group.input_size))
    err = float(np.max(np.abs(run_stack(stack, x) - run_stack(swapped, x))))
    return swapped, (f"approximate: ({group.recurrent_activation}, {group.activation}) replaced by ({rec}, {act}); "
                     f"max abs output difference {err:.3g} on random inputs (8 steps)")


def _notes(sem: RecurrentGroup, target: str) -> list[str]:
    notes = []
    if target == "keras":
        for fact in ("recurrent_activation", "activation"):
            name = getattr(sem, fact)
            keras_name = ACTIVATIONS[name].keras
            if keras_name is None and name != "hard_sigmoid_keras2":
                notes.append(f"{fact} is {name} = {formula(name)}, which no Keras activation name means: build the "
                             f"Keras layer with {fact}=<a function computing {formula(name)}>")
            elif keras_name is None:
                notes.append(f"{fact} is {name} = {formula(name)} (Keras 1/2's 'hard_sigmoid'); Keras 3's 'hard_sigmoid' is "
                             f"relu6(x + 3) / 6, a different function: build the Keras 3 layer with {fact}="
                             "lambda x: keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)")
            elif keras_name != "sigmoid" and keras_name != "tanh":
                notes.append(f"{fact} is {name} = {formula(name)}: build the Keras layer with {fact}={keras_name!r}")
        if sem.go_backwards:
            notes.append("build the Keras layer with go_backwards=True")
        if sem.kind == "gru":
            notes.append(f"build the Keras GRU with reset_after={bool(sem.reset_after)}")
    elif sem.go_backwards and target == "onnx":
        notes.append("ONNX node direction='reverse': Y comes aligned with X; Keras (go_backwards) returns it last step "
                     "first, so flip Y on the time axis to match Keras (Y_h is the same)")
    elif target == "gates" and (sem.recurrent_activation, sem.activation) != ("sigmoid", "tanh"):
        notes.append(f"activations: {sem.recurrent_activation} = {formula(sem.recurrent_activation)}, "
                     f"{sem.activation} = {formula(sem.activation)} (in the output's rnn:<scope> metadata)")
    if target == "keras" and sem.directions == 2 and sem.merge_mode not in (None, "concat"):
        mode = "None" if sem.merge_mode == "none" else repr(sem.merge_mode)
        notes.append(f"build the Keras Bidirectional with merge_mode={mode}")
    if target == "flax":
        acts = (sem.recurrent_activation, sem.activation)
        if acts != ("sigmoid", "tanh"):
            notes.append(f"build the linen cells with gate_fn computing {formula(acts[0])} ({acts[0]}) and activation_fn "
                         f"computing {formula(acts[1])} ({acts[1]}): flax stores no activation")
        if sem.go_backwards:
            notes.append("build the nn.RNN with reverse=True, keep_order=False (Keras's go_backwards: last step first, "
                         "outputs in that order)")
        if sem.directions == 2 and sem.merge_mode in ("sum", "mul", "ave"):
            notes.append(f"build the nn.Bidirectional with merge_fn computing the {sem.merge_mode} of its two outputs "
                         "(Keras merge_mode; flax concatenates by default)")
    if target == "tf1" and (sem.cell_clip is not None or sem.proj_clip is not None):
        notes.append(f"build the TF1 LSTMCell with {_clips(sem)}")
    if target == "tf1" and sem.activation != "tanh":
        notes.append(f"activation is {sem.activation} = {formula(sem.activation)}: build the TF1 cells with activation= "
                     "that function (tf.nn.relu ...; it is not stored in the checkpoint)")
    return notes


def _merge_note(group: RecurrentGroup, target: str) -> str | None:
    if group.directions != 2 or group.merge_mode in (None, "concat") or TARGETS[target].merges:
        return None
    if group.merge_mode == "none":
        return (f"Keras returned the two directions as two outputs (merge_mode=None); {target} gives both: the forward "
                f"half is [..., :{group.hidden_size}], the backward half the rest")
    H = group.proj_size or group.hidden_size
    return (f"--allow-concat-merge: Keras merged the directions with merge_mode={group.merge_mode!r}; {target} gives them "
            f"apart: merge them yourself, y = {_MERGES[group.merge_mode].replace('fw', f'y[..., :{H}]').replace('bw', f'y[..., {H}:]')}")


def convert_group(group: RecurrentGroup, target: str, options: ConvertOptions | None = None, *,
                  into: RecurrentGroup | None = None) -> Converted:
    """``group`` in ``target``'s layout (or into the template group ``into``), with its self-description."""
    options = options or ConvertOptions()
    check_target(group, target, into=into, allow_approx=options.allow_approx,
                 allow_concat_merge=options.allow_concat_merge)
    stack = group.cells()
    reference, notes = stack, []
    want = _wanted_activations(group, target, into)
    if want is not None:
        stack, note = _approx(group, stack, want)
        reference, notes = stack, [note]
    sem = target_semantics(group, target, into, stack[0][0].recurrent_activation, stack[0][0].activation)
    tensors = TARGETS[target].write(stack, sem, options)
    complete = None
    if target == "gates" and options.gates:
        complete = gates_layout.write_gates(stack)  # --gates keeps some: verification reads the whole group
    metadata, notes = describe_converted(group, sem, target, options, into, notes)
    return Converted(group, target, tensors, metadata, notes, reference, sem, complete)


def target_semantics(group: RecurrentGroup, target: str, into: RecurrentGroup | None, recurrent_activation: str | None,
                     activation: str | None) -> RecurrentGroup:
    """The group as the target will state it (its layout, activations, forget_bias, merge_mode)."""
    return replace(group, layout=target, recurrent_activation=recurrent_activation, activation=activation, notes=[],
                   provenance={}, forget_bias=(into.forget_bias if into is not None else tf1_layout.DEFAULT_FORGET_BIAS)
                   if target == "tf1" and group.kind == "lstm" else 0.0,
                   merge_mode=group.merge_mode if TARGETS[target].merges else None)


def describe_converted(group: RecurrentGroup, sem: RecurrentGroup, target: str, options: ConvertOptions,
                       into: RecurrentGroup | None, notes: list[str]) -> tuple[dict[str, Any], list[str]]:
    """A conversion's self-description (``rnn:<scope>``) and its notes, from the facts alone (no tensor)."""
    notes = list(notes)
    merge_note = _merge_note(group, target)
    if merge_note:
        notes.append(merge_note)
    extra: dict[str, Any] = {}
    if target == "tf1" and group.kind == "lstm":
        extra["forget_bias"] = sem.forget_bias
        if into is None and group.forget_bias != sem.forget_bias:  # the source's own cells added another constant
            notes.append(f"the forget-gate bias is written for TF1 cells with forget_bias={sem.forget_bias:g} (the "
                         f"constructors' default), not the source's {group.forget_bias:g}: build the cells with "
                         f"forget_bias={sem.forget_bias:g}")
    if target == "onnx":
        extra["onnx"] = onnx_layout.node_attributes(sem)  # every layer's node takes the same attributes
    if target == "gates":
        extra["orientation"] = "weight_ih (H, in), weight_hh (H, H or P): y = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh"
    if target == "keras" and group.kind == "gru":
        extra["reset_after"] = bool(group.reset_after)
    if target == "gates" and options.gates:
        extra["gates_written"] = list(options.gates)
    assumed = [n for n in (_assumed(group, "its"), _assumed(into, f"the template group {into.scope or '/'}'s")
                           if into is not None else None) if n]
    return describe_output(sem, target, **extra), notes + _notes(sem, target) + list(group.notes) + assumed


def _assumed(group: RecurrentGroup, whose: str) -> str | None:
    """A note naming the facts taken from a version default because the file does not state them."""
    facts = [f for f, source in group.provenance.items() if f in FACT_FLAGS and origin(source) == "version default"]
    if not facts:
        return None
    values = ", ".join(f"{f}={getattr(group, f)}" for f in facts)
    if whose.startswith("the template"):  # the fact flags describe the source; a template's are declared apart
        return (f"{whose} {values} are version defaults, not stated in the file; if the layer was built otherwise, "
                f"declare it: --template-fact NAME=VALUE (API: graft(..., template_facts={{...}}))")
    flags = " ".join(sorted({FACT_FLAGS[f].split("/")[0] for f in facts}))
    where = (" or use a file that states its config (.keras, a full-model .h5, a SavedModel)"
             if group.layout.startswith("keras") else "")
    return (f"{whose} {values} are version defaults, not stated in the file; if the layer was built otherwise, "
            f"declare it ({flags}){where}")


def cut_groups(full: CheckpointIndex, chosen: CheckpointIndex, options: RecognizeOptions | None = None) -> list[str]:
    """Why the selection ``chosen`` (of ``full``) cuts a recurrent group's cells: it leaves out their biases,
    peepholes or projection, so the cells recognized in it would compute what the source's never did (a layer
    without biases). A whole layer or a whole direction left out is no cut: what remains computes what it did."""
    options = options or RecognizeOptions()
    kept = set(chosen)
    whole = [g for g in recognize(full, options) if any(m in kept for m in g.members)]
    out = []
    for part in recognize(chosen, options):
        source = next((g for g in whole if set(part.members) <= set(g.members)), None)
        if source is None:
            continue
        lost = [what for what, a, b in (("biases", part.bias, source.bias), ("peepholes", part.peepholes, source.peepholes),
                                        ("projection", part.proj_size, source.proj_size)) if a != b]
        cells, whole_cells = part.num_layers * part.directions, source.num_layers * source.directions
        if not lost and len(part.members) * whole_cells != len(source.members) * cells:
            lost = ["tensors"]  # some of a cell's tensors (one bias of a layer): not a whole layer or direction
        if lost:
            left = [m for m in source.members if m not in kept]
            shown = ", ".join(left[:4]) + (f" and {len(left) - 4} more" if len(left) > 4 else "")
            select = f"--scope '{source.scope}/*'" if source.scope else "no --exclude"
            out.append(f"{full.files[0]}: the selection leaves out the {' and '.join(lost)} of {source.scope or '/'} "
                       f"({source.variant}: {shown}), so its cells would compute what the source's never did; select "
                       f"them too ({select}), or drop --to to extract the tensors as they are")
    return out


def convert_stack(group: RecurrentGroup, target: str, options: ConvertOptions) -> Converted:
    """Compatibility name of ``convert_group``."""
    return convert_group(group, target, options)


def convert_index(index: CheckpointIndex, target: str, options: ConvertOptions | None = None, *,
                  convert: Callable[[RecurrentGroup, int], Converted] | None = None
                  ) -> tuple[list[tuple[str, str, object]], list[Converted]]:
    """Every group converted, every other tensor passed through: [(path, key, array or TensorRef)].

    ``convert(group, i)`` replaces ``convert_group`` (``stream.stream_index`` converts cell by cell)."""
    options = options or ConvertOptions()
    if target not in TARGETS:
        raise ConversionError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    groups = recognize(index, options)
    claimed = {m for g in groups for m in g.members}
    sep = TARGETS[target].sep
    problems, done = [], []
    for scope, members, why in onnx_graph.ungated(index):
        problems.append(f"cannot convert {scope} to {target}: {why}; leave its tensors out "
                        f"(--exclude for {', '.join(members)})")
    for g in groups:
        try:
            done.append(convert_group(g, target, options) if convert is None else convert(g, len(done)))
        except ConversionError as exc:
            problems.append(str(exc))
    if problems:  # each names its group; the file once, in front
        where = index.files[0] if index.files else ""
        raise ConversionError((f"{where}: " if where and not problems[0].startswith(where) else "") + "; ".join(problems))
    first = {c.group.members[0]: c for c in done}
    out: list[tuple[str, str, object]] = []
    for path, ref in index.items():
        if path in first:
            conv = first[path]
            for rel, arr in conv.tensors.items():
                full = f"{conv.group.scope}/{rel}" if conv.group.scope else rel
                out.append((full, full.replace("/", sep), arr))
        elif path not in claimed:
            out.append((path, ref.key, ref))
    return out, done
