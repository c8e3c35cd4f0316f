"""A recognized recurrent parameter group: what it is, where its tensors are, how to load it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from .cell import Stack

__all__ = ["RecurrentGroup", "RecognizeOptions"]


@dataclass
class RecognizeOptions:
    """User declarations that recognition cannot infer."""

    forget_bias: float = 1.0  # TF1 LSTMCell / BasicLSTMCell / LSTMBlockCell run-time constant
    orientation: str = "xw"  # hand-built cells when input size == hidden size: "xw" (x @ W, (in, H)) or "wx"
    gate_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # extra scope names per gate letter
    var_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # extra names for x / h / b


@dataclass
class RecurrentGroup:
    scope: str
    kind: str  # "lstm" | "gru"
    layout: str  # torch, torch-cell, keras, keras-cudnn, keras1, tf1, tf1-gru, per-gate, onnx
    variant: str  # what wrote it, in words
    input_size: int
    hidden_size: int
    num_layers: int = 1
    directions: int = 1
    proj_size: int = 0
    bias: str = "two"  # two | one | none | cudnn (input + recurrent, stacked)
    peepholes: bool = False
    reset_after: bool | None = None  # GRU family
    forget_bias: float = 0.0  # run-time constant folded in on load
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    activation_source: str = "default"  # "file" | "default" | "assumed"
    members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load: Callable[[], Stack] | None = field(default=None, repr=False, compare=False)

    def cells(self) -> Stack:
        if self.load is None:
            raise FormatError(f"group {self.scope!r} cannot be loaded")
        return self.load()

    def describe(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "scope", "kind", "layout", "variant", "input_size", "hidden_size", "proj_size", "num_layers",
            "directions", "bias", "peepholes", "reset_after", "forget_bias", "activation",
            "recurrent_activation", "activation_source", "members", "notes")}
        out["family"] = None if self.kind != "gru" else ("reset-after" if self.reset_after else "reset-before")
        return out
