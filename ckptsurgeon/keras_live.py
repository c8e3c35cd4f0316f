"""The facts of a live Keras 3 model's recurrent layers, read from the layers themselves.

The template ``keras.load_into`` saves from a model does not always state them: a subclassed model's
``.keras`` holds no layer configs, and a model Keras cannot serialize falls back to a ``.weights.h5``
(no config at all). The live layers always know what they compute, so their facts are stated for the
template's groups (``rnn:<scope>`` metadata, provenance ``live model: ...``) and win over defaults.

A template group is matched to its live layer by its weights: the template was just saved from the
model, so the layer's arrays are byte-identical to the group's tensors. Two live layers holding the
same bytes but computing differently, or a fact ckptsurgeon cannot compute (a custom activation, a
Bidirectional whose directions differ), are refused with the layer's name.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SelectionError
from .index import CheckpointIndex
from .rnn.activations import ACTIVATIONS
from .rnn.group import RecognizeOptions
from .rnn.keras_facts import KerasEra, resolve_activation
from .rnn.recognize import recognize

__all__ = ["LiveLayer", "live_layers", "template_facts"]

_KERAS3 = KerasEra("Keras 3", 3, ("tanh", "sigmoid"), "Keras 3")


Key = frozenset[tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class LiveLayer:
    path: str  # the layer's name path in the live model ("encoder/bi")
    facts: dict[str, Any]  # what describe_output states: activation, recurrent_activation, family, ...
    weights: Key  # (shape, sha256) of every weight: the match key
    config: dict[str, Any]  # the layer's config as a file would store it (keras_config summary)
    halves: tuple[Key, Key] | None = None  # a Bidirectional's forward and backward weights


def _activation(layer_path: str, which: str, value: Any) -> str:
    import keras

    name = value if isinstance(value, str) else keras.activations.serialize(value)
    if isinstance(name, dict):  # a registered custom function: {"class_name": ..., "config": ...}
        name = name.get("config", name.get("class_name"))
    resolved = resolve_activation(str(name), _KERAS3)
    if resolved not in ACTIVATIONS:
        raise SelectionError(f"live layer {layer_path}: its {which} {name!r} is not one ckptsurgeon can compute; "
                             "nothing loaded")
    return resolved


def _cell_facts(path: str, rnn: Any) -> dict[str, Any]:
    cfg = rnn.cell.get_config()
    facts: dict[str, Any] = {"activation": _activation(path, "activation", cfg.get("activation", "tanh"))}
    if "recurrent_activation" in cfg:
        facts["recurrent_activation"] = _activation(path, "recurrent_activation", cfg["recurrent_activation"])
    if "reset_after" in cfg:
        facts["family"] = "reset-after" if cfg["reset_after"] else "reset-before"
    facts["go_backwards"] = bool(getattr(rnn, "go_backwards", False))
    return facts


def _key(weights: list[np.ndarray]) -> Key:
    return frozenset((tuple(w.shape), hashlib.sha256(np.ascontiguousarray(w).tobytes()).hexdigest()) for w in weights)


def _walk(layer: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}/{sub.name}" if prefix else sub.name
        yield path, sub
        yield from _walk(sub, path)


def live_layers(model: Any) -> list[LiveLayer]:
    """Every recurrent layer of ``model`` at any depth (nested models, custom layers), with its facts."""
    import keras

    out: list[LiveLayer] = []
    inside_bidirectional: set[int] = set()
    for path, layer in _walk(model, ""):
        if isinstance(layer, keras.layers.Bidirectional):
            fw, bw = layer.forward_layer, layer.backward_layer
            inside_bidirectional.update((id(fw), id(bw)))
            f_facts, b_facts = _cell_facts(f"{path} (forward)", fw), _cell_facts(f"{path} (backward)", bw)
            f_facts.pop("go_backwards"), b_facts.pop("go_backwards")
            if f_facts != b_facts or fw.go_backwards or not bw.go_backwards:
                raise SelectionError(f"live layer {path}: its forward and backward layers compute differently "
                                     f"({f_facts} vs {b_facts}); load them one direction at a time")
            mode = "none" if layer.merge_mode is None else str(layer.merge_mode)
            out.append(LiveLayer(path, f_facts | {"merge_mode": mode}, _key(_weights(layer)), _config(layer),
                                 (_key(_weights(fw)), _key(_weights(bw)))))
        elif isinstance(layer, keras.layers.RNN) and id(layer) not in inside_bidirectional:
            if not hasattr(layer.cell, "get_config") or isinstance(layer.cell, keras.layers.StackedRNNCells):
                continue  # a stack of cells or a custom cell: the file's own reading stands (or refuses)
            out.append(LiveLayer(path, _cell_facts(path, layer), _key(_weights(layer)), _config(layer)))
    return out


def _weights(layer: Any) -> list[np.ndarray]:
    return [np.asarray(w) for w in layer.get_weights()]


def _config(layer: Any) -> dict[str, Any]:
    import keras

    from .formats.hdf5.keras_config import summarize

    return summarize(keras.saving.serialize_keras_object(layer))


def _one(scope: str, matches: list[LiveLayer]) -> LiveLayer | None:
    if len({json.dumps(m.facts, sort_keys=True) for m in matches}) > 1:
        raise SelectionError(f"template group {scope or '/'}: live layers {', '.join(m.path for m in matches)} "
                             "hold the same weights but compute differently; nothing loaded")
    return matches[0] if matches else None


def template_facts(model: Any, template: CheckpointIndex, options: RecognizeOptions | None = None) -> dict[str, dict]:
    """For each recurrent layer of ``template`` (saved from ``model``): ``{scope: facts | stated_by | config}``.

    A Bidirectional whose template holds no config for it shows up as two one-direction groups
    (``<scope>/forward_layer``, ``<scope>/backward_layer``); its halves' weights find it."""
    layers = live_layers(model)
    groups = recognize(template, options)
    found: dict[str, LiveLayer] = {}
    keys = {g.scope: _key([template[m].numpy() for m in g.members]) for g in groups}
    for scope, key in keys.items():
        hit = _one(scope, [layer for layer in layers if layer.weights == key])
        if hit is not None:
            found[scope] = hit
    for layer in layers:
        if layer.halves is None or layer in found.values():
            continue
        fw = [s for s, k in keys.items() if k == layer.halves[0]]
        bw = [s for s, k in keys.items() if k == layer.halves[1]]
        parents = {s.rpartition("/")[0] for s in fw + bw}
        if len(fw) == 1 and len(bw) == 1 and len(parents) == 1:
            found[parents.pop()] = layer
    return {scope: layer.facts | {"stated_by": f"live model: layer {layer.path}", "config": layer.config}
            for scope, layer in found.items()}
