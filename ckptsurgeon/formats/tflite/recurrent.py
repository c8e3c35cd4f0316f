"""TFLite LSTM ops as recurrent groups, recognized from the graph (an ``rnn`` adapter): ``UNIDIRECTIONAL_SEQUENCE_LSTM``,
``BIDIRECTIONAL_SEQUENCE_LSTM`` and the ``LSTM`` op (full kernel: one step an invocation, its state tensors carrying
h and c to the next, so a sequence layer computes what invoking it once a step from zero state does).

The reader hands each recurrent op over in the index's metadata (``recurrent_ops``: the op's inputs by position,
its options), so nothing is parsed twice; ``schema.LSTM_INPUTS`` / ``BIDI_LSTM_INPUTS`` name the positions (the
kernels' own tables). The op states its computation: per-gate weights ``(H, in)`` and ``(H, P)`` (``W @ x``,
gates i f c o: PyTorch's order), four gate biases, the cell activation (``fused_activation_function``, used for
the candidate and on the cell state), ``cell_clip`` (the state, after each update), peepholes ``cell_to_{i,f,o}``
(``(H,)``: i and f read the previous state, o the new one, as TF1's LSTMCell), a projection ``(P, H)`` and
``proj_clip``; the gates are sigmoid. Each variant proven against the TFLite interpreter's forward pass
(tests/test_tflite.py, tests/test_tflite_ops.py; fixtures/tflite/make_tflite*_fixtures.py).

Recognized and refused (listed with the reason, every conversion refused): layer normalization (the gates'
pre-activations normalized, no target cell computes it), CIFG (no input-gate tensors: the kernel computes
input = 1 - forget; ONNX's input_forget is the other coupling, f = 1 - i), a projection bias that is not zero
(TF1's and PyTorch's projections have none), ``diagonal_recurrent_tensors``, a bidirectional op fed an aux_input,
directions of different sizes, the LSTM op's basic kernel. int8 weights convert only with ``--allow-approx``
(dequantized: scale * (q - zero_point), not the stored values).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...index import CheckpointIndex
from ...rnn.cell import Cell
from ...rnn.group import RecognizeOptions, RecurrentGroup
from .quant import dequantize
from .schema import BASIC_LSTM_INPUTS, BIDI_LSTM_INPUTS, CELL_INPUTS, LSTM_INPUTS

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["recognize", "OPS"]

_GATES = ("input", "forget", "cell", "output")  # TFLite's names of PyTorch's i f g o
_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "none": "linear"}  # fused_activation_function -> activations name
_PEEPHOLES = ("cell_to_input_weights", "cell_to_forget_weights", "cell_to_output_weights")
_LAYER_NORM = tuple(f"{g}_layer_norm_coefficients" for g in _GATES)
_WEIGHT_ROLES = tuple(r for r in LSTM_INPUTS if r.endswith(("_weights", "_bias", "_coefficients")))
OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM")
_RUNS = {"UNIDIRECTIONAL_SEQUENCE_LSTM": "runs forward over the sequence",
         "BIDIRECTIONAL_SEQUENCE_LSTM": "runs forward (fw) and last step first (bw), outputs aligned with the input",
         "LSTM": "computes one step an invocation, forward"}


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    if index.format != "tflite":
        return []
    groups = []
    for op in index.metadata.get("recurrent_ops") or ():
        if isinstance(op, dict) and op.get("op") in OPS:
            group = _group(index, op, options)
            if group is not None:
                groups.append(group)
    return groups


def _directions(op: dict[str, Any]) -> tuple[list[dict[str, str | None]], dict[str, str | None]]:
    """One role -> tensor path dict per direction (``CELL_INPUTS`` / ``LSTM_INPUTS`` names), and the op's inputs."""
    if op.get("op") == "BIDIRECTIONAL_SEQUENCE_LSTM":
        inputs = dict(zip(BIDI_LSTM_INPUTS, op.get("inputs") or ()))
        return [{r: inputs.get(f"{d}_{r}") for r in CELL_INPUTS} for d in ("fw", "bw")], inputs
    inputs = dict(zip(LSTM_INPUTS, op.get("inputs") or ()))
    return [inputs], inputs


