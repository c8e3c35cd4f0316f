"""Keras model configuration read as data (never deserialized): layer name -> class and arguments.

The shapes ``model_config`` takes, by writer (each parsed here):

- Keras 2.2.3+, tf.keras, Keras 3: ``{"class_name": "Sequential"|"Functional"|"Model", "config": {"name",
  "layers": [{"class_name", "config", ...}], ...}}``;
- Keras 2.0-2.2 and Keras 1 ``Sequential``: ``"config"`` is a plain list of ``{"class_name", "config"}``
  (``Sequential.get_config`` returned ``copy.deepcopy(config)`` of that list);
- Keras 1 functional ``Model``: as the first, with Keras 1 argument names (``output_dim``,
  ``inner_activation``), which are kept and also given under their Keras 2 names;
- Keras 0.x entries without ``class_name`` (``{"name": "LSTM", "custom_name": "lstm_1", ...}``), which
  Keras 1's ``Sequential.legacy_from_config`` still read.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["layer_summaries", "layer_paths", "parse_config", "summarize"]

# Arguments later layers (recurrent recognition) need; everything else stays out of the index.
KEPT = ("units", "activation", "recurrent_activation", "use_bias", "reset_after", "return_sequences",
        "go_backwards", "unit_forget_bias", "implementation", "merge_mode", "input_dim", "output_dim",
        "time_major", "stateful", "unroll", "dropout", "recurrent_dropout",
        "inner_activation", "consume_less", "forget_bias_init")  # the last three: Keras 1
# Keras 1 argument -> the Keras 2 argument that means the same (Keras 2's legacy interface conversions).
KERAS1_NAMES = {"inner_activation": "recurrent_activation", "output_dim": "units"}
_SCALAR = (str, int, float, bool, type(None))


def parse_config(text: str | bytes, where: str) -> dict[str, Any]:
    from ...errors import FormatError

    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{where}: model configuration is not JSON: {exc}") from None
    except RecursionError:
        raise FormatError(f"{where}: model configuration nests too deeply") from None
    if not isinstance(config, dict):
        raise FormatError(f"{where}: model configuration is not a JSON object")
    return config


def _normalize(layer: dict[str, Any]) -> dict[str, Any]:
    """A Keras 0.x list entry ``{"name": <class>, "custom_name": <name>, ...}`` as ``{"class_name", "config"}``."""
    if "class_name" not in layer and isinstance(layer.get("name"), str) and "config" not in layer:
        return {"class_name": layer["name"], "config": {**layer, "name": layer.get("custom_name")}}
    return layer


def _summary(layer: dict[str, Any]) -> dict[str, Any]:
    layer = _normalize(layer)
    cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    out: dict[str, Any] = {"class_name": layer.get("class_name")}
    out.update({k: cfg[k] for k in KEPT if k in cfg and isinstance(cfg[k], _SCALAR)})
    for old, new in KERAS1_NAMES.items():
        if old in out and new not in out:
            out[new] = out[old]
    for wrapped in ("layer", "backward_layer"):
        inner = cfg.get(wrapped)
        if isinstance(inner, dict):
            out[wrapped] = _summary(inner) | {"name": (_normalize(inner).get("config") or {}).get("name")}
    cell = cfg.get("cell")
    if layer.get("class_name") == "RNN" and isinstance(cell, dict) and isinstance(cell.get("config"), dict):
        # keras.layers.RNN(LSTMCell(...)): the cell's config states what the layer computes (one cell; a list or
        # StackedRNNCells states several, which no single group holds)
        out["cell_class"] = cell.get("class_name")
        if cell.get("class_name") in ("LSTMCell", "GRUCell", "SimpleRNNCell"):
            out.update({k: v for k, v in cell["config"].items() if k in KEPT and isinstance(v, _SCALAR) and k not in out})
        cells = cell["config"].get("cells")
        if cell.get("class_name") == "StackedRNNCells" and isinstance(cells, list):
            # the cells in the order they run at each step (each feeds the next): what makes the layer a stack
            out["cells"] = [_summary(c) | {"name": (_normalize(c).get("config") or {}).get("name")}
                            for c in cells if isinstance(c, dict)]
    return out


def summarize(layer: dict[str, Any]) -> dict[str, Any]:
    """One serialized layer (``{"class_name", "config"}``) as ``layer_paths`` holds it."""
    return _summary(layer)


def _inbound(node: dict[str, Any]) -> list[str] | None:
    """The names of the layers a Functional model's layer takes its inputs from (its ``inbound_nodes``: Keras 3's
    ``keras_history``, Keras 2's ``[name, node, tensor, kwargs]``); None when the config does not say."""
    nodes = node.get("inbound_nodes")
    if not isinstance(nodes, list):
        return None
    names: list[str] = []

    def walk(x: Any, depth: int = 0) -> None:
        if depth > 32:
            return
        if isinstance(x, dict):
            hist = (x.get("config") or {}).get("keras_history") if x.get("class_name") == "__keras_tensor__" else None
            if isinstance(hist, list) and hist and isinstance(hist[0], str):
                names.append(hist[0])
                return
            for v in x.values():
                walk(v, depth + 1)
        elif isinstance(x, list):
            if len(x) >= 3 and isinstance(x[0], str) and isinstance(x[1], int) and isinstance(x[2], int):
                names.append(x[0])
                return
            for v in x:
                walk(v, depth + 1)

    walk(nodes)
    return names


