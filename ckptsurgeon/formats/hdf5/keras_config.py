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

__all__ = ["layer_summaries", "parse_config"]

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
    return out


def layer_summaries(config: dict[str, Any] | list[Any]) -> dict[str, dict[str, Any]]:
    """Every layer (nested models included) by name: class and the recurrent-relevant arguments."""
    out: dict[str, dict[str, Any]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, list):  # Keras 1 / 2.0-2.2 Sequential: the config is the list of layers
            for layer in node:
                visit(layer)
            return
        if not isinstance(node, dict):
            return
        node = _normalize(node)
        cfg = node.get("config")
        if isinstance(cfg, list):  # a (nested) Keras 1 / 2.0-2.2 Sequential
            visit(cfg)
        elif isinstance(cfg, dict):
            name = cfg.get("name") or node.get("name")
            if node.get("class_name") and name and "layers" not in cfg:
                out[str(name)] = _summary(node)
            visit(cfg.get("layers") or [])

    visit(config)
    return out
