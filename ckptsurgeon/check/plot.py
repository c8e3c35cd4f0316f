"""``stats --plot``: per-gate histograms of each recurrent group (matplotlib, optional).

Readable at every size: each row has a fixed height in inches and names its group and part on its left, each
histogram's title is short (the gate and its initializer guess, wrapped to the column), and a constrained
layout keeps the figure title clear of the rows. Past ``MAX_ROWS`` rows the figure says what it left out.
"""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from ..index import CheckpointIndex
from ..rnn.gates import GATE_LABELS
from ..rnn.group import RecognizeOptions
from ..rnn.recognize import recognize

__all__ = ["plot_gates", "MAX_ROWS", "figure_gates"]

MAX_ROWS = 48  # rows (group x part) drawn; 16 groups of 3 parts
ROW_INCHES = 2.0
COL_INCHES = 3.0
_CHARS = 40  # characters of a 7-point title line that fit a column
_PARTS = ("input kernel", "recurrent kernel", "bias")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _title(text: str, lines: int = 2) -> str:
    return "\n".join(textwrap.wrap(text, _CHARS, max_lines=lines, placeholder=" ...") or [""])


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "plot", "stats --plot") from None
    return plt


def figure_gates(index: CheckpointIndex, stats: dict[str, Any], options: RecognizeOptions | None = None) -> Any:
    """The figure ``plot_gates`` saves (tests measure where its texts fall)."""
    plt = _pyplot()
    groups = recognize(index, options)
    rows = [(g, part) for g in groups for part in _PARTS]
    if not rows:
        return _tensor_figure(plt, index)
    left_out = len(rows) - MAX_ROWS
    rows = rows[:MAX_ROWS]
    ncols = 4
    fig, axes = plt.subplots(len(rows), ncols, figsize=(COL_INCHES * ncols + 1.2, ROW_INCHES * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    inits = {(g["scope"], r["part"], r["gate"]): r["init"] for g in stats["groups"] for r in g["gates"]
             if r["layer"] == 0 and r["direction"] == "forward"}
    for i, (g, part) in enumerate(rows):
        cell = g.cells()[0][0]
        letters = "ifgo" if g.kind == "lstm" else "rzn"
        arr = {"input kernel": cell.w_ih, "recurrent kernel": cell.w_hh, "bias": sum(cell.biases())}[part]
        axes[i, 0].set_ylabel(f"{_short(g.scope or '/', 28)}\n{part}", fontsize=7)
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(letters):
                ax.axis("off")
                continue
            block = np.split(arr, len(letters))[j].ravel()
            ax.hist(block, bins=40, color="C%d" % j)
            label = GATE_LABELS[letters[j]]
            ax.set_title(_title(f"{label} gate: {inits.get((g.scope, part, label), '')}"), fontsize=7)
            ax.tick_params(labelsize=6)
    more = f"; {left_out // len(_PARTS)} more group(s) not drawn" if left_out > 0 else ""
    fig.suptitle(f"{_short(str(index.files[0]), 60)}: per-gate value histograms (layer 0, forward){more}", fontsize=9)
    return fig


def _tensor_figure(plt: Any, index: CheckpointIndex) -> Any:
    tensors = [r for r in index.values() if r.dtype.kind == "f"][:12]
    fig, axes = plt.subplots(len(tensors) or 1, 1, figsize=(6, ROW_INCHES * max(1, len(tensors))), squeeze=False,
                             layout="constrained")
    for ax, ref in zip(axes[:, 0], tensors):
        ax.hist(ref.numpy().ravel(), bins=50)
        ax.set_title(_short(ref.path, 80), fontsize=8)
        ax.tick_params(labelsize=6)
    return fig


def plot_gates(index: CheckpointIndex, stats: dict[str, Any], fh: Any, options: RecognizeOptions | None = None) -> None:
    plt = _pyplot()
    fig = figure_gates(index, stats, options)
    fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
