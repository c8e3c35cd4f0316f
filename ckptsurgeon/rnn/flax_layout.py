"""Flax recurrent cells, linen and NNX, read by their parameter names; ``write`` lays a stack out as linen cells
(``--to flax``).

A Flax params tree stores no constructor arguments: ``gate_fn`` (sigmoid), ``activation_fn`` (tanh), nn.RNN's
``reverse`` and Bidirectional's ``merge_fn`` (concatenation) are the documented defaults, stated as such
(``version default``), and ``--activation``/``--recurrent-activation``/``--go-backwards`` declare others.

Kernels are Dense kernels, ``(in, H)``: ``y = x @ kernel``. Layouts (checked against flax 0.12.8's
``linen/recurrent.py`` and ``nnx/nn/recurrent.py`` and the forward passes recorded in ``fixtures/flax``):

- linen ``LSTMCell`` and ``OptimizedLSTMCell`` (same parameters): ``ii if ig io`` without bias,
  ``hi hf hg ho`` with bias; NNX ``LSTMCell`` names the forget gate ``if_``;
- linen ``GRUCell``: ``ir iz in`` with bias, ``hr hz`` without, ``hn`` with bias inside the reset product,
  ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) n + z h``: PyTorch's reset-after GRU;
- NNX ``OptimizedLSTMCell``: ``dense_i`` (in, 4H) without bias, ``dense_h`` (H, 4H) with bias, gates i f g o;
  NNX ``GRUCell``: ``dense_i`` (in, 3H) with bias, ``dense_h`` (H, 3H) without, gates r z n, reset-after;
- ``nn.RNN`` puts its cell under ``<rnn>/cell`` (a cell built inline in a compact module is named at its
  parent, ``LSTMCell_0``); ``Bidirectional`` holds ``forward_rnn``/``backward_rnn``, and runs the backward one
  reversed with its outputs kept in input order, as PyTorch's bidirectional layers do.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..index import CheckpointIndex
from .cell import Cell, Stack, lay_out
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write", "LAYOUTS"]


@dataclass(frozen=True)
class _Layout:
    """One Flax cell's parameters: per canonical gate, its input and recurrent Dense names (per-gate), or the
    two fused Dense names; which of them carry a bias."""

    kind: str  # lstm | gru
    variant: str
    inputs: tuple[str, ...]  # Dense names, canonical gate order (one name: fused, gates stacked on the last axis)
    recurrent: tuple[str, ...]
    biased: frozenset[str]  # Dense names with a bias
    defaults: str  # where gate_fn/activation_fn come from

    @property
    def fused(self) -> bool:
        return len(self.inputs) == 1

    def expected(self) -> list[str]:
        """Relative names of every tensor the cell holds."""
        names = [f"{d}/kernel" for d in self.inputs + self.recurrent]
        return names + [f"{d}/bias" for d in self.inputs + self.recurrent if d in self.biased]


_LINEN_DEFAULTS = "version default: flax.linen {} gate_fn=sigmoid, activation_fn=tanh (not stored in params)"
_NNX_DEFAULTS = _LINEN_DEFAULTS.replace("flax.linen", "flax.nnx")

# Each row: the framework class it comes from (flax 0.12.8).
LAYOUTS: tuple[_Layout, ...] = (
    # flax.linen LSTMCell / OptimizedLSTMCell: input Dense without bias, recurrent Dense with bias
    _Layout("lstm", "flax.linen LSTMCell/OptimizedLSTMCell", ("ii", "if", "ig", "io"), ("hi", "hf", "hg", "ho"),
            frozenset({"hi", "hf", "hg", "ho"}), _LINEN_DEFAULTS.format("LSTMCell")),
    # flax.nnx LSTMCell: the forget gate's attribute is if_ (``if`` is a keyword)
    _Layout("lstm", "flax.nnx LSTMCell", ("ii", "if_", "ig", "io"), ("hi", "hf", "hg", "ho"),
            frozenset({"hi", "hf", "hg", "ho"}), _NNX_DEFAULTS.format("LSTMCell")),
    # flax.linen GRUCell: input Dense with bias, recurrent without, except hn (inside r * (...))
    _Layout("gru", "flax.linen GRUCell", ("ir", "iz", "in"), ("hr", "hz", "hn"),
            frozenset({"ir", "iz", "in", "hn"}), _LINEN_DEFAULTS.format("GRUCell")),
    # flax.nnx OptimizedLSTMCell: fused, i f g o, the bias on dense_h
    _Layout("lstm", "flax.nnx OptimizedLSTMCell", ("dense_i",), ("dense_h",), frozenset({"dense_h"}),
            _NNX_DEFAULTS.format("OptimizedLSTMCell")),
    # flax.nnx GRUCell: fused, r z n, the bias on dense_i (no bias inside the reset product)
    _Layout("gru", "flax.nnx GRUCell", ("dense_i",), ("dense_h",), frozenset({"dense_i"}),
            _NNX_DEFAULTS.format("GRUCell")),
)
_DENSE_NAMES = frozenset(n for lay in LAYOUTS for n in lay.inputs + lay.recurrent)
_RESET_AFTER = {
    "flax.linen GRUCell": "file: layout (flax.linen GRUCell: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), reset-after)",
    "flax.nnx GRUCell": "file: layout (flax.nnx GRUCell: n = tanh(W_in x + b_in + r * (W_hn h)), reset-after)",
}
_GO_BACKWARDS = "version default: flax nn.RNN reverse=False (not stored in params)"
_MERGE = "version default: flax Bidirectional merge_fn=concatenate(forward, backward) (not stored in params)"
_SHOWN = 6


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    dense: dict[str, set[str]] = defaultdict(set)  # cell scope -> Dense names with a kernel under it
    for path in index:
        segs = path.split("/")
        if len(segs) >= 2 and segs[-1] == "kernel" and segs[-2] in _DENSE_NAMES:
            dense["/".join(segs[:-2])].add(segs[-2])
    pos = {p: i for i, p in enumerate(index)}
    under: dict[str, list[str]] = defaultdict(list)  # candidate cell scope -> every tensor at any depth below it
    for path in index:
        segs = path.split("/")
        for k in range(1, len(segs)):
            scope = "/".join(segs[:k])
            if scope in dense:
                under[scope].append(path)
    cells: dict[str, RecurrentGroup] = {}
    for scope, names in dense.items():
        for layout in LAYOUTS:  # the fused NNX LSTM and GRU share their names: shapes decide
            group = (_cell_group(index, scope, layout, pos, under[scope])
                     if set(layout.inputs + layout.recurrent) <= names else None)
            if group is not None:
                cells[scope] = group
                break
    return _bidirectional(index, cells)


def _rel(scope: str, name: str) -> str:
    return f"{scope}/{name}" if scope else name


def _layer_scope(cell_scope: str) -> str:
    """``enc/cell`` (a cell inside nn.RNN) -> ``enc``, ``cell`` (an nn.RNN at the root) -> the root; a bare cell is
    its own scope."""
    parent, _, last = cell_scope.rpartition("/")
    return parent if last == "cell" else cell_scope


def _cell_group(index: CheckpointIndex, scope: str, layout: _Layout, pos: dict[str, int],
                under: list[str]) -> RecurrentGroup | None:
    """The cell at ``scope`` read as ``layout``; every tensor ``under`` it must be one of the cell's (a cell at the
    file's root is not checked: everything is under the root)."""
    paths = {name: _rel(scope, name) for name in layout.expected()}
    present = {name: p for name, p in paths.items() if p in index}
    G = 4 if layout.kind == "lstm" else 3
    k_in = index[present[layout.inputs[0] + "/kernel"]].shape
    k_h = index[present[layout.recurrent[0] + "/kernel"]].shape
    if len(k_in) != 2 or len(k_h) != 2:
        return None
    hidden = k_h[0]
    if hidden == 0 or (layout.fused and k_h[1] != G * hidden) or (not layout.fused and k_h[1] != hidden):
        return None  # a fused (H, 3H) kernel is no 4-gate cell, and an (H, 2H) one no cell of these at all
    n_in = k_in[0]
    width = G * hidden if layout.fused else hidden
    prov = {"activation": layout.defaults, "recurrent_activation": layout.defaults, "go_backwards": _GO_BACKWARDS}
    if layout.kind == "gru":
        prov["reset_after"] = _RESET_AFTER[layout.variant]
    bad = []
    for name, p in present.items():
        dense_name, var = name.split("/")
        want = (width,) if var == "bias" else ((n_in if dense_name in layout.inputs else hidden), width)
        if index[p].shape != want:
            bad.append(f"{p} is {list(index[p].shape)}, expected {list(want)}")
    absent = [paths[n] for n in paths if n not in present]
    if bad or absent:
        prov["shapes"] = (f"missing: its tensors do not fit one {layout.variant} (input {n_in}, hidden {hidden}): "
                          + "; ".join(bad[:4] + [f"{p} is absent" for p in absent[:4]]))
    members = sorted(present.values(), key=pos.__getitem__)
    mine = set(present.values())
    extra = [p for p in under if p not in mine]
    if extra:
        shown = ", ".join(extra[:_SHOWN]) + (f" and {len(extra) - _SHOWN} more" if len(extra) > _SHOWN else "")
        prov["tensors"] = (f"missing: {len(extra)} tensor(s) in its scope {scope} that a {layout.variant} does not have "
                           f"({shown}): a variant that computes something else; convert it only if they play no part, "
                           "by leaving them out (--exclude)")
    group = RecurrentGroup(scope=_layer_scope(scope), kind=layout.kind, layout="flax", variant=layout.variant,
                           input_size=n_in, hidden_size=hidden, bias="two", reset_after=True if layout.kind == "gru" else None,
                           provenance=prov, members=members)
    group.load = lambda: [[_to_cell(index, present, layout, hidden)]]
    return group


