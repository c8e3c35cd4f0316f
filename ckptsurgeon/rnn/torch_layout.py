"""PyTorch ``nn.LSTM``/``nn.GRU`` (stacked, bidirectional, proj_size, bias=False) and ``nn.LSTMCell``/``GRUCell``.

Names: ``weight_ih_l{k}[_reverse]``, ``weight_hh_...``, ``bias_ih_...``, ``bias_hh_...``, ``weight_hr_...``;
cells drop the ``_l{k}`` suffix. The canonical layout is PyTorch's, so this adapter only renames.
"""
from __future__ import annotations

import re
from collections import defaultdict

from ..errors import SelectionError
from ..index import CheckpointIndex
from .cell import Cell, Stack
from .group import RecognizeOptions, RecurrentGroup

__all__ = ["recognize", "write_module", "write_cell", "write_paddle"]

_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)(?:_l(\d+))?(_reverse)?$")


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    scopes: dict[str, dict[tuple[str, int | None, int], str]] = defaultdict(dict)
    for path in index:
        parent, _, last = path.rpartition("/")
        m = _NAME.match(last)
        if m:
            layer = None if m.group(2) is None else int(m.group(2))
            scopes[parent][(m.group(1), layer, 1 if m.group(3) else 0)] = path
    groups = []
    pos = {p: i for i, p in enumerate(index)}
    for scope, parts in scopes.items():
        group = _group(index, scope, parts, pos)
        if group is not None:
            groups.append(group)
    return _fold_aliases(index, groups) if len(groups) > 1 else groups


def _fold_aliases(index: CheckpointIndex, groups: list[RecurrentGroup]) -> list[RecurrentGroup]:
    """A cell group whose tensors are all aliases of a module group's (paddle's nn.LSTM holds each parameter
    under ``weight_ih_l0`` and ``0.cell_fw.weight_ih``) is that module's: its names join the module's members."""
    same: dict[str, str] = {}  # path -> the first path of its tensor
    for first, others in index.aliases().items():
        same.update(dict.fromkeys(others, first))
    if not same:
        return groups
    modules = [g for g in groups if g.layout == "torch"]
    canon = [{same.get(m, m) for m in g.members} for g in modules]
    out, folded = [], defaultdict(list)
    for group in groups:
        mine = {same.get(m, m) for m in group.members}
        host = next((i for i, c in enumerate(canon) if group.layout == "torch-cell" and mine <= c), None)
        if host is None:
            out.append(group)
            continue
        modules[host].members.extend(group.members)
        folded[host].append(group.scope)
    for i, scopes in folded.items():
        modules[i].notes.append(f"also named as its cells {', '.join(scopes)}: the same tensors (aliases)")
    return out


def _group(index: CheckpointIndex, scope: str, parts: dict, pos: dict[str, int]) -> RecurrentGroup | None:
    is_cell = all(layer is None for _, layer, _ in parts)
    layers = sorted({layer for _, layer, _ in parts if layer is not None}) or [None]
    dirs = 2 if any(d for *_, d in parts) else 1
    first = parts.get(("weight_hh", layers[0], 0))
    w_ih = parts.get(("weight_ih", layers[0], 0))
    if first is None or w_ih is None:
        return None
    hh = index[first].shape
    hr = parts.get(("weight_hr", layers[0], 0))
    hidden = index[hr].shape[1] if hr else hh[1]
    proj = index[hr].shape[0] if hr else 0
    if len(hh) != 2 or hidden == 0 or hh[0] % hidden:
        return None
    gates = hh[0] // hidden
    if gates not in (3, 4):
        return None  # nn.RNN (one gate) is not a gated recurrent layer
    kind = "lstm" if gates == 4 else "gru"
    roles = {role for role, _, _ in parts}
    has_bias = bool(roles & {"bias_ih", "bias_hh"})
    name = ("nn.LSTMCell" if kind == "lstm" else "nn.GRUCell") if is_cell else ("nn.LSTM" if kind == "lstm" else "nn.GRU")

    def load() -> Stack:
        stack = []
        for layer in layers:
            row = []
            for d in range(dirs):
                def get(role: str):
                    path = parts.get((role, layer, d))
                    return None if path is None else index[path].numpy()

                w_ih_, w_hh_ = get("weight_ih"), get("weight_hh")
                if w_ih_ is None or w_hh_ is None:
                    raise SelectionError(f"{index.files[0]}: {scope}: layer {layer} direction {d} is incomplete "
                                         "(select the whole module)")
                row.append(Cell(kind, w_ih_, w_hh_, get("bias_ih"), get("bias_hh"), w_hr=get("weight_hr")))
            stack.append(row)
        return stack

    provenance = dict(_FACTS[kind])
    P = proj or hidden
    bad = []
    for (role, layer, d), path in sorted(parts.items(), key=lambda kv: pos[kv[1]]):
        n_in = index[w_ih].shape[1] if layer in (None, layers[0]) else dirs * P
        want = {"weight_ih": (gates * hidden, n_in), "weight_hh": (gates * hidden, P), "bias_ih": (gates * hidden,),
                "bias_hh": (gates * hidden,), "weight_hr": (proj, hidden)}[role]
        if index[path].shape != want:
            bad.append(f"{path} is {list(index[path].shape)}, expected {list(want)}")
    if bad:
        provenance["shapes"] = f"missing: its tensors do not fit one {name}: " + "; ".join(bad[:4])
    every = {"weight_ih", "weight_hh"} | ({"bias_ih", "bias_hh"} if has_bias else set()) | (roles & {"weight_hr"})
    holes = [f"layer {layer}{' reverse' if d else ''} has no {', '.join(sorted(r for r in every if (r, layer, d) not in parts))}"
             for layer in layers for d in range(dirs) if any((r, layer, d) not in parts for r in every)]
    one_sided = sorted(r for r in ("bias_ih", "bias_hh") if r in roles and all(
        (r, layer, d) in parts for layer in layers for d in range(dirs)))
    uniform = len(one_sided) == 1 and not (roles & {"bias_ih", "bias_hh"}) - set(one_sided)
    notes = []
    if holes and uniform and index.format != "paddle":  # every cell holds one bias, none the other (a hand remap)
        other = "bias_hh" if one_sided == ["bias_ih"] else "bias_ih"
        notes.append(f"its cells hold {one_sided[0]} only: {other} is read as zeros (PyTorch's "
                     "load_state_dict(strict=True) refuses such a file)")
    elif holes:  # a cell without one of its biases would run as if it were zero
        hint = (" (paddle 3 names a layer built with bias_ih_attr=False out of step: its cells' own names, "
                f"{scope}/0/cell/..., are right; select them)" if index.format == "paddle" else "")
        provenance["tensors"] = (f"missing: its cells are incomplete ({'; '.join(holes[:4])}), and every cell of a "
                                 f"{name} has each of them{hint}")
    if not is_cell and layers != list(range(len(layers))):
        provenance["layers"] = (f"missing: its layers are numbered {', '.join(map(str, layers))}; a PyTorch module "
                                f"numbers them 0 to {len(layers) - 1} (load_state_dict refuses these names), so which "
                                "layers it had is not known")
    return RecurrentGroup(
        scope=scope, kind=kind, layout="torch-cell" if is_cell else "torch", variant=name,
        input_size=index[w_ih].shape[1], hidden_size=hidden, num_layers=len(layers), directions=dirs, proj_size=proj,
        bias="two" if has_bias else "none", reset_after=True if kind == "gru" else None,
        members=sorted(parts.values(), key=pos.__getitem__), load=load, provenance=provenance, notes=notes,
    )


