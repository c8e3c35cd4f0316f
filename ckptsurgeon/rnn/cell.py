"""The canonical recurrent cell: one layer, one direction, in PyTorch's layout.

Every source layout converts *to* this and every target layout converts *from* it, so a layout
is written once. Arrays: ``w_ih (G*H, in)``, ``w_hh (G*H, H or P)``, ``b_ih``/``b_hh (G*H,)`` in
canonical gate order (LSTM ifgo, GRU rzn), optional peepholes ``(3, H)`` for i, f, o and
projection ``w_hr (P, H)``. TF1's run-time forget_bias is already folded into ``b_ih``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Cell", "Stack"]


@dataclass(frozen=True)
class Cell:
    kind: str  # "lstm" | "gru"
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None
    b_hh: np.ndarray | None
    reset_after: bool = True  # GRU family; LSTMs ignore it
    peepholes: np.ndarray | None = None
    w_hr: np.ndarray | None = None
    recurrent_activation: str = "sigmoid"
    activation: str = "tanh"

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


# layers x directions (forward, then reverse)
Stack = list[list[Cell]]
