"""``stats --plot``: per-gate histograms of each recurrent group (matplotlib, optional)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from ..index import CheckpointIndex
from ..rnn.gates import GATE_LABELS
from ..rnn.group import RecognizeOptions
from ..rnn.recognize import recognize

__all__ = ["plot_gates"]


def plot_gates(index: CheckpointIndex, stats: dict[str, Any], fh: Any, options: RecognizeOptions | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "plot", "stats --plot") from None
    groups = recognize(index, options)
    rows = [(g, part) for g in groups for part in ("input kernel", "recurrent kernel", "bias")]
    if not rows:
        rows_tensors = [r for r in index.values() if r.dtype.kind == "f"][:12]
        fig, axes = plt.subplots(len(rows_tensors) or 1, 1, figsize=(6, 2 * max(1, len(rows_tensors))), squeeze=False)
        for ax, ref in zip(axes[:, 0], rows_tensors):
            ax.hist(ref.numpy().ravel(), bins=50)
            ax.set_title(ref.path, fontsize=8)
        fig.tight_layout()
        fig.savefig(fh, format="png", dpi=90)
        plt.close(fig)
        return
    ncols = 4
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3.2 * ncols, 2.2 * len(rows)), squeeze=False)
    inits = {(g["scope"], r["part"], r["gate"]): r["init"] for g in stats["groups"] for r in g["gates"]
             if r["layer"] == 0 and r["direction"] == "forward"}
    for i, (g, part) in enumerate(rows):
        cell = g.cells()[0][0]
        letters = "ifgo" if g.kind == "lstm" else "rzn"
        arr = {"input kernel": cell.w_ih, "recurrent kernel": cell.w_hh, "bias": sum(cell.biases())}[part]
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(letters):
                ax.axis("off")
                continue
            block = np.split(arr, len(letters))[j].ravel()
            ax.hist(block, bins=40, color="C%d" % j)
            label = GATE_LABELS[letters[j]]
            ax.set_title(f"{g.scope or '/'} {part}\n{label} gate: {inits.get((g.scope, part, label), '')}", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"{index.files[0]}: per-gate value histograms (layer 0, forward)", fontsize=9)
    fig.tight_layout()
    fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