_LAYOUT = "file: layout (PyTorch {} computes {})"
_FACTS = {
    "lstm": {"activation": _LAYOUT.format("LSTM", "tanh"), "recurrent_activation": _LAYOUT.format("LSTM", "sigmoid gates")},
    "gru": {"activation": _LAYOUT.format("GRU", "tanh"), "recurrent_activation": _LAYOUT.format("GRU", "sigmoid gates"),
            "reset_after": "file: layout (PyTorch GRUs are reset-after)"},
}


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def write_module(stack: Stack) -> dict[str, object]:
    """``nn.LSTM``/``nn.GRU`` state-dict entries (relative names) for a stack."""
    out: dict[str, object] = {}
    for k, layer in enumerate(stack):
        for d, cell in enumerate(layer):
            s = _suffix(k, d)
            out[f"weight_ih{s}"], out[f"weight_hh{s}"] = cell.w_ih, cell.w_hh
            if cell.has_bias:
                out[f"bias_ih{s}"], out[f"bias_hh{s}"] = cell.biases()
            if cell.w_hr is not None:
                out[f"weight_hr{s}"] = cell.w_hr
    return out


def write_cell(stack: Stack) -> dict[str, object]:
    cell = stack[0][0]
    out: dict[str, object] = {"weight_ih": cell.w_ih, "weight_hh": cell.w_hh}
    if cell.has_bias:
        out["bias_ih"], out["bias_hh"] = cell.biases()
    return out


def write_paddle(stack: Stack) -> dict[str, object]:
    """``paddle.nn.LSTM``/``GRU`` state-dict entries, as its ``state_dict()`` lists them: PyTorch's names and gate
    orders (paddle/nn/layer/rnn.py: LSTMCell splits i, f, g, o; GRUCell r, z, c, reset-after), biases always
    (paddle creates them even with ``bias_ih_attr=False``: zeros), then each parameter again under its cell's
    name (``{k}/cell/weight_ih``, ``{k}/cell_fw``/``cell_bw`` when bidirectional): the same arrays."""
    out: dict[str, object] = {}
    cells: dict[str, object] = {}
    for k, layer in enumerate(stack):
        for d, cell in enumerate(layer):
            s = _suffix(k, d)
            where = f"{k}/cell" + (("_bw" if d else "_fw") if len(layer) == 2 else "")
            b_ih, b_hh = cell.biases()
            for role, arr in (("weight_ih", cell.w_ih), ("weight_hh", cell.w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)):
                out[f"{role}{s}"] = cells[f"{where}/{role}"] = arr
    return {**out, **cells}


def write_paddle_cell(stack: Stack) -> dict[str, object]:
    """``paddle.nn.LSTMCell``/``GRUCell`` state-dict entries (``nn.RNN(cell)`` holds them under ``cell/``): PyTorch's
    cell names and gate orders, biases always (zeros for a cell without them, as paddle creates them)."""
    cell = stack[0][0]
    b_ih, b_hh = cell.biases()
    return {"weight_ih": cell.w_ih, "weight_hh": cell.w_hh, "bias_ih": b_ih, "bias_hh": b_hh}
