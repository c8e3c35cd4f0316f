"""Keras recurrent layers: Keras 2 / tf.keras / Keras 3 ``LSTM``/``GRU`` (both GRU families),
``Bidirectional``, tf.keras ``CuDNNLSTM``/``CuDNNGRU``, and Keras 1 per-gate weights (read only).

Keras stores ``kernel (in, G*H)``, ``recurrent_kernel (H, G*H)`` in gate order i,f,c,o / z,r,h; LSTM has
one bias (4H); GRU ``(2, 3H)`` when reset_after (input row, recurrent row) else ``(3H)``. CuDNN layers
keep each gate's input kernel as a raw cuDNN buffer (``reshape(H, in).T``), each recurrent kernel
transposed, and biases ``[input; recurrent]`` (checked against tf.keras's own conversion).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from ..errors import FormatError
from ..index import CheckpointIndex
from .cell import Cell, Stack, lay_out
from .gates import ORDERS, reorder, transposed
from .group import FACT_FLAGS, RecognizeOptions, RecurrentGroup
from .keras_facts import KerasEra, keras_era, resolve_activation

__all__ = ["recognize", "write", "cell_to_keras"]

# A layer's cell scope: Keras 3 ``cell``; tf.keras 2 and Keras 3 legacy .h5 name the cell after its class,
# uniquified per session (``lstm_cell``, ``lstm_cell_1``).
_CELL_SCOPE = re.compile(r"^(?:cell|lstm_cell(?:_\d+)?|gru_cell(?:_\d+)?)$")
_DIRECTION = re.compile(r"^(forward|backward)(_layer|_.+)$")


def _layer_of(scope: str) -> str:
    parent, _, last = scope.rpartition("/")
    return parent if _CELL_SCOPE.match(last) else scope


# Layer classes whose config also describes the recurrent layer whose weights sit under them.
_WRAPPERS = frozenset({"Bidirectional", "RNN", "TimeDistributed"})
_RECURRENT = frozenset({"LSTM", "GRU", "CuDNNLSTM", "CuDNNGRU", "LSTMV1", "GRUV1", "RNN"})


def _lookup(index: CheckpointIndex, path: str) -> dict[str, Any] | None:
    """The stored config of the layer at ``path``: by its full path (nested models), else by its own name."""
    paths = index.metadata.get("layer_paths") or {}
    if path in paths:
        return paths[path]
    hits = [p for p in paths if path.endswith("/" + p)]  # the file's weights sit under a prefix
    if len(hits) == 1:
        return paths[hits[0]]
    return (index.metadata.get("layers") or {}).get(path.rpartition("/")[2])


def _direction(index: CheckpointIndex, scope: str) -> str | None:
    """``forward``/``backward`` for a half of a Keras Bidirectional, else None.

    Keras names the halves ``forward_<name>``/``backward_<name>`` (``forward_layer``/``backward_layer`` in
    Keras 3 files), except that Keras 3 keeps an explicit ``backward_layer``'s own name in legacy ``.h5``
    files (``bi/lstm``): the stored config names it. A layer the stored config states is not inside a
    Bidirectional is no half, whatever its name (``forward_lstm`` beside ``backward_lstm``)."""
    parent, _, last = scope.rpartition("/")
    top = (_lookup(index, parent) or {}) if parent else {}
    if top.get("class_name") == "Bidirectional":
        for key, word in (("backward_layer", "backward"), ("layer", "forward")):
            sub = top.get(key)
            if isinstance(sub, dict) and sub.get("name") == last:
                return word
    if _has_config(index) and top.get("class_name") != "Bidirectional":
        return None
    m = _DIRECTION.match(last)
    return m.group(1) if m else None


def _has_config(index: CheckpointIndex) -> bool:
    return bool(index.metadata.get("layers"))


def _config(index: CheckpointIndex, layer_scope: str) -> dict[str, Any]:
    """What the stored config says of the layer at ``layer_scope``: its own entry, found by full path; the
    Bidirectional (or RNN) wrapping it; ``{}`` when the file stores no config; else an entry naming why the
    config cannot tell (``_unresolved``), which makes every fact it would state missing."""
    parent, _, last = layer_scope.rpartition("/")
    wrapper = (_lookup(index, parent) or {}) if parent else {}
    direction = _direction(index, layer_scope) if parent else None
    if direction and wrapper.get("class_name") == "Bidirectional":
        backward = direction == "backward"
        if backward and wrapper.get("backward_layer"):
            return wrapper["backward_layer"]
        inner = dict(wrapper.get("layer") or {})
        if backward and isinstance(inner.get("go_backwards"), bool):
            inner["go_backwards"] = not inner["go_backwards"]  # Keras builds the backward copy with it flipped
        return inner
    own = _lookup(index, layer_scope)
    if own is not None and own.get("ambiguous"):
        return {"class_name": own.get("class_name"), "_unresolved": (
            f"the stored config has {len(own['ambiguous'])} layers named {last!r} ({', '.join(own['ambiguous'])}) "
            f"and the weights' path {layer_scope!r} does not say which")}
    if own is not None and (own.get("class_name") in _RECURRENT or not parent):
        return own
    if wrapper.get("class_name") in _WRAPPERS:
        return wrapper
    if own is not None:
        return own
    if not _has_config(index):
        model = index.metadata.get("model_class")
        if model:  # the file states a model config, but one that says nothing of its layers (a subclassed model)
            return {"class_name": "?", "_unresolved": (
                f"the stored config is the {model} model's own and does not describe its layers (a subclassed "
                "model); what the layer computes is not in the file")}
        return {}
    outer = f" (inside {parent!r}, a {wrapper.get('class_name')} layer whose config does not describe it)" if wrapper else ""
    return {"class_name": "?", "_unresolved": f"the stored config has no entry for the layer {layer_scope!r}{outer}"}


def _activation_facts(cfg: dict[str, Any], era: KerasEra, has_config: bool) -> dict[str, tuple[str | None, str]]:
    """activation / recurrent_activation -> (formula name or None, provenance)."""
    out: dict[str, tuple[str | None, str]] = {}
    for fact, keys in (("activation", ("activation",)), ("recurrent_activation", ("recurrent_activation", "inner_activation"))):
        if cfg.get("_unresolved"):
            out[fact] = (None, f"missing: {cfg['_unresolved']}; pass {FACT_FLAGS[fact]}")
            continue
        stored = next((cfg[k] for k in keys if isinstance(cfg.get(k), str)), None)
        if stored is not None:
            name = resolve_activation(stored, era)
            out[fact] = (name, f"file: model config {stored!r}" + (f" ({era.name}: {name})" if name != stored else "")
                         if name else f"missing: the config says {stored!r} but not which Keras wrote it "
                         f"({_HS_HINT}); pass {FACT_FLAGS[fact]}")
        elif has_config:
            out[fact] = (None, f"missing: the stored config names no {fact}; pass {FACT_FLAGS[fact]}")
        elif era.defaults is not None:
            out[fact] = (era.defaults[0 if fact == "activation" else 1], f"version default: {era.rule}")
        else:
            out[fact] = (None, f"missing: weights only, and {era.rule}; pass {FACT_FLAGS[fact]}")
    return out


_HS_HINT = "hard_sigmoid_keras2 = clip(0.2x+0.5, 0, 1) or hard_sigmoid_keras3 = relu6(x+3)/6"


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    by_parent: dict[str, dict[str, str]] = defaultdict(dict)
    for path in index:
        parent, _, last = path.rpartition("/")
        if last in ("kernel", "recurrent_kernel", "bias"):
            by_parent[parent][last] = path
    found: dict[str, list[tuple[str, RecurrentGroup]]] = defaultdict(list)  # layer scope -> its cells
    for parent, parts in by_parent.items():
        if "kernel" in parts and "recurrent_kernel" in parts:
            group = _single(index, parent, parts)
            if group is not None:
                found[group.scope].append((parent, group))
    singles = {scope: cells[0][1] for scope, cells in found.items() if len(cells) == 1}
    stacks = [_stacked(index, scope, cells) for scope, cells in found.items() if len(cells) > 1]
    return _merge_bidirectional(index, singles) + stacks + _keras1(index)


_STACK_SCOPE = re.compile(r"^(?P<layer>.+?)(?:/cell)?/cells$")
_POSITION = re.compile(r"^(?P<cls>lstm_cell|gru_cell)(?:_(?P<k>\d+))?$")


def _container_positions(index: CheckpointIndex, names: list[str]) -> list[str] | None:
    """``names`` in list order, where the file is a Keras 3 one (``.keras``, ``.weights.h5``): Keras 3's saving
    stores a list's items under their class's snake-case name and a counter of its position among that class's
    items (``lstm_cell``, ``lstm_cell_1`` ...: ``saving_lib._save_container_state``), not under their own names.
    None: another file, or names that do not follow that rule."""
    if index.format not in ("keras", "keras-v3"):
        return None
    found = [_POSITION.match(n) for n in names]
    if not all(found) or len({m.group("cls") for m in found if m}) != 1:
        return None
    ranked = sorted((int(m.group("k") or 0), n) for m, n in zip(found, names) if m)
    return [n for _, n in ranked] if [k for k, _ in ranked] == list(range(len(names))) else None


def _first_prov(found: list[tuple[str, RecurrentGroup]], fact: str) -> str:
    return found[0][1].provenance.get(fact, "")


def _stacked(index: CheckpointIndex, scope: str, found: list[tuple[str, RecurrentGroup]]) -> RecurrentGroup:
    """Several cells under one layer: a Keras ``RNN`` over ``StackedRNNCells`` (``<rnn>/cell/cells/<cell>/``), whose
    cells run one after another at each step (each on the previous one's output), as the layers of a stack do.
    Their order is the layer config's ``cells`` list; a file that does not state it (weights-only) leaves the group
    refused, as do cells that differ in what they compute."""
    m = _STACK_SCOPE.match(scope)
    layer = m.group("layer") if m else scope
    by_name = {parent.rpartition("/")[2]: group for parent, group in found}
    cfg = _lookup(index, layer) or {}
    stated = [c for c in cfg.get("cells") or [] if isinstance(c, dict)]
    names = [c.get("name") for c in stated]
    prov: dict[str, str] = {}
    positions = _container_positions(index, list(by_name))
    if cfg.get("cell_class") == "StackedRNNCells" and sorted(map(str, names)) == sorted(by_name) and len(names) == len(by_name):
        order = [by_name[str(n)] for n in names]
        prov["num_layers"] = f"file: model config (StackedRNNCells, cells {', '.join(map(str, names))} in this order)"
    elif positions is not None and (not stated or len(stated) == len(by_name)):
        order = [by_name[n] for n in positions]
        prov["num_layers"] = (f"file: Keras 3 saving layout (a list's items are stored by class and position: "
                              f"{', '.join(positions)}, in this order)")
    else:
        order = []
    facts: list[dict[str, tuple[str | None, str]]] = []
    if not order:
        order = [group for _, group in found]  # never run: the group is refused
        prov["num_layers"] = (f"missing: {', '.join(by_name)} are the cells of one Keras layer {layer!r} (StackedRNNCells: "
                              "each runs on the previous one's output at every step) and the file does not state their "
                              f"order (a .keras or full-model .h5 file does); convert one cell at a time "
                              f"(--scope '{scope}/<cell>/*')")
    elif stated or not _has_config(index):
        era = keras_era(index)
        facts = [_activation_facts(c, era, bool(c)) for c in (stated or [{} for _ in order])]
        for fact in ("activation", "recurrent_activation"):
            values = {f[fact][0] for f in facts}
            prov[fact] = facts[0][fact][1] if len(values) == 1 else (
                f"missing: the stacked cells differ ({', '.join(sorted(map(str, values)))}); no target holds that")
        go = cfg.get("go_backwards")
        prov["go_backwards"] = (("file: model config" + ("" if isinstance(go, bool) else " (go_backwards not set: False)"))
                                if cfg else _first_prov(found, "go_backwards"))
    first = order[0]
    shapes = {(g.kind, g.hidden_size, g.bias, g.reset_after) for g in order}
    chained = all(order[k].input_size == order[k - 1].hidden_size for k in range(1, len(order)))
    if len(shapes) > 1 or not chained:
        widths = ", ".join(str(g.hidden_size) for g in order)
        prov["num_layers"] = (f"missing: the stacked cells of {layer!r} differ (hidden sizes {widths}, or kinds or "
                              "biases) or do not chain; its layers have different widths, which no target's stack holds")
    group = RecurrentGroup(**{
        **first.__dict__, "scope": layer, "num_layers": len(order), "input_size": first.input_size,
        "variant": (f"Keras RNN(StackedRNNCells of {len(order)} {first.variant})" if len({g.variant for g in order}) == 1
                    else f"Keras RNN(StackedRNNCells of {', '.join(g.variant for g in order)})"), "provenance": {**first.provenance, **prov},
        "members": [p for g in order for p in g.members], "notes": [n for g in order for n in g.notes]})
    if facts:
        group.activation, group.recurrent_activation = facts[0]["activation"][0], facts[0]["recurrent_activation"][0]
        group.go_backwards = bool(cfg.get("go_backwards", False))
    group.load = lambda: [[g.load()[0][0]] for g in order]
    return group


def _single(index: CheckpointIndex, parent: str, parts: dict[str, str]) -> RecurrentGroup | None:
    k, r = index[parts["kernel"]].shape, index[parts["recurrent_kernel"]].shape
    if len(k) != 2 or len(r) != 2 or r[0] == 0 or r[1] % r[0] or k[1] != r[1]:
        return None
    hidden, gates = r[0], r[1] // r[0]
    if gates not in (3, 4):
        return None
    scope = _layer_of(parent)
    cfg = _config(index, scope)
    cls = str(cfg.get("class_name", ""))
    kind = "lstm" if gates == 4 else "gru"
    b = index[parts["bias"]].shape if "bias" in parts else None
    cudnn = cls.startswith("CuDNN") or (b is not None and b == (2 * gates * hidden,))
    era = keras_era(index)
    prov: dict[str, str] = {}
    reset_after = None
    if kind == "gru":
        if cudnn:
            reset_after, prov["reset_after"] = True, "file: layout (CuDNNGRU is reset-after)"
        elif b is not None:
            reset_after = len(b) == 2
            prov["reset_after"] = f"file: bias shape {list(b)} ({'(2, 3H): reset-after' if reset_after else '(3H,): reset-before'})"
        elif isinstance(cfg.get("reset_after"), bool):
            reset_after, prov["reset_after"] = cfg["reset_after"], "file: model config"
        else:
            prov["reset_after"] = ("missing: a GRU without bias does not show its family and the file stores no config; "
                                   "pass --reset-after or --reset-before")
    if cudnn:
        act, rec_act = "tanh", "sigmoid"
        prov["activation"] = prov["recurrent_activation"] = "file: layout (CuDNN layers compute sigmoid/tanh)"
    else:
        facts = _activation_facts(cfg, era, bool(cls))
        (act, prov["activation"]), (rec_act, prov["recurrent_activation"]) = facts["activation"], facts["recurrent_activation"]
    go_backwards = False
    if isinstance(cfg.get("go_backwards"), bool):
        go_backwards, prov["go_backwards"] = cfg["go_backwards"], "file: model config"
    elif cfg.get("_unresolved"):
        prov["go_backwards"] = f"missing: {cfg['_unresolved']}; pass {FACT_FLAGS['go_backwards']}"
    elif cls:
        prov["go_backwards"] = "file: model config (go_backwards not set: False)"
    else:
        prov["go_backwards"] = "version default: Keras go_backwards=False (weights-only files do not store it)"
    variant = (f"Keras Cu{'DNN'}{kind.upper()}" if cudnn else f"Keras {kind.upper()}") + (
        "" if kind == "lstm" else f" (reset_after={reset_after})")
    group = RecurrentGroup(
        scope=scope, kind=kind, layout="keras-cudnn" if cudnn else "keras", variant=variant,
        input_size=k[0], hidden_size=hidden, bias="cudnn" if cudnn else ("one" if b else "none"),
        reset_after=reset_after, activation=act, recurrent_activation=rec_act, go_backwards=go_backwards,
        provenance=prov, members=[parts[n] for n in ("kernel", "recurrent_kernel", "bias") if n in parts],
    )
    group.load = lambda: [[_to_cell(index, parts, kind, hidden, cudnn)]]
    return group


def _to_cell(index, parts, kind, hidden, cudnn) -> Cell:
    order = ORDERS[("keras", kind)]
    canon = "ifgo" if kind == "lstm" else "rzn"
    kernel = index[parts["kernel"]].numpy()
    rec = index[parts["recurrent_kernel"]].numpy()
    bias = index[parts["bias"]].numpy() if "bias" in parts else None
    n_in, G = kernel.shape[0], kernel.shape[1] // hidden
    if bias is not None:  # before any slicing: a (3, 3H) GRU bias must not pass as reset-after's (2, 3H)
        want = [(2 * G * hidden,)] if cudnn else [(G * hidden,)] + ([(2, G * hidden)] if kind == "gru" else [])
        if tuple(bias.shape) not in want:
            raise FormatError(f"{parts['bias']}: shape {list(bias.shape)}, expected "
                              f"{' or '.join(str(list(s)) for s in want)} (a Keras {kind.upper()} of input {n_in}, "
                              f"hidden {hidden}); refusing")
    if cudnn:
        kernel = np.concatenate([kernel[:, g * hidden:(g + 1) * hidden].reshape(hidden, n_in).T for g in range(G)], 1)
        rec = np.concatenate([rec[:, g * hidden:(g + 1) * hidden].T for g in range(G)], 1)
    w_ih = reorder(kernel.T, order, canon)
    w_hh = reorder(rec.T, order, canon)
    b_ih = b_hh = None
    if bias is not None:
        if cudnn:
            b_in, b_rec = np.split(bias, 2)
        elif bias.ndim == 2:
            b_in, b_rec = bias[0], bias[1]
        else:
            b_in, b_rec = bias, np.zeros_like(bias)
        if cudnn and kind == "lstm":
            b_in, b_rec = b_in + b_rec, np.zeros_like(b_rec)  # as tf.keras converts CuDNNLSTM
        b_ih, b_hh = reorder(b_in, order, canon), reorder(b_rec, order, canon)
    return Cell(kind, w_ih, w_hh, b_ih, b_hh)


def _merge_bidirectional(index: CheckpointIndex, singles: dict[str, RecurrentGroup]) -> list[RecurrentGroup]:
    out, used = [], set()
    for scope, group in singles.items():
        parent = scope.rpartition("/")[0]
        if _direction(index, scope) != "forward" or scope in used:
            continue
        siblings = [s for s in singles if s != scope and s.rpartition("/")[0] == parent]
        twin = next((s for s in siblings if _direction(index, s) == "backward"), None)
        if twin is None and len(siblings) == 1 and _direction(index, siblings[0]) is None:
            # Keras 3 keeps an explicit backward_layer's own name in .h5 files: without the config, nothing says
            # whether this layer is the Bidirectional's backward half (which runs backwards) or a layer of its own
            for half in (group, singles[siblings[0]]):
                half.provenance["bidirectional"] = (
                    f"missing: {siblings[0]} may be the explicit backward layer of the Keras Bidirectional {parent} "
                    f"(beside {scope}) or a layer of its own, and the file has no config to say; no flag declares it "
                    "(a .keras or full-model .h5 file states it)")
        if twin is None:
            continue
        back = singles[twin]
        used.update((scope, twin))
        shape = lambda g: (g.kind, g.input_size, g.hidden_size, g.bias)  # noqa: E731
        if shape(back) != shape(group):
            why = (f"missing: half of a Keras Bidirectional whose layers differ ({group.variant} {group.hidden_size} "
                   f"forward, {back.variant} {back.hidden_size} backward); no target holds that")
            for half in (group, back):
                half.provenance["bidirectional"] = why
            out.extend((group, back))
            continue
        top = _lookup(index, parent) or {}
        prov = dict(group.provenance)
        for fact in ("reset_after", "activation", "recurrent_activation"):
            if getattr(back, fact) != getattr(group, fact):
                prov[fact] = (f"missing: the forward and backward layers differ ({getattr(group, fact)} vs "
                              f"{getattr(back, fact)}); no target holds that")
        merged = RecurrentGroup(**{**group.__dict__, "scope": parent, "directions": 2, "provenance": prov,
                                   "variant": f"Bidirectional({group.variant})",
                                   "members": group.members + back.members, "notes": group.notes + back.notes})
        if top.get("class_name") == "Bidirectional":
            mode = top.get("merge_mode", "concat")
            merged.merge_mode, merged.provenance["merge_mode"] = ("none" if mode is None else str(mode)), "file: model config"
        elif index.metadata.get("model_class") and not _has_config(index):
            merged.merge_mode = "concat"
            merged.provenance["merge_mode"] = (f"missing: the stored config is the {index.metadata['model_class']} "
                                               "model's own and does not describe its layers; pass --merge-mode")
        else:
            merged.merge_mode = "concat"
            merged.provenance["merge_mode"] = ("version default: Keras Bidirectional merge_mode='concat' (weights-only "
                                               "files do not store it; pass --merge-mode if the layer merged otherwise)")
        merged.load = lambda f=group, b=back: [[f.load()[0][0], b.load()[0][0]]]
        out.append(merged)
    return out + [g for s, g in singles.items() if s not in used]


_K1 = re.compile(r"^(?P<layer>.+)_(?P<m>[WUb])_(?P<g>[icfozrh])$")


def _keras1(index: CheckpointIndex) -> list[RecurrentGroup]:
    """Keras 1 per-gate weights: ``<layer>/<layer>_W_i``, ``_U_i``, ``_b_i`` (LSTM i,c,f,o; GRU z,r,h)."""
    found: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for path in index:
        parent, _, last = path.rpartition("/")
        m = _K1.match(last)
        if m:
            found[parent][(m.group("m"), m.group("g"))] = path
    groups = []
    for scope, parts in found.items():
        letters = {g for _, g in parts}
        kind = "lstm" if letters == set("icfo") else "gru" if letters == set("zrh") else None
        if kind is None or len(parts) != 3 * len(letters):
            continue
        keras_to_canon = {"i": "i", "c": "g", "f": "f", "o": "o", "z": "z", "r": "r", "h": "n"}
        canon = "ifgo" if kind == "lstm" else "rzn"
        inv = {v: k for k, v in keras_to_canon.items()}
        w0 = index[parts[("W", next(iter(letters)))]].shape

        def load(parts=parts, kind=kind, canon=canon, inv=inv) -> list:
            W = np.concatenate([index[parts[("W", inv[g])]].numpy().T for g in canon])
            U = np.concatenate([index[parts[("U", inv[g])]].numpy().T for g in canon])
            b = np.concatenate([index[parts[("b", inv[g])]].numpy() for g in canon])
            return [[Cell(kind, W, U, b, np.zeros_like(b))]]

        cfg = _config(index, scope)
        facts = _activation_facts(cfg, keras_era(index, keras1_names=True), bool(cfg.get("class_name")))
        prov = {"activation": facts["activation"][1], "recurrent_activation": facts["recurrent_activation"][1],
                "go_backwards": "file: model config" if isinstance(cfg.get("go_backwards"), bool) else
                "version default: Keras go_backwards=False (weights-only files do not store it)"}
        if kind == "gru":
            prov["reset_after"] = "file: layout (Keras 1 GRUs are reset-before)"
        group = RecurrentGroup(scope=scope, kind=kind, layout="keras1", variant=f"Keras 1 {kind.upper()} (per-gate)",
                               input_size=w0[0], hidden_size=w0[1], bias="one", activation=facts["activation"][0],
                               recurrent_activation=facts["recurrent_activation"][0], provenance=prov,
                               go_backwards=bool(cfg.get("go_backwards", False)),
                               reset_after=False if kind == "gru" else None, members=list(parts.values()), load=load)
        groups.append(group)
    return groups


def cell_to_keras(cell: Cell) -> dict[str, np.ndarray]:
    order = ORDERS[("keras", cell.kind)]
    canon = "ifgo" if cell.kind == "lstm" else "rzn"
    out = {"kernel": transposed(cell.w_ih, canon, order), "recurrent_kernel": transposed(cell.w_hh, canon, order)}
    if cell.has_bias:
        b_ih, b_hh = cell.biases()
        b_ih, b_hh = reorder(b_ih, canon, order), reorder(b_hh, canon, order)
        if cell.kind == "gru" and cell.reset_after:
            out["bias"] = np.stack([b_ih, b_hh])
        else:
            out["bias"] = b_ih + b_hh
    return out


def write(stack: Stack) -> dict[str, np.ndarray]:
    """Keras 3 style names: ``cell/kernel``; Bidirectional ``forward_layer/cell/...``; layer k>0 ``layer_k/...``."""
    return lay_out(stack, ("forward_layer/", "backward_layer/"), cell_to_keras)