def layer_paths(config: dict[str, Any] | list[Any]) -> dict[str, dict[str, Any]]:
    """Every layer by its full path: nested models' names, then the layer's (``enc_a/lstm``); the outermost
    model's own name is not part of it (Keras does not put it in weight paths either).

    Each summary also holds ``after``: the full paths of the layers it takes its inputs from (the previous layer of
    a Sequential, the ``inbound_nodes`` of a Functional model's layer; ``[]`` for a model's first layer), when the
    config says; it is what tells a stack of layers from layers side by side."""
    out: dict[str, dict[str, Any]] = {}

    def visit(node: Any, prefix: str, outer: bool, previous: list[str] | None = None) -> str | None:
        if isinstance(node, list):  # Keras 1 / 2.0-2.2 Sequential: the config is the list of layers
            last: list[str] = []
            for layer in node:
                path = visit(layer, prefix, False, last)
                last = [path] if path else last
            return None
        if not isinstance(node, dict):
            return None
        node = _normalize(node)
        cfg = node.get("config")
        if isinstance(cfg, list):  # a (nested) Keras 1 / 2.0-2.2 Sequential
            name = node.get("name")
            visit(cfg, prefix if outer or not isinstance(name, str) else f"{prefix}{name}/", False)
        elif isinstance(cfg, dict):
            name = cfg.get("name") or node.get("name")
            if "layers" in cfg:  # a model: its layers sit under its name (the outermost's under nothing)
                here = prefix if outer or not isinstance(name, str) or not name else f"{prefix}{name}/"
                layers = cfg.get("layers") or []
                if node.get("class_name") == "Sequential" and isinstance(layers, list):
                    last = []
                    for layer in layers:
                        path = visit(layer, here, False, last)
                        last = [path] if path else last
                else:
                    visit(layers, here, False, None) if not isinstance(layers, list) else [
                        visit(layer, here, False, None) for layer in layers]
            elif node.get("class_name") and name:
                summary = _summary(node)
                inbound = _inbound(node)
                after = [f"{prefix}{n}" for n in inbound] if inbound is not None else previous
                if after is not None:
                    summary["after"] = after
                out[f"{prefix}{name}"] = summary
                return f"{prefix}{name}"
        return None

    visit(config, "", True)
    return out


def layer_summaries(config: dict[str, Any] | list[Any]) -> dict[str, dict[str, Any]]:
    """Every layer (nested models included) by its own name: class and the recurrent-relevant arguments. Two
    layers of one name in different nested models (``enc_a/lstm``, ``enc_b/lstm``) are not told apart by name:
    that name holds ``{"class_name", "ambiguous": [their paths]}`` and no arguments (``layer_paths`` has each)."""
    out: dict[str, dict[str, Any]] = {}
    paths: dict[str, list[str]] = {}
    for path, summary in layer_paths(config).items():
        name = path.rpartition("/")[2]
        paths.setdefault(name, []).append(path)
        if name in out and out[name] != summary:
            out[name] = {"class_name": summary.get("class_name"), "ambiguous": paths[name]}
        elif name not in out:
            out[name] = summary
    return out
