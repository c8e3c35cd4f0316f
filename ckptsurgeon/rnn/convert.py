"""Convert recognized groups to a target layout: exact re-arrangement only, or a refusal that says why."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import CheckpointError
from ..index import CheckpointIndex
from . import keras_layout, onnx_layout, pergate_layout, tf1_layout, torch_layout
from .cell import Stack
from .group import RecognizeOptions, RecurrentGroup
from .recognize import recognize
from .reference import run_stack

__all__ = ["ConversionError", "TARGETS", "Converted", "convert_stack", "convert_index", "check_target"]


class ConversionError(CheckpointError):
    """A conversion that cannot be exact."""


# target -> (key separator, writer)
TARGETS: dict[str, tuple[str, Callable[..., dict[str, np.ndarray]]]] = {
    "torch": (".", lambda s, o: torch_layout.write_module(s)),
    "torch-cell": (".", lambda s, o: torch_layout.write_cell(s)),
    "keras": ("/", lambda s, o: keras_layout.write(s)),
    "tf1": ("/", lambda s, o: tf1_layout.write(s, o.forget_bias)),
    "onnx": ("/", lambda s, o: onnx_layout.write(s)),
    "gates": ("/", lambda s, o: pergate_layout.write_gates(s, o.gates)),
}


@dataclass
class ConvertOptions(RecognizeOptions):
    gates: tuple[str, ...] = ()
    allow_approx: bool = False


@dataclass
class Converted:
    group: RecurrentGroup
    target: str
    tensors: dict[str, np.ndarray]  # relative names -> arrays
    notes: list[str] = field(default_factory=list)


def check_target(group: RecurrentGroup, target: str) -> None:
    """Refuse what the target cannot express exactly."""
    why = None
    name = f"{group.scope or '/'} ({group.variant})"
    if target not in TARGETS:
        raise ConversionError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if group.kind == "gru" and target in ("torch", "torch-cell") and not group.reset_after:
        why = ("it is a reset-before GRU (the reset gate multiplies h before the recurrent matrix) and PyTorch "
               "GRUs are reset-after: no weights make them compute the same. Use --to keras (reset_after=False) or onnx")
    elif group.kind == "gru" and target == "tf1" and group.reset_after:
        why = "it is a reset-after GRU and TF1 GRUCell is reset-before: no weights make them compute the same"
    elif group.peepholes and target in ("torch", "torch-cell", "keras"):
        why = f"it has peephole connections, which {target} LSTMs do not have (use --to tf1, onnx or gates)"
    elif group.proj_size and target in ("torch-cell", "keras", "onnx"):
        why = f"it has a projection (num_proj/proj_size={group.proj_size}), which {target} cannot hold (use --to torch or tf1)"
    elif target == "torch-cell" and (group.num_layers > 1 or group.directions > 1):
        why = (f"it has {group.num_layers} layer(s) x {group.directions} direction(s) and an nn.LSTMCell/GRUCell holds one; "
               "use --to torch")
    if why:
        raise ConversionError(f"cannot convert {name} to {target} exactly: {why}")


def _approx(group: RecurrentGroup, stack: Stack, options: ConvertOptions) -> tuple[Stack, list[str]]:
    """Activations the target cannot express: refuse, or (--allow-approx) swap and measure the error."""
    if group.recurrent_activation == "sigmoid" and group.activation == "tanh":
        return stack, []
    if not options.allow_approx:
        raise ConversionError(
            f"cannot convert {group.scope or '/'} ({group.variant}) exactly: it uses recurrent_activation="
            f"{group.recurrent_activation} ({group.activation_source}), targets compute sigmoid; "
            "pass --allow-approx to convert anyway and see the measured error")
    swapped = [[c.with_(recurrent_activation="sigmoid", activation="tanh") for c in layer] for layer in stack]
    x = np.random.default_rng(0).standard_normal((8, 4, group.input_size))
    err = float(np.max(np.abs(run_stack(stack, x) - run_stack(swapped, x))))
    return swapped, [f"approximate: {group.recurrent_activation} replaced by sigmoid; max abs output difference "
                     f"{err:.3g} on random inputs (8 steps)"]


def convert_stack(group: RecurrentGroup, target: str, options: ConvertOptions) -> Converted:
    check_target(group, target)
    stack, notes = _approx(group, group.cells(), options)
    return Converted(group, target, TARGETS[target][1](stack, options), notes + list(group.notes))


def convert_index(index: CheckpointIndex, target: str, options: ConvertOptions
                  ) -> tuple[list[tuple[str, str, object]], list[Converted]]:
    """Every group converted, every other tensor passed through: [(path, key, array or TensorRef)]."""
    groups = recognize(index, options)
    claimed = {m for g in groups for m in g.members}
    sep = TARGETS[target][0] if target in TARGETS else "/"
    done = [convert_stack(g, target, options) for g in groups]
    first = {g.members[0]: c for g in groups for c in done if c.group is g}
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
