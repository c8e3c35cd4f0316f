"""Keras model configuration read as data (never deserialized): layer name -> class and arguments."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["layer_summaries", "parse_config"]

# Arguments later layers (recurrent recognition) need; everything else stays out of the index.
KEPT = ("units", "activation", "recurrent_activation", "use_bias", "reset_after", "return_sequences",
        "go_backwards", "unit_forget_bias", "implementation", "merge_mode", "input_dim", "output_dim",
        "time_major", "stateful", "unroll", "dropout", "recurrent_dropout")


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


def _summary(layer: dict[str, Any]) -> dict[str, Any]:
    cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    out: dict[str, Any] = {"class_name": layer.get("class_name")}
    out.update({k: cfg[k] for k in KEPT if k in cfg and isinstance(cfg[k], (str, int, float, bool, type(None)))})
    for wrapped in ("layer", "backward_layer"):
        inner = cfg.get(wrapped)
        if isinstance(inner, dict):
            out[wrapped] = _summary(inner) | {"name": (inner.get("config") or {}).get("name")}
    return out


def layer_summaries(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every layer (nested models included) by name: class and the recurrent-relevant arguments."""
    out: dict[str, dict[str, Any]] = {}

    def visit(node: Any) -> None:
        if not isinstance(node, dict):
            return
        cfg = node.get("config")
        if isinstance(cfg, dict):
            name = cfg.get("name") or node.get("name")
            if node.get("class_name") and name and "layers" not in cfg:
                out[str(name)] = _summary(node)
            for layer in cfg.get("layers") or []:
                visit(layer)

    visit(config)
    return out