def _group(index: CheckpointIndex, op: dict[str, Any], options: RecognizeOptions) -> RecurrentGroup | None:
    opts = op.get("options") or {}
    if op.get("op") == "LSTM" and opts.get("kernel_type", 0) != 0:
        return _basic_kernel(index, op)
    dirs, inputs = _directions(op)
    needed = [f"{k}_to_{g}_weights" for k in ("input", "recurrent") for g in _GATES[1:]]
    stated = [p for d in dirs for r in _WEIGHT_ROLES if (p := d.get(r)) is not None]
    stated += [p for r, p in inputs.items() if "aux_input_to" in r and p is not None]
    if any(d.get(r) is None for d in dirs for r in needed) or any(p not in index for p in stated):
        return None  # not all selected, or weights fed at run time: no group of stored tensors
    shapes = [index[str(d["input_to_forget_weights"])].shape for d in dirs]
    if any(len(w) != 2 for w in shapes):
        return None
    hidden, n_in = shapes[0]
    proj_w = dirs[0].get("projection_weights")
    proj = index[proj_w].shape[0] if proj_w is not None and len(index[proj_w].shape) == 2 else 0
    name = str(op.get("op"))
    prov: dict[str, str] = {"recurrent_activation": "file: layout (TFLite LSTM kernels compute sigmoid gates)",
                            "go_backwards": f"file: layout ({name} {_RUNS[name]})"}
    act = _ACTIVATIONS.get(str(opts.get("fused_activation_function")))
    prov["activation"] = (f"file: op options (fused_activation_function {opts.get('fused_activation_function')})"
                          if act else f"missing: fused_activation_function {opts.get('fused_activation_function')} has "
                          "no formula here; pass --activation")
    why = _refused(index, dirs, inputs, opts, shapes)
    if why:
        prov["variant"] = "missing: " + why
    quant = index.metadata.get("quantization") or {}
    quantized = [m for m in stated if m in quant]
    if quantized:
        prov["weights"] = ("flag: --allow-approx (int8 weights dequantized, scale * (q - zero_point))"
                           if getattr(options, "allow_approx", False) else
                           f"missing: {len(quantized)} quantized tensor(s) ({', '.join(quantized[:3])}): a conversion "
                           "would dequantize them (scale * (q - zero_point)), not copy them; pass --allow-approx")
    clip = float(opts.get("cell_clip") or 0.0)
    pclip = float(opts.get("proj_clip") or 0.0) if proj else 0.0  # the kernels clip only a projected output
    for fact, value in (("cell_clip", clip), ("proj_clip", pclip)):
        if value:
            prov[fact] = f"file: op options ({fact} {value:g})"
    peepholes = all(dirs[0].get(r) is not None for r in _PEEPHOLES)
    where = f"op {op.get('index')} ({name}) of subgraph {op.get('subgraph')} of the model graph"
    group = RecurrentGroup(
        scope=(op.get("outputs") or [f"lstm_op_{op.get('index')}"])[0], kind="lstm", layout="tflite",
        variant=f"TFLite {name}" + (" (int8 weights)" if quantized else ""), input_size=n_in, hidden_size=hidden,
        directions=len(dirs), proj_size=proj, peepholes=peepholes, bias="two", activation=act,
        cell_clip=clip or None, proj_clip=pclip or None, provenance=prov, members=stated,
        notes=[where] + _notes(index, op, dirs, opts))
    if not why:
        group.load = lambda: [[_cell(index, d, hidden) for d in dirs]]
    return group


def _refused(index: CheckpointIndex, dirs: list[dict[str, str | None]], inputs: dict[str, str | None],
             opts: dict[str, Any], sizes: list[tuple[int, ...]]) -> str | None:
    """Why no target cell computes what this op computes (None: a group that converts)."""
    if any(d.get(r) is not None for d in dirs for r in _LAYER_NORM):
        return ("a layer-normalized TFLite LSTM (each gate's pre-activation normalized, then scaled by its "
                "*_layer_norm_coefficients), which no target's cells compute")
    if any(d.get("input_to_input_weights") is None for d in dirs):
        return ("a CIFG TFLite LSTM (no input-gate tensors: the kernel computes input gate = 1 - forget gate), which no "
                "target's cells compute (ONNX's input_forget couples the other way, forget = 1 - input)")
    if opts.get("diagonal_recurrent_tensors"):
        return "diagonal_recurrent_tensors (each recurrent weight a vector, h multiplied elementwise), which no target holds"
    if inputs.get("aux_input") is not None:
        return ("a bidirectional TFLite LSTM fed an aux_input (a second input sequence: the backward direction's input, "
                "or with aux weights an input both directions read), which no target's layer takes")
    if len(set(sizes)) > 1 or len({str(d.get("projection_weights") and index[str(d["projection_weights"])].shape)
                                    for d in dirs}) > 1:
        return f"a bidirectional TFLite LSTM whose directions differ in size ({sizes}), which no target holds as one layer"
    peeps = [[d.get(r) is not None for r in _PEEPHOLES] for d in dirs]
    if any(any(p) and not all(p) for p in peeps) or len({tuple(p) for p in peeps}) > 1:
        return "peepholes on some gates or directions and not others, which no target holds"
    biased = [p for d in dirs if (p := d.get("projection_bias")) is not None and np.any(_value(index, p))]
    if biased:
        return (f"a projection with a bias ({', '.join(biased)}, not zero), which no target's projection has (TF1's "
                "LSTMCell num_proj and PyTorch's proj_size project without one)")
    return None


