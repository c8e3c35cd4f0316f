"""The canonical recurrent cell: one layer, one direction, in PyTorch's layout.

Every source layout converts *to* this and every target layout converts *from* it, so a layout
is written once. Arrays: ``w_ih (G*H, in)``, ``w_hh (G*H, H or P)``, ``b_ih``/``b_hh (G*H,)`` in
canonical gate order (LSTM ifgo, GRU rzn), optional peepholes ``(3, H)`` for i, f, o and
projection ``w_hr (P, H)``. TF1's run-time forget_bias is already folded into ``b_ih``; TF1's
``cell_clip``/``proj_clip`` (not stored in checkpoints) are run-time facts of the cell. ONNX nodes add
``clip`` (every gate pre-activation clipped to [-clip, clip]) and ``input_forget`` (LSTM: f = 1 - i).

A ``Stack`` is layers x directions of cells plus what the stack computes beyond its cells: how
layers are wired (``topology``) and Keras's ``go_backwards``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Cell", "Stack", "TOPOLOGIES", "lay_out"]


@dataclass(frozen=True)
class Cell:
    """One recurrent cell (a layer's direction) in PyTorch orientation: ``w_ih`` (G*H, in), ``w_hh`` (G*H, H or P),
    biases, gates i,f,g,o (LSTM) or r,z,n (GRU), optional peepholes and projection, and the facts it runs with."""

    kind: str  # "lstm" | "gru"
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None
    b_hh: np.ndarray | None
    reset_after: bool | None = True  # GRU family (None: not known, the reference cells refuse); LSTMs ignore it
    peepholes: np.ndarray | None = None
    w_hr: np.ndarray | None = None
    recurrent_activation: str | None = "sigmoid"  # names of activations.ACTIVATIONS; None: not known
    activation: str | None = "tanh"
    clip: float | None = None  # ONNX clip: gate pre-activations (peephole terms included) clipped to [-clip, clip]
    input_forget: bool = False  # ONNX input_forget=1 (LSTM): the forget gate is 1 - input gate
    cell_clip: float | None = None  # TF1 LSTMCell: c clipped to [-cell_clip, cell_clip] after each update
    proj_clip: float | None = None  # TF1 LSTMCell: the projected output clipped to [-proj_clip, proj_clip]

    @property
    def gates(self) -> int:
        return 4 if self.kind == "lstm" else 3

    @property
    def hidden(self) -> int:
        return self.w_ih.shape[0] // self.gates

    @property
    def input_size(self) -> int:
        return self.w_ih.shape[1]

    @property
    def proj(self) -> int:
        return 0 if self.w_hr is None else self.w_hr.shape[0]

    @property
    def has_bias(self) -> bool:
        return self.b_ih is not None

    def biases(self) -> tuple[np.ndarray, np.ndarray]:
        """(b_ih, b_hh), zeros where the cell has none."""
        zero = np.zeros(self.w_ih.shape[0], self.w_ih.dtype)
        return (zero if self.b_ih is None else self.b_ih), (zero if self.b_hh is None else self.b_hh)

    def with_(self, **changes) -> Cell:
        return replace(self, **changes)


TOPOLOGIES = ("interleaved", "independent")


@dataclass
class Stack:
    """``layers[k][d]``: layer k, direction d (forward, then reverse).

    ``topology``: ``interleaved`` (PyTorch, Keras, ONNX, TF1 ``stack_bidirectional_dynamic_rnn``): layer
    k reads every direction of layer k-1; ``independent`` (TF1 ``bidirectional_dynamic_rnn`` over two
    ``MultiRNNCell``): each direction is its own stack, layer k of fw reads only layer k-1 of fw.
    ``go_backwards`` (Keras, one direction): runs last step first and returns outputs in that order.
    """

    layers: list[list[Cell]]
    topology: str = "interleaved"
    go_backwards: bool = False

    def __iter__(self) -> Iterator[list[Cell]]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, k: int) -> list[Cell]:
        return self.layers[k]

    def map(self, fn: Callable[[Cell], Cell]) -> Stack:
        return Stack([[fn(c) for c in layer] for layer in self.layers], self.topology, self.go_backwards)


def lay_out(stack: Stack, halves: tuple[str, str], params: Callable[[Cell], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Relative names of a stack held as one layer module per layer (Keras's and Flax's shape): layer k under
    ``layer_k/`` when there are several, each direction under its half's name (``halves``: forward, backward) when
    there are two, the cell's ``params`` under ``cell/``."""
    out: dict[str, np.ndarray] = {}
    for k, layer in enumerate(stack):
        base = "" if len(stack) == 1 else f"layer_{k}/"
        for d, cell in enumerate(layer):
            where = base + ("" if len(layer) == 1 else halves[d])
            for name, arr in params(cell).items():
                out[f"{where}cell/{name}"] = arr
    return out