def _to_cell(index: CheckpointIndex, present: dict[str, str], layout: _Layout, hidden: int) -> Cell:
    """Dense kernels (in, H) per gate (or (in, G*H) fused) -> the canonical cell (G*H, in)."""
    def arr(name: str) -> np.ndarray:
        if name not in present:  # recognized with a missing part (its provenance says so): it cannot be run
            raise FormatError(f"{index.files[0]}: flax {layout.variant}: its {name} is absent; it cannot be run")
        return index[present[name]].numpy()

    def stacked(denses: tuple[str, ...], var: str) -> np.ndarray:
        """Each Dense's kernel (or bias: zeros where it has none), gates side by side on the last axis."""
        parts = []
        for d in denses:
            kernel = arr(f"{d}/kernel")
            parts.append(kernel if var == "kernel" else arr(f"{d}/bias") if d in layout.biased
                         else np.zeros(kernel.shape[-1], kernel.dtype))
        return np.concatenate(parts, axis=-1)

    w_ih = stacked(layout.inputs, "kernel").T.copy()
    w_hh = stacked(layout.recurrent, "kernel").T.copy()
    b_ih, b_hh = stacked(layout.inputs, "bias"), stacked(layout.recurrent, "bias")
    if layout.kind == "lstm":  # both biases are added before any gate: one holds their sum
        with np.errstate(all="ignore"):  # inf or signaling-NaN biases: the sum reports them, not a warning
            b_ih, b_hh = b_ih + b_hh, np.zeros_like(b_hh)
    return Cell(layout.kind, w_ih, w_hh, b_ih, b_hh)


