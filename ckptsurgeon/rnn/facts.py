"""Facts that change what a recurrent group computes, and where they come from.

Order of authority, applied by ``recognize`` after an adapter has read a group:
1. the adapter: what the file's names, shapes and stored config say (``file: ...``), else a documented
   default of the framework version that wrote it (``version default: <rule>``), else ``missing``;
2. ckptsurgeon's own description of a group it wrote (``rnn:<scope>`` in the file's metadata): ``file``;
3. the user's flags, for facts the file does not state (``flag: --x``). A flag never overrides a
   fact the file states (the group gets a note saying so).

``describe_output`` is the self-description every conversion writes next to its tensors, so that
reading the output back needs no guess.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import FormatError
from ..index import CheckpointIndex
from .activations import ACTIVATIONS, formula
from .group import FACT_FLAGS, RecognizeOptions, RecurrentGroup, origin

__all__ = ["META_PREFIX", "stated", "stated_scopes", "state_facts", "apply_stated", "apply_flags", "describe_output"]

META_PREFIX = "rnn:"  # metadata key of a group's self-description: "rnn:<scope>" -> JSON


def stored_metadata(index: CheckpointIndex) -> dict[str, str]:
    meta = index.metadata.get("__metadata__")
    return meta if isinstance(meta, dict) else {}


def stated_scopes(index: CheckpointIndex) -> tuple[str, ...]:
    """The (non-root) scopes the file's ``rnn:<scope>`` metadata describes, longest first: layouts that read
    structure from names (``layer_k``, ``cell_k``, ``forward``) take these whole instead."""
    scopes = [key[len(META_PREFIX):] for key in stored_metadata(index) if key.startswith(META_PREFIX)]
    return tuple(sorted((s for s in scopes if s), key=len, reverse=True))


def stated(index: CheckpointIndex, scope: str) -> dict[str, Any] | None:
    """ckptsurgeon's description of the group at ``scope``, if the file carries one."""
    text = stored_metadata(index).get(META_PREFIX + scope)
    if text is None:
        return None
    try:
        desc = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{index.files[0]}: metadata {META_PREFIX + scope!r} is not JSON: {exc}") from None
    if not isinstance(desc, dict):
        raise FormatError(f"{index.files[0]}: metadata {META_PREFIX + scope!r} is not a JSON object")
    return desc


_FROM_DESC = ("activation", "recurrent_activation", "go_backwards", "topology", "forget_bias", "merge_mode", "clip",
              "input_forget", "cell_clip", "proj_clip")


def apply_stated(group: RecurrentGroup, index: CheckpointIndex) -> None:
    desc = stated(index, group.scope)
    if desc is None:
        return
    where = str(desc.get("stated_by") or f"file: ckptsurgeon metadata {META_PREFIX}{group.scope}")
    if group.kind == "gru" and desc.get("family") in ("reset-after", "reset-before"):
        group.set_fact("reset_after", desc["family"] == "reset-after", where)
    for name in _FROM_DESC:
        if name in desc and (name not in ("activation", "recurrent_activation") or desc[name] in ACTIVATIONS):
            group.set_fact(name, desc[name], where)


def _flag_text(name: str, value: Any) -> str:
    if name == "reset_after":
        return "--reset-after" if value else "--reset-before"
    if name == "go_backwards":
        return "--go-backwards" if value else "--no-go-backwards"
    return f"{FACT_FLAGS[name]} {value}"


# Version defaults that bind like the file: an ONNX node without an attribute runs the operator's default.
_BINDING_DEFAULTS = ("version default: ONNX opset",)


def apply_flags(group: RecurrentGroup, options: RecognizeOptions) -> None:
    for name, value in options.declared().items():
        if name == "orientation" or name not in group.provenance:
            continue  # orientation is read by the per-gate adapter itself; other facts do not apply here
        if name == "reset_after" and group.kind != "gru":
            continue
        source = group.provenance[name]
        if origin(source) in ("file", "live model") or source.startswith(_BINDING_DEFAULTS):
            if getattr(group, name) != value:
                group.notes.append(f"{_flag_text(name, value)} ignored for {group.scope or '/'}: the file states "
                                   f"{name}={getattr(group, name)} ({source})")
            continue
        group.set_fact(name, value, f"flag: {_flag_text(name, value)}")


def describe_output(group: RecurrentGroup, target: str, **extra: Any) -> dict[str, Any]:
    """The self-description written beside a converted group (``rnn:<scope>`` metadata)."""
    desc: dict[str, Any] = {
        "layout": target, "kind": group.kind, "family": group.family,
        "input_size": group.input_size, "hidden_size": group.hidden_size, "proj_size": group.proj_size,
        "num_layers": group.num_layers, "directions": group.directions, "topology": group.topology,
        "go_backwards": group.go_backwards, "activation": group.activation,
        "recurrent_activation": group.recurrent_activation,
        "formulas": {"activation": formula(group.activation), "recurrent_activation": formula(group.recurrent_activation)},
        "source": f"{group.variant} at {group.scope or '/'}",
    }
    for fact in ("merge_mode", "clip", "cell_clip", "proj_clip"):
        if getattr(group, fact) is not None:
            desc[fact] = getattr(group, fact)
    if group.input_forget:
        desc["input_forget"] = True
    desc.update(extra)
    return desc


def state_facts(index: CheckpointIndex, facts: dict[str, dict]) -> None:
    """Write ``facts`` into ``index``'s metadata: each layer's live config where the file has none for its path
    (``layer_paths``), and its facts as the ``rnn:<scope>`` self-description ``recognize`` applies."""
    meta = index.metadata.get("__metadata__")
    meta = dict(meta) if isinstance(meta, dict) else {}
    paths = dict(index.metadata.get("layer_paths") or {})
    for scope, desc in facts.items():
        desc = dict(desc)
        config = desc.pop("config", None)
        if config and scope not in paths:
            paths[scope] = config
        meta[META_PREFIX + scope] = json.dumps(desc, sort_keys=True)
    index.metadata["__metadata__"] = meta
    if paths:
        index.metadata["layer_paths"] = paths
