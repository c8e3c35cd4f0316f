"""Compare two paired recurrent groups by what their cells compute.

- Semantics first: the GRU family (reset-after vs reset-before), activations and anything else that
  changes the computation without being a weight. Run-time constants (TF1's ``forget_bias``) are
  listed; they are folded into the forget-gate bias before the values are compared.
- Then per gate: input kernel, recurrent kernel, and the biases the way the family uses them. An LSTM
  or a reset-before GRU only ever adds ``b_ih + b_hh``, so their sum is compared; a reset-after GRU
  multiplies the candidate's recurrent bias ``b_hn`` by the reset gate, so ``b_in`` and ``b_hn`` are
  compared separately. Peepholes and projections too.
- Then the outputs: the numpy reference cells run both stacks on the same random inputs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..rnn.cell import Cell, Stack
from ..rnn.gates import GATE_LABELS
from ..rnn.group import RecurrentGroup
from ..rnn.reference import run_stack

__all__ = ["compare_groups", "fold_biases", "describe_group", "differs"]

# Group properties that change what the cells compute without being weights.
SEMANTICS = ("family", "activation", "recurrent_activation", "go_backwards", "merge_mode")


def describe_group(g: RecurrentGroup) -> dict[str, Any]:
    return {"scope": g.scope, "kind": g.kind, "variant": g.variant, "input_size": g.input_size,
            "hidden_size": g.hidden_size, "proj_size": g.proj_size, "num_layers": g.num_layers, "directions": g.directions}


def _delta(a: np.ndarray, b: np.ndarray, slack: np.ndarray | float = 0.0) -> tuple[float, float, bool]:
    """(max abs, max rel, whether every element is within ``slack``) of ``a - b``."""
    with np.errstate(all="ignore"):  # the casts too: widening a signaling NaN raises "invalid"
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        d = np.abs(a64 - b64)
        if not d.size:
            return 0.0, 0.0, True
        return float(d.max()), float((d / np.maximum(np.abs(b64), 1e-12)).max()), bool(np.all(d <= slack))


def _eps(*arrays: np.ndarray) -> float:
    """The machine epsilon of the least precise floating dtype among ``arrays`` (0 for integers)."""
    eps = [float(np.finfo(a.dtype).eps) for a in arrays if np.issubdtype(a.dtype, np.floating)]
    return max(eps, default=0.0)


@np.errstate(over="ignore", invalid="ignore")  # inf/nan/signaling-NaN biases: the comparison reports them
def _sum_slack(ca: Cell, cb: Cell, atol: float) -> np.ndarray:
    """Per element, how far two summed biases may differ and still be one function: ``atol`` plus the
    rounding of ``b_ih + b_hh`` on each side (two ulps of the larger addend pair, in the stored dtype).
    Splitting a bias differently between ``b_ih`` and ``b_hh`` changes the sum by that rounding only."""
    (ia, ha), (ib, hb) = ca.biases(), cb.biases()
    scale = np.maximum(np.abs(ia.astype(np.float64)) + np.abs(ha.astype(np.float64)),
                       np.abs(ib.astype(np.float64)) + np.abs(hb.astype(np.float64)))
    return atol + 2 * _eps(ia, ha, ib, hb) * scale


def fold_biases(cell: Cell) -> tuple[np.ndarray, np.ndarray]:
    """(b_ih, b_hh) with every block the cell only ever adds summed into b_ih, in the stored dtype.

    The reset-after GRU's candidate block stays split: ``r * (W_hn h + b_hn)`` is not ``+ b_hn``.
    """
    b_ih, b_hh = cell.biases()
    b_ih, b_hh = b_ih.copy(), b_hh.copy()
    H = cell.hidden
    blocks = range(2) if cell.kind == "gru" and cell.reset_after else range(cell.gates)
    with np.errstate(over="ignore", invalid="ignore"):  # 3.4e38 + 3.4e38 is inf: a finding, not a warning
        for j in blocks:
            rows = slice(j * H, (j + 1) * H)
            b_ih[rows] = b_ih[rows] + b_hh[rows]
            b_hh[rows] = 0
    return b_ih, b_hh


def _folded_stack(stack: Stack) -> Stack:
    out = []
    for layer in stack:
        out.append([cell.with_(b_ih=fold_biases(cell)[0], b_hh=fold_biases(cell)[1]) for cell in layer])
    return out


Part = tuple[str, list[str], np.ndarray, np.ndarray, "np.ndarray | float"]


def _parts(ca: Cell, cb: Cell, letters: str, atol: float) -> list[Part]:
    """(part name, gate letters, array A, array B, per-element slack) to compare gate by gate."""
    (ia, ha), (ib, hb) = fold_biases(ca), fold_biases(cb)
    slack = _sum_slack(ca, cb, atol)
    parts: list[Part] = [("input kernel", list(letters), ca.w_ih, cb.w_ih, atol),
                         ("recurrent kernel", list(letters), ca.w_hh, cb.w_hh, atol)]
    split = ca.kind == "gru" and (ca.reset_after or cb.reset_after)
    if split:  # r, z: the sum; n: b_in and b_hn apart
        H = ca.hidden
        parts.append(("bias (input + recurrent)", list(letters[:2]), ia[:2 * H], ib[:2 * H], slack[:2 * H]))
        parts.append(("input bias", [letters[2]], ia[2 * H:], ib[2 * H:], atol))
        parts.append(("recurrent bias", [letters[2]], ha[2 * H:], hb[2 * H:], atol))
    else:
        parts.append(("bias (input + recurrent)", list(letters), ia, ib, slack))
    if ca.peepholes is not None or cb.peepholes is not None:
        zero = np.zeros((3, ca.hidden))
        parts.append(("peephole", ["i", "f", "o"], ca.peepholes if ca.peepholes is not None else zero,
                      cb.peepholes if cb.peepholes is not None else zero, atol))
    if ca.w_hr is not None and cb.w_hr is not None:
        parts.append(("projection", ["-"], ca.w_hr, cb.w_hr, atol))
    return parts


def _semantics(x: RecurrentGroup, y: RecurrentGroup) -> list[dict[str, Any]]:
    dx, dy = x.describe(), y.describe()
    rows = []
    for prop in SEMANTICS:
        va, vb = dx.get(prop, getattr(x, prop, None)), dy.get(prop, getattr(y, prop, None))
        if prop == "merge_mode" and x.directions == 2:  # no merge mode (PyTorch, TF1, ONNX): both directions, concatenated
            va, vb = va or "concat", vb or "concat"
        if prop == "family" and x.kind != "gru":
            continue
        if va != vb:
            rows.append({"property": prop, "a": va, "b": vb})
    return rows


def compare_groups(x: RecurrentGroup, y: RecurrentGroup, *, atol: float = 0.0, steps: int = 7, batch: int = 3,
                   seed: int = 0) -> dict[str, Any]:
    """The differences between two groups of the same kind and sizes (see the module docstring)."""
    entry: dict[str, Any] = {"semantics": _semantics(x, y), "constants": [], "gates": [], "output_max_abs": None}
    if x.kind == "lstm" and x.forget_bias != y.forget_bias:
        entry["constants"].append({"property": "forget_bias", "a": x.forget_bias, "b": y.forget_bias,
                                   "note": "run-time constant, folded into the forget-gate bias before comparing"})
    try:
        sa, sb = x.cells(), y.cells()
    except CheckpointError as exc:
        entry["mismatch"] = f"cannot compare: {exc}"
        return entry
    letters = "ifgo" if x.kind == "lstm" else "rzn"
    rounding = 0.0  # the largest summed-bias difference that is the rounding of the sums, not a change
    for k, (la, lb) in enumerate(zip(sa, sb)):
        for d, (ca, cb) in enumerate(zip(la, lb)):
            for part, gates, pa, pb, slack in _parts(ca, cb, letters, atol):
                blocks_a, blocks_b = np.split(np.asarray(pa), len(gates)), np.split(np.asarray(pb), len(gates))
                blocks_s = np.split(slack, len(gates)) if isinstance(slack, np.ndarray) else [slack] * len(gates)
                for letter, ba, bb, bs in zip(gates, blocks_a, blocks_b, blocks_s):
                    max_abs, max_rel, within = _delta(ba, bb, bs)
                    if max_abs > atol and within:
                        rounding = max(rounding, max_abs)
                    elif max_abs > atol:
                        entry["gates"].append({"layer": k, "direction": "backward" if d else "forward",
                                               "gate": GATE_LABELS.get(letter, letter), "part": part,
                                               "max_abs": max_abs, "max_rel": max_rel})
    inputs = np.random.default_rng(seed).standard_normal((steps, batch, x.input_size))
    with np.errstate(all="ignore"):
        try:
            out_a, out_b = run_stack(_folded_stack(sa), inputs), run_stack(_folded_stack(sb), inputs)
        except CheckpointError as exc:  # a fact the cells need is not known (weights only): a difference to report
            entry["mismatch"] = f"cannot run: {exc} (see 'ckptsurgeon rnn' for where each fact comes from)"
            return entry
        entry["output_max_abs"] = float(np.max(np.abs(out_a - out_b)))
        scale = float(np.max(np.abs(out_a))) if out_a.size else 0.0
    entry["output_atol"] = atol
    if rounding:  # the biases are split differently: the outputs may differ by what that rounding moves
        eps = _eps(*(np.asarray(c.w_ih) for layer in sa for c in layer))
        entry["bias_rounding"] = rounding
        entry["output_atol"] = max(atol, 64 * eps * max(1.0, scale))
    return entry


def differs(entry: dict[str, Any], atol: float) -> bool:
    """Whether the two groups compute different functions (beyond ``atol``, or the bias-sum rounding)."""
    out = entry.get("output_max_abs")
    limit = entry.get("output_atol", atol)
    return bool(entry.get("mismatch") or entry.get("semantics") or entry.get("gates") or (out is not None and out > limit))
