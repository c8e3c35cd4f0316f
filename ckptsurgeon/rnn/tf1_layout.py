"""TensorFlow 1 ``rnn_cell`` variables: LSTMCell / BasicLSTMCell / LSTMBlockCell (peepholes, num_proj),
GRUCell, CudnnCompatible cells, TF 0.x ``Linear/Matrix`` names; ``multi_rnn_cell/cell_k`` are layers
and ``bidirectional_rnn/fw|bw`` directions.

LSTM: one kernel ``(in + H_or_P, 4H)`` on ``concat([x, h])``, gate order i, j, f, o, one bias, and
``forget_bias`` (default 1.0, CudnnCompatible 0) added to f at run time. GRUCell: ``gates/kernel
(in + H, 2H)`` = [r, u] and ``candidate/kernel (in + H, H)``: the reset-before family.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from ..index import CheckpointIndex
from .cell import Cell, Stack
from .gates import ORDERS, reorder
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write"]

# cell scope name -> (kind, default forget_bias, words)
LSTM_CELLS = {
    "lstm_cell": 1.0,  # tf.compat.v1.nn.rnn_cell.LSTMCell, LSTMBlockCell
    "basic_lstm_cell": 1.0,  # BasicLSTMCell
    "lstm_fused_cell": 1.0,  # LSTMBlockFusedCell
    "cudnn_compatible_lstm_cell": 0.0,  # CudnnCompatibleLSTMCell
    "BasicLSTMCell": 1.0,  # TF 0.x (Linear/Matrix, Linear/Bias)
    "LSTMCell": 1.0,  # TF 0.x
}
GRU_CELLS = ("gru_cell", "GRUCell", "cudnn_compatible_gru_cell")
STRUCTURE = re.compile(r"^(fw|bw|multi_rnn_cell|MultiRNNCell|cell_\d+|Cell\d+)$")

# (kernel, bias) variable names inside an LSTM cell scope, newest first.
LSTM_VARS = (("kernel", "bias"), ("Linear/Matrix", "Linear/Bias"), ("W_0", "B"))
GRU_VARS = (
    ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"),
    ("Gates/Linear/Matrix", "Gates/Linear/Bias", "Candidate/Linear/Matrix", "Candidate/Linear/Bias"),
)


def _position(segs: list[str], cell_at: int) -> tuple[str, int, int]:
    """(group scope, layer, direction) from the structural segments around a cell scope."""
    layer, direction, keep = 0, 0, []
    for i, seg in enumerate(segs[:cell_at]):
        if seg in ("fw", "bw") and i > 0 and segs[i - 1] in ("bidirectional_rnn", "BiRNN"):
            direction = 1 if seg == "bw" else 0
        elif re.match(r"^(cell_|Cell)(\d+)$", seg) and i > 0 and segs[i - 1] in ("multi_rnn_cell", "MultiRNNCell"):
            layer = int(re.sub(r"\D", "", seg))
        elif seg not in ("multi_rnn_cell", "MultiRNNCell"):
            keep.append(seg)
    if keep and keep[-1] in ("rnn", "bidirectional_rnn", "BiRNN", "RNN"):
        keep.pop()  # the scope dynamic_rnn / bidirectional_dynamic_rnn add; the writer adds it back
    return "/".join(keep), layer, direction


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    cells: dict[str, dict[tuple[int, int], tuple[str, str, dict[str, str]]]] = defaultdict(dict)
    paths = set(index)
    for path in index:
        segs = path.split("/")
        for at, seg in enumerate(segs):
            base = "/".join(segs[: at + 1])
            if seg in LSTM_CELLS and f"{base}/recurrent_kernel" not in paths:  # that one is Keras's
                for kname, bname in LSTM_VARS:
                    if path == f"{base}/{kname}":
                        found = {"kernel": path}
                        if f"{base}/{bname}" in paths:
                            found["bias"] = f"{base}/{bname}"
                        for extra in ("w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel"):
                            if f"{base}/{extra}" in paths:
                                found[extra] = f"{base}/{extra}"
                        scope, layer, d = _position(segs, at)
                        cells[scope][(layer, d)] = ("lstm", seg, found)
            elif seg in GRU_CELLS:
                for names in GRU_VARS:
                    if path == f"{base}/{names[0]}" and all(f"{base}/{n}" in paths for n in names[1:]):
                        scope, layer, d = _position(segs, at)
                        cells[scope][(layer, d)] = ("gru", seg, dict(zip(("gk", "gb", "ck", "cb"), (f"{base}/{n}" for n in names))))
    groups = []
    for scope, found in cells.items():
        group = _group(index, scope, found, options)
        if group is not None:
            groups.append(group)
    return groups


def _group(index, scope, found, options: RecognizeOptions) -> RecurrentGroup | None:
    layers = sorted({k for k, _ in found})
    dirs = sorted({d for _, d in found})
    if layers != list(range(len(layers))) or dirs not in ([0], [0, 1]) or len(found) != len(layers) * len(dirs):
        return None
    kind, cell_name, parts = found[(0, 0)]
    if any(v[0] != kind for v in found.values()):
        return None
    members = [p for _, _, parts_ in found.values() for p in parts_.values()]
    if kind == "lstm":
        kshape = index[parts["kernel"]].shape
        hidden = kshape[1] // 4
        proj = index[parts["projection/kernel"]].shape[1] if "projection/kernel" in parts else 0
        n_in = kshape[0] - (proj or hidden)
        fb = LSTM_CELLS[cell_name] if cell_name == "cudnn_compatible_lstm_cell" else options.forget_bias
        group = RecurrentGroup(scope=scope, kind="lstm", layout="tf1", variant=_variant(cell_name, parts),
                               input_size=n_in, hidden_size=hidden, num_layers=len(layers), directions=len(dirs),
                               proj_size=proj, bias="one", peepholes="w_i_diag" in parts, forget_bias=fb, members=members)
        if fb:
            group.notes.append(f"adds forget_bias={fb:g} to the forget gate at run time (override with --forget-bias)")
    else:
        gk = index[parts["gk"]].shape
        hidden = gk[1] // 2
        after = cell_name == "cudnn_compatible_gru_cell"
        group = RecurrentGroup(scope=scope, kind="gru", layout="tf1-gru", variant=f"TF1 {cell_name}",
                               input_size=gk[0] - hidden, hidden_size=hidden, num_layers=len(layers),
                               directions=len(dirs), bias="one", reset_after=after, members=members)
        if after:
            return None  # CudnnCompatibleGRUCell splits its candidate differently: not supported yet
    group.load = lambda: [[_load(index, found[(k, d)], group) for d in dirs] for k in layers]
    return group


def _variant(cell_name: str, parts: dict[str, str]) -> str:
    extras = [w for w, key in (("peepholes", "w_i_diag"), ("num_proj", "projection/kernel")) if key in parts]
    return f"TF1 {cell_name}" + (f" ({', '.join(extras)})" if extras else "")


def _load(index, entry, group: RecurrentGroup) -> Cell:
    kind, _, parts = entry
    get = lambda key: index[parts[key]].numpy()  # noqa: E731
    if kind == "lstm":
        kernel = get("kernel")
        n_in = group.input_size if group.num_layers == 1 else kernel.shape[0] - (group.proj_size or group.hidden_size)
        order = ORDERS[("tf1", "lstm")]
        w = reorder(kernel.T, order, "ifgo")
        bias = reorder(get("bias"), order, "ifgo").copy() if "bias" in parts else np.zeros(kernel.shape[1], kernel.dtype)
        H = group.hidden_size
        bias[H:2 * H] += np.asarray(group.forget_bias, bias.dtype)  # fold the run-time forget_bias in
        peep = np.stack([get("w_i_diag"), get("w_f_diag"), get("w_o_diag")]) if group.peepholes else None
        w_hr = get("projection/kernel").T if group.proj_size else None
        return Cell("lstm", w[:, :n_in], w[:, n_in:], bias, np.zeros_like(bias), peepholes=peep, w_hr=w_hr)
    gk, gb, ck, cb = get("gk"), get("gb"), get("ck"), get("cb")
    H = gk.shape[1] // 2
    n_in = gk.shape[0] - H
    r, u = gk[:, :H], gk[:, H:]
    w_ih = np.concatenate([r[:n_in].T, u[:n_in].T, ck[:n_in].T])
    w_hh = np.concatenate([r[n_in:].T, u[n_in:].T, ck[n_in:].T])
    b = np.concatenate([gb[:H], gb[H:], cb])
    return Cell("gru", w_ih, w_hh, b, np.zeros_like(b), reset_after=False)


def write(stack: Stack, forget_bias: float = 1.0) -> dict[str, np.ndarray]:
    """TF1 names relative to the group scope (LSTMCell or GRUCell), forget_bias taken out again."""
    out: dict[str, np.ndarray] = {}
    dirs = len(stack[0])
    for k, layer in enumerate(stack):
        for d, cell in enumerate(layer):
            base = ("bidirectional_rnn/" + ("fw/" if d == 0 else "bw/")) if dirs == 2 else "rnn/"
            if len(stack) > 1:
                base += f"multi_rnn_cell/cell_{k}/"
            b_ih, b_hh = cell.biases()
            b = b_ih + b_hh
            if cell.kind == "lstm":
                base += "lstm_cell/"
                H = cell.hidden
                b = b.copy()
                b[H:2 * H] -= np.asarray(forget_bias, b.dtype)
                order = ORDERS[("tf1", "lstm")]
                out[base + "kernel"] = reorder(np.concatenate([cell.w_ih, cell.w_hh], 1), "ifgo", order).T.copy()
                out[base + "bias"] = reorder(b, "ifgo", order)
                if cell.peepholes is not None:
                    for name, row in zip(("w_i_diag", "w_f_diag", "w_o_diag"), cell.peepholes):
                        out[base + name] = row
                if cell.w_hr is not None:
                    out[base + "projection/kernel"] = cell.w_hr.T.copy()
            else:
                base += "gru_cell/"
                r_ih, z_ih, n_ih = np.split(cell.w_ih, 3)
                r_hh, z_hh, n_hh = np.split(cell.w_hh, 3)
                br, bz, bn = np.split(b, 3)
                out[base + "gates/kernel"] = np.concatenate([np.concatenate([r_ih, z_ih]).T, np.concatenate([r_hh, z_hh]).T])
                out[base + "gates/bias"] = np.concatenate([br, bz])
                out[base + "candidate/kernel"] = np.concatenate([n_ih.T, n_hh.T])
                out[base + "candidate/bias"] = bn
    return out
