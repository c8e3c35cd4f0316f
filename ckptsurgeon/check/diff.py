"""Compare two checkpoints, across formats: tensors by path, recurrent groups per gate by meaning."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..index import CheckpointIndex
from ..rnn.gates import GATE_LABELS
from ..rnn.group import RecognizeOptions
from ..rnn.recognize import recognize

__all__ = ["diff"]


def _delta(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = np.abs(a64 - b64)
    return float(d.max()) if d.size else 0.0, float((d / np.maximum(np.abs(b64), 1e-12)).max()) if d.size else 0.0


def diff(a: CheckpointIndex, b: CheckpointIndex, *, atol: float = 0.0, rtol: float = 0.0,
         options: RecognizeOptions | None = None) -> dict[str, Any]:
    ga, gb = recognize(a, options), recognize(b, options)
    grouped_a = {m for g in ga for m in g.members}
    grouped_b = {m for g in gb for m in g.members}
    out: dict[str, Any] = {"only_in_a": [], "only_in_b": [], "changed": [], "values": [], "groups": []}
    for path, ref in a.items():
        if path in grouped_a and path not in b:
            continue
        if path not in b:
            out["only_in_a"].append(path)
            continue
        other = b[path]
        if ref.shape != other.shape or ref.dtype_name != other.dtype_name:
            out["changed"].append({"path": path, "a": [list(ref.shape), ref.dtype_name], "b": [list(other.shape), other.dtype_name]})
            continue
        if ref.dtype.kind in "fiub" or ref.dtype_name == "bfloat16":
            x, y = ref.numpy(), other.numpy()
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                max_abs, max_rel = _delta(x, y)
                out["values"].append({"path": path, "max_abs": max_abs, "max_rel": max_rel,
                                      "within_tolerance": bool(np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=atol))})
    out["only_in_b"] = [p for p in b if p not in a and p not in grouped_b]
    for x, y in zip(ga, gb):
        entry: dict[str, Any] = {"a": x.scope, "b": y.scope, "kind": x.kind, "gates": []}
        if (x.kind, x.hidden_size, x.input_size, x.num_layers, x.directions) != (y.kind, y.hidden_size, y.input_size, y.num_layers, y.directions):
            entry["mismatch"] = "different kind or sizes"
            out["groups"].append(entry)
            continue
        letters = "ifgo" if x.kind == "lstm" else "rzn"
        for k, (la, lb) in enumerate(zip(x.cells(), y.cells())):
            for d, (ca, cb) in enumerate(zip(la, lb)):
                for part, pa, pb in (("input kernel", ca.w_ih, cb.w_ih), ("recurrent kernel", ca.w_hh, cb.w_hh),
                                     ("bias", sum(ca.biases()), sum(cb.biases()))):
                    for j, letter in enumerate(letters):
                        max_abs, max_rel = _delta(np.split(pa, len(letters))[j], np.split(pb, len(letters))[j])
                        if max_abs > atol:
                            entry["gates"].append({"layer": k, "direction": "backward" if d else "forward",
                                                   "gate": GATE_LABELS[letter], "part": part, "max_abs": max_abs, "max_rel": max_rel})
        out["groups"].append(entry)
    out["identical"] = not any(out[k] for k in ("only_in_a", "only_in_b", "changed", "values")) and not any(
        g.get("gates") or g.get("mismatch") for g in out["groups"])
    return out
