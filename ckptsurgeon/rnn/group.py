"""A recognized recurrent parameter group: what it is, where its tensors are, how to load it, and
where each computation-relevant fact about it came from."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from .activations import formula
from .cell import Stack

__all__ = ["RecurrentGroup", "RecognizeOptions", "ORIGINS", "origin", "FACT_FLAGS", "MERGE_MODES"]

# Where a fact came from, as the first word(s) of its provenance string ("file: model config").
# "assumed" and "missing" never feed a conversion: it is refused, naming the flag that settles it.
ORIGINS = ("file", "live model", "version default", "flag", "assumed", "missing")  # live model: keras.load_into

# fact -> the flag that declares it
FACT_FLAGS = {
    "reset_after": "--reset-after/--reset-before",
    "activation": "--activation",
    "recurrent_activation": "--recurrent-activation",
    "forget_bias": "--forget-bias",
    "orientation": "--orientation",
    "go_backwards": "--go-backwards/--no-go-backwards",
    "merge_mode": "--merge-mode",
    "cell_clip": "--cell-clip",
    "proj_clip": "--proj-clip",
}
MERGE_MODES = ("concat", "sum", "mul", "ave", "none")  # Keras Bidirectional merge_mode ("none": Keras's None)


def origin(source: str) -> str:
    """``"version default: Keras < 2.3 ..."`` -> ``"version default"``."""
    head = source.split(":", 1)[0].strip()
    return head if head in ORIGINS else "assumed"


@dataclass
class RecognizeOptions:
    """User declarations of what recognition cannot infer; ``None``: not declared."""

    forget_bias: float | None = None  # TF1 LSTMCell / BasicLSTMCell / LSTMBlockCell run-time constant
    orientation: str | None = None  # hand-built cells when input size == hidden size: "xw" (x @ W, (in, H)) or "wx"
    reset_after: bool | None = None  # GRU family when the file does not state it
    activation: str | None = None  # when the file does not state it (weights-only Keras 1/2 ...)
    recurrent_activation: str | None = None
    go_backwards: bool | None = None  # Keras layers of weights-only files
    merge_mode: str | None = None  # Keras Bidirectional of weights-only files (MERGE_MODES)
    cell_clip: float | None = None  # TF1 LSTMCell/LSTMBlockCell cell_clip (not stored)
    proj_clip: float | None = None  # TF1 LSTMCell proj_clip (not stored)
    gate_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # extra scope names per gate letter
    var_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # extra names for x / h / b

    def declared(self) -> dict[str, Any]:
        """The facts the user declared (fact -> value)."""
        return {k: getattr(self, k) for k in FACT_FLAGS if getattr(self, k) is not None}


@dataclass
class RecurrentGroup:
    """A recognized LSTM/GRU parameter group: its scope, layout, sizes, layers and directions, its members (tensor
    paths), the facts that decide what it computes and where each came from (``provenance``), and ``cells()``."""

    scope: str
    kind: str  # "lstm" | "gru"
    layout: str  # torch, torch-cell, keras, keras-cudnn, keras1, tf1, tf1-gru, per-gate, gates, onnx
    variant: str  # what wrote it, in words
    input_size: int
    hidden_size: int
    num_layers: int = 1
    directions: int = 1
    proj_size: int = 0
    bias: str = "two"  # two | one | none | cudnn (input + recurrent, stacked)
    peepholes: bool = False
    reset_after: bool | None = None  # GRU family; None for a GRU: not known
    forget_bias: float = 0.0  # run-time constant folded in on load
    activation: str | None = "tanh"  # names of activations.ACTIVATIONS; None: not known
    recurrent_activation: str | None = "sigmoid"
    topology: str = "interleaved"  # see cell.Stack
    go_backwards: bool = False
    merge_mode: str | None = None  # Keras Bidirectional: MERGE_MODES; None: not a Keras Bidirectional
    cell_clip: float | None = None  # TF1: the cell state is clipped to [-c, c] each step; None: no clipping
    proj_clip: float | None = None  # TF1: the projected output is clipped to [-p, p]; None: no clipping
    orientation: str | None = None  # hand-built per-gate cells: "xw" or "wx"
    clip: float | None = None  # ONNX clip attribute (gate pre-activations clipped); None: no clipping
    input_forget: bool = False  # ONNX input_forget attribute (LSTM: f = 1 - i)
    provenance: dict[str, str] = field(default_factory=dict)  # fact -> "origin: detail"
    members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    uses: list[str] = field(default_factory=list)  # other ONNX nodes computing with the same tensors (one cell)
    load: Callable[[], Stack | list] | None = field(default=None, repr=False, compare=False)
    # Groups whose stored tensors are not the layout's own (ONNX nodes fed through constant chains): the
    # converted tensors (relative names, as the layout's writer names them) -> {member path: new value}.
    write_back: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def cells(self) -> Stack:
        """The weights in canonical layout, with this group's semantics (activations, family, topology)."""
        if self.load is None:
            raise FormatError(f"group {self.scope!r} cannot be loaded")
        try:
            raw = self.load()
        except (ValueError, IndexError) as exc:  # a layout's slicing/concatenation met tensors of the wrong shapes
            raise FormatError(f"group {self.scope or '/'} ({self.variant}): its tensors ({', '.join(self.members)}) do "
                              f"not fit its layout ({exc}); refusing") from None
        stack = raw if isinstance(raw, Stack) else Stack(list(raw))
        self._check_shapes(stack)
        gru = self.kind == "gru"
        stack = stack.map(lambda c: c.with_(activation=self.activation, recurrent_activation=self.recurrent_activation,
                                            reset_after=self.reset_after if gru else True, clip=self.clip,
                                            input_forget=self.input_forget and not gru,
                                            cell_clip=None if gru else self.cell_clip,
                                            proj_clip=None if gru or c.w_hr is None else self.proj_clip))
        stack.topology, stack.go_backwards = self.topology, self.go_backwards
        return stack

    def _check_shapes(self, stack: Stack) -> None:
        """Every cell's arrays have the shapes the group's sizes imply, else one ``FormatError`` naming them (a
        damaged or hand-edited file must not reach the arithmetic)."""
        G = 4 if self.kind == "lstm" else 3
        H, P = self.hidden_size, self.proj_size or self.hidden_size
        if len(stack) != self.num_layers or any(len(layer) != self.directions for layer in stack):
            raise FormatError(f"group {self.scope or '/'}: holds {len(stack)} layer(s) of "
                              f"{sorted({len(layer) for layer in stack})} direction(s), its names say "
                              f"{self.num_layers} x {self.directions}")
        for k, layer in enumerate(stack):
            n_in = self.input_size if k == 0 else (P if self.topology == "independent" else self.directions * P)
            for d, cell in enumerate(layer):
                want = {"input kernel": (G * H, n_in), "recurrent kernel": (G * H, P), "input bias": (G * H,),
                        "recurrent bias": (G * H,), "peepholes": (3, H), "projection": (self.proj_size, H)}
                have = {"input kernel": cell.w_ih, "recurrent kernel": cell.w_hh, "input bias": cell.b_ih,
                        "recurrent bias": cell.b_hh, "peepholes": cell.peepholes, "projection": cell.w_hr}
                bad = [f"{role} has shape {list(arr.shape)}, expected {list(want[role])}"
                       for role, arr in have.items() if arr is not None and tuple(arr.shape) != want[role]]
                if bad:
                    where = f"layer {k}" + (" backward" if d else " forward" if self.directions > 1 else "")
                    raise FormatError(f"group {self.scope or '/'} ({self.variant}), {where}: " + "; ".join(bad)
                                      + f" (a {self.kind.upper()} of input {self.input_size}, hidden {H}"
                                      + (f", projection {self.proj_size}" if self.proj_size else "") + "); refusing")

    @property
    def family(self) -> str | None:
        if self.kind != "gru":
            return None
        return None if self.reset_after is None else ("reset-after" if self.reset_after else "reset-before")

    def unsettled(self) -> dict[str, str]:
        """Facts that are assumed or missing: fact -> provenance. A conversion refuses these."""
        return {k: v for k, v in self.provenance.items() if origin(v) in ("assumed", "missing")}

    def set_fact(self, name: str, value: Any, source: str) -> None:
        setattr(self, name, value)
        self.provenance[name] = source

    def describe(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "scope", "kind", "layout", "variant", "input_size", "hidden_size", "proj_size", "num_layers",
            "directions", "bias", "peepholes", "reset_after", "forget_bias", "activation",
            "recurrent_activation", "topology", "go_backwards", "merge_mode", "cell_clip", "proj_clip", "orientation",
            "clip", "input_forget",
            "members", "notes", "uses")}
        out["family"] = self.family
        out["formulas"] = {"activation": formula(self.activation), "recurrent_activation": formula(self.recurrent_activation)}
        out["provenance"] = dict(self.provenance)
        return out