def _bidirectional(index: CheckpointIndex, cells: dict[str, RecurrentGroup]) -> list[RecurrentGroup]:
    """``<bi>/forward_rnn/cell`` + ``<bi>/backward_rnn/cell`` of the same cell -> one two-direction group."""
    out: list[RecurrentGroup] = []
    used: set[str] = set()
    for scope, fwd in cells.items():
        parent, _, last = fwd.scope.rpartition("/")
        if last != "forward_rnn":
            continue
        twin = next((s for s, g in cells.items() if g.scope == _rel(parent, "backward_rnn")), None)
        if twin is None:
            continue
        bwd = cells[twin]
        if (bwd.variant, bwd.input_size, bwd.hidden_size) != (fwd.variant, fwd.input_size, fwd.hidden_size):
            continue  # two different cells: listed as the two one-direction groups they are
        prov = {k: v for k, v in fwd.provenance.items() if k != "go_backwards"}
        for k, v in bwd.provenance.items():
            if k in ("shapes", "tensors") and k in prov:
                prov[k] += f"; backward: {v.split(':', 1)[1].strip()}"
            elif k != "go_backwards":
                prov.setdefault(k, v)
        prov["merge_mode"] = _MERGE
        group = RecurrentGroup(**{**fwd.__dict__, "scope": parent, "directions": 2, "provenance": prov, "merge_mode": "concat",
                                  "variant": f"flax Bidirectional({fwd.variant})", "members": fwd.members + bwd.members,
                                  "notes": fwd.notes + bwd.notes})
        group.load = lambda f=fwd, b=bwd: [[f.load()[0][0], b.load()[0][0]]]
        out.append(group)
        used.update((scope, twin))
    rest = [g for s, g in cells.items() if s not in used]
    for g in rest:  # a half left alone (selected alone, or the halves differ) still runs as that half ran
        parent, _, last = g.scope.rpartition("/")
        if last == "backward_rnn":
            differ = any(f.scope == _rel(parent, "forward_rnn") for f in rest)
            g.provenance["direction"] = (
                f"missing: the backward half of a flax Bidirectional {parent or '/'!r} (nn.RNN(reverse=True, "
                "keep_order=True): it runs over the sequence in reverse and returns its outputs in input order), "
                "which no one-direction target layer computes; "
                + ("its halves differ, which no target's bidirectional layer holds" if differ else
                   f"convert the whole Bidirectional (--scope '{parent}/*')" if parent else "convert the whole Bidirectional"))
    return out + rest


