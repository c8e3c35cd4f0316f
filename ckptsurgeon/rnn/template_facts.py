"""Facts a graft template's file does not state, declared by the user (``graft --template-fact NAME=VALUE``).

A weights-only template (``.weights.h5``, a TF2 object checkpoint, a TF1 Saver bundle) cannot say that its
model's LSTM runs ``relu`` or a TF1 cell ``forget_bias=0``; the source's fact flags describe the source only.
A declared fact applies to every template group where the file does not state it (a version default or
missing); where the file states another value it is refused, never overridden.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import SelectionError
from ..index import CheckpointIndex
from .activations import ACTIVATIONS
from .group import MERGE_MODES, RecognizeOptions, origin
from .recognize import recognize

__all__ = ["FACTS", "parse_template_facts", "declared"]

FACTS = ("activation", "recurrent_activation", "forget_bias", "go_backwards", "merge_mode", "reset_after",
         "cell_clip", "proj_clip")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _value(name: str, text: str) -> Any:
    if name in ("activation", "recurrent_activation"):
        if text not in ACTIVATIONS:
            raise SelectionError(f"--template-fact {name}={text}: not an activation ckptsurgeon knows "
                                 f"({', '.join(sorted(ACTIVATIONS))})")
        return text
    if name in ("go_backwards", "reset_after"):
        if text.lower() not in _TRUE + _FALSE:
            raise SelectionError(f"--template-fact {name}={text}: expected true or false")
        return text.lower() in _TRUE
    if name == "merge_mode":
        if text not in MERGE_MODES:
            raise SelectionError(f"--template-fact merge_mode={text}: expected one of {', '.join(MERGE_MODES)}")
        return text
    try:
        return float(text)
    except ValueError:
        raise SelectionError(f"--template-fact {name}={text}: expected a number") from None


def parse_template_facts(items: str | Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``["activation=relu", "forget_bias=0"]`` (or a mapping) -> ``{"activation": "relu", "forget_bias": 0.0}``."""
    if isinstance(items, str):  # one "NAME=VALUE", as rename= and map= take one string
        items = [items]
    pairs = items.items() if isinstance(items, Mapping) else [tuple(i.split("=", 1)) if "=" in i else (i, "")
                                                             for i in items]
    out: dict[str, Any] = {}
    for name, raw in pairs:
        name = str(name).strip().replace("-", "_")
        if name not in FACTS:
            raise SelectionError(f"--template-fact {name}: not a fact a template can be given ({', '.join(FACTS)}); "
                                 "write NAME=VALUE")
        out[name] = _value(name, str(raw).strip()) if isinstance(raw, str) else raw
    return out


def declared(facts: Mapping[str, Any], options: RecognizeOptions | None = None) -> Callable[[CheckpointIndex], dict]:
    """For ``graft(template_facts=...)``: the declared facts as each template group's stated self-description."""
    def state(template: CheckpointIndex) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for group in recognize(template, options):
            desc: dict[str, Any] = {}
            for name, value in facts.items():
                if name == "reset_after" and group.kind != "gru":
                    continue
                if name == "forget_bias" and group.kind != "lstm":
                    continue
                where = group.provenance.get(name, "")
                if origin(where) in ("file", "live model"):
                    if getattr(group, name, None) != value:
                        raise SelectionError(f"template group {group.scope or '/'}: the file states {name}="
                                             f"{getattr(group, name, None)!r} ({where}); --template-fact {name}={value} "
                                             "contradicts it")
                    continue
                if name == "reset_after":
                    desc["family"] = "reset-after" if value else "reset-before"
                else:
                    desc[name] = value
            if desc:
                out[group.scope] = desc | {"stated_by": "flag: --template-fact " + ", ".join(
                    f"{k}={v}" for k, v in facts.items())}
        return out

    return state