def _notes(index: CheckpointIndex, op: dict[str, Any], dirs: list[dict[str, str | None]], opts: dict[str, Any]) -> list[str]:
    notes = []
    if op.get("op") == "LSTM":
        notes.append("the LSTM op computes one step an invocation, its state tensors carrying h and c over: the "
                     "converted layer run over a sequence computes what invoking the op once a step from zero state does")
    if op.get("op") == "BIDIRECTIONAL_SEQUENCE_LSTM":
        notes.append("outputs: fw | bw concatenated on the last axis" if opts.get("merge_outputs") else
                     "the op returns the directions as two outputs (merge_outputs false); a converted layer gives them "
                     "concatenated, fw | bw, on the last axis")
    zero = [p for d in dirs if (p := d.get("projection_bias")) is not None and not np.any(_value(index, p))]
    if zero:
        notes.append(f"projection bias {', '.join(zero)} is all zeros: a projection without a bias computes the same")
    return notes


def _basic_kernel(index: CheckpointIndex, op: dict[str, Any]) -> RecurrentGroup | None:
    """The LSTM op's basic kernel: listed, refused (its concatenated layout is not read as a group here)."""
    inputs = dict(zip(BASIC_LSTM_INPUTS, op.get("inputs") or ()))
    weights, biases = inputs.get("weights"), inputs.get("biases")
    if weights is None or biases is None or weights not in index or biases not in index:
        return None
    shape = index[weights].shape
    if len(shape) != 2 or shape[0] % 4:
        return None
    hidden = shape[0] // 4
    return RecurrentGroup(
        scope=(op.get("outputs") or [f"lstm_op_{op.get('index')}"])[0], kind="lstm", layout="tflite",
        variant="TFLite LSTM (basic kernel)", input_size=shape[1] - hidden, hidden_size=hidden, bias="one",
        provenance={"variant": "missing: the LSTM op's basic kernel (kernel_type BASIC: weights concatenated "
                               "(4 * n_cell, n_input + n_output)), which is not read as a group here"},
        members=[weights, biases], notes=[f"op {op.get('index')} (LSTM) of subgraph {op.get('subgraph')}"])


def _value(index: CheckpointIndex, path: str) -> np.ndarray:
    """The tensor as float32, dequantized when the file gives it scales (real = scale * (q - zero_point))."""
    arr = index[path].numpy()
    q = (index.metadata.get("quantization") or {}).get(path)
    return arr.astype(np.float32) if q is None else dequantize(arr, q, f"{index.files[0]}: tensor {path!r}")


def _cell(index: CheckpointIndex, inputs: dict[str, str | None], hidden: int) -> Cell:
    def gates(fmt: str) -> np.ndarray:
        return np.concatenate([_value(index, str(inputs[fmt.format(g)])) for g in _GATES])

    w_ih, w_hh = gates("input_to_{}_weights"), gates("recurrent_to_{}_weights")
    b = gates("{}_gate_bias") if all(inputs.get(f"{g}_gate_bias") for g in _GATES) else np.zeros(4 * hidden, np.float32)
    peep = (np.stack([_value(index, str(inputs[r])) for r in _PEEPHOLES])
            if all(inputs.get(r) is not None for r in _PEEPHOLES) else None)
    proj = inputs.get("projection_weights")
    return Cell("lstm", w_ih, w_hh, b, np.zeros_like(b), peepholes=peep, w_hr=None if proj is None else _value(index, proj))