# --- writing: linen LSTMCell/OptimizedLSTMCell and GRUCell inside nn.RNN, Bidirectional, one scope per layer ---------

_LINEN_LSTM, _LINEN_GRU = LAYOUTS[0], LAYOUTS[2]


def _cell_params(cell: Cell) -> dict[str, np.ndarray]:
    """One canonical cell as a linen cell's Dense parameters (kernels ``(in, H)``).

    LSTM: the input Denses have no bias, so each gate's recurrent Dense holds ``b_ih + b_hh``. GRU: ``r`` and
    ``z`` add both biases before the sigmoid (their sum goes to ``ir``/``iz``), while ``b_hn`` sits inside
    ``r * (W_hn h + b_hn)``: it stays on ``hn``, ``b_in`` on ``in`` (a reset-after cell, as flax's)."""
    layout = _LINEN_LSTM if cell.kind == "lstm" else _LINEN_GRU
    H = cell.hidden
    b_ih, b_hh = cell.biases()
    out: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):  # inf or NaN biases: summed as the source sums them
        for j, (i_name, h_name) in enumerate(zip(layout.inputs, layout.recurrent)):
            rows = slice(j * H, (j + 1) * H)
            out[f"{i_name}/kernel"] = np.ascontiguousarray(cell.w_ih[rows].T)
            out[f"{h_name}/kernel"] = np.ascontiguousarray(cell.w_hh[rows].T)
            if cell.kind == "lstm":
                out[f"{h_name}/bias"] = b_ih[rows] + b_hh[rows]
            elif h_name == "hn":
                out[f"{i_name}/bias"], out[f"{h_name}/bias"] = b_ih[rows].copy(), b_hh[rows].copy()
            else:
                out[f"{i_name}/bias"] = b_ih[rows] + b_hh[rows]
    return out


def write(stack: Stack) -> dict[str, np.ndarray]:
    """Relative names of a linen model holding the stack: ``cell/...`` (``nn.RNN``), ``forward_rnn/cell/...`` and
    ``backward_rnn/cell/...`` (``nn.Bidirectional``); layer k of a deeper stack under ``layer_k/`` (Flax has no
    multi-layer RNN: the user's model names its layers; ``--rename``/``--map`` place them)."""
    return lay_out(stack, ("forward_rnn/", "backward_rnn/"), _cell_params)
