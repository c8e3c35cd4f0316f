"""Keras model configurations read for ``scan`` as JSON data (nothing deserialized, nothing unmarshalled).

What a configuration can make ``load_model`` run, by writer:

- Keras 3 ``.keras`` ``config.json`` and Keras 3 ``.h5`` ``model_config``: a ``Lambda`` layer whose ``function`` is
  ``{"class_name": "__lambda__", "config": {"code": <base64 of marshalled bytecode>}}`` (any other object may hold
  a ``__lambda__`` too: an activation, a loss); objects naming their ``module`` and ``registered_name``;
- Keras 2 / tf.keras ``.h5``: a ``Lambda`` layer whose ``function`` is ``[<base64 bytecode>, defaults, closure]``
  with ``function_type: "lambda"`` (``output_shape_type`` likewise).

Marshalled bytecode and ``Lambda`` layers are ``code``: Keras 3 refuses them in safe mode (its default) and runs
them with ``safe_mode=False``; tf.keras before 2.13 ran them unasked. Objects from outside Keras' own packages
are ``code`` too: ``load_model`` runs the class registered under that name (``custom_objects``). A config naming a
standard-library module (``os``, ``subprocess``, a Python builtin such as ``exec``) is ``config``, unsafe: no model
needs one, and Keras before 3.9 imported whatever module a config named (CVE-2025-1550).
"""
from __future__ import annotations

import binascii
import builtins
import sys
from typing import Any

from ..errors import CheckpointError
from ..formats.hdf5.keras_config import parse_config
from ..source import open_source
from .findings import Finding

__all__ = ["keras_config_findings", "h5_config_findings", "CONFIG_ATTRS"]

# HDF5 root attributes that hold a Keras configuration (the model; compile(): losses, metrics, optimizer).
CONFIG_ATTRS = ("model_config", "training_config")
# Top-level packages whose objects Keras 3 resolves itself.
KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras", "tensorflow"})
_PY_BUILTINS = frozenset(dir(builtins))
_STDLIB = frozenset(sys.stdlib_module_names) - {"builtins"}
_SAFE_MODE = ("Keras 3 refuses it in safe mode (load_model's default) and runs it with safe_mode=False; "
              "tf.keras before 2.13 ran it unasked")


def _bytecode(text: Any) -> str:
    """What a base64 ``code`` field holds, told without unmarshalling it."""
    if not isinstance(text, str):
        return "a non-string code field"
    try:
        raw = binascii.a2b_base64(text.encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return "a code field that is not base64"
    if raw[:1] and raw[0] & 0x7F == ord("c"):  # marshal's TYPE_CODE (0x80: its reference flag)
        return f"marshalled Python bytecode ({len(raw):,} bytes)"
    return f"{len(raw):,} bytes that are not marshalled bytecode"


def _function(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """How a Lambda layer's config gives its function: (description, id of a ``__lambda__`` object described)."""
    fn = cfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
        inner = fn.get("config")
        return _bytecode(inner.get("code") if isinstance(inner, dict) else None), id(fn)
    if cfg.get("function_type") == "lambda":
        code = fn[0] if isinstance(fn, (list, tuple)) and fn else fn
        return _bytecode(code), None
    if isinstance(fn, dict):
        name = fn.get("config") if fn.get("class_name") == "function" else fn.get("class_name")
        return f"the function {fn.get('module') or '?'}.{name}", None
    if isinstance(fn, str):
        return f"the function {cfg.get('module') or '?'}.{fn}", None
    return "a function of unknown form", None


def _package(name: str) -> str:
    return name.split(".", 1)[0].split(">", 1)[0]


def _object_name(node: dict[str, Any]) -> str:
    cfg = node.get("config")
    name = cfg.get("name") if isinstance(cfg, dict) else cfg if isinstance(cfg, str) else None
    return f"{node.get('class_name')} {name!r}" if isinstance(name, str) else str(node.get("class_name"))


def _custom(node: dict[str, Any], where: str) -> Finding | None:
    """A finding for an object resolved outside Keras: a standard-library name (unsafe) or a custom object (code)."""
    module, registered, cls = node.get("module"), node.get("registered_name"), node.get("class_name")
    fn = node.get("config") if cls == "function" and isinstance(node.get("config"), str) else None
    if module == "builtins":  # Keras writes its own functions so ("relu"); a Python builtin is no Keras function
        name = fn or cls
        if isinstance(name, str) and name in _PY_BUILTINS:
            return Finding("config", where, f"{where}: names the Python builtin {name} (module 'builtins'); no model "
                           "needs it, and Keras before 3.9 resolved such names by import (CVE-2025-1550)", None,
                           f"builtins.{name}")
        return None
    if isinstance(module, str) and module:
        if _package(module) in _STDLIB:
            return Finding("config", where, f"{where}: names {module}.{fn or cls}, from the standard library module "
                           f"{_package(module)}; no model needs it, and Keras before 3.9 imported the module a config "
                           "names (CVE-2025-1550)", None, f"{module}.{fn or cls}")
        if _package(module) in KERAS_PACKAGES:
            return None
        return Finding("code", where, f"{where}: custom object {module}.{fn or cls}: load_model runs the class or function "
                       f"registered as {registered or cls!r} (custom_objects), code from your environment", None,
                       f"{module}.{fn or cls}")
    if isinstance(registered, str) and ">" in registered and _package(registered) not in KERAS_PACKAGES:
        return Finding("code", where, f"{where}: custom object {registered}: load_model runs the class registered "
                       "under this name (custom_objects), code from your environment", None, registered)
    return None


def keras_config_findings(config: Any, where: str) -> list[Finding]:
    """Findings for the ``Lambda`` layers, marshalled code and custom objects of one Keras configuration (JSON data)."""
    findings: list[Finding] = []
    described: set[int] = set()
    stack: list[tuple[Any, str]] = [(config, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
            continue
        if not isinstance(node, dict):
            continue
        at = f"{where}: {path or 'top'}"
        cls, raw = node.get("class_name"), node.get("config")
        cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if cls == "Lambda":
            what, lam = _function(cfg)
            described.update(x for x in (lam, id(raw) if isinstance(raw, dict) else None) if x is not None)
            findings.append(Finding("code", where, f"{at}: {_object_name(node)} is a Lambda layer running {what}; "
                                    f"{_SAFE_MODE}", None, "Lambda"))
        elif cls == "__lambda__" and id(node) not in described:
            findings.append(Finding("code", where, f"{at}: {_bytecode(cfg.get('code'))} (a Python lambda); {_SAFE_MODE}",
                                    None, "__lambda__"))
        elif id(node) not in described and "lambda" in (node.get("function_type"), node.get("output_shape_type")):
            findings.append(Finding("code", where, f"{at}: a Python lambda stored as {_bytecode(node.get('function'))}; "
                                    f"{_SAFE_MODE}", None, "lambda"))
        custom = _custom(node, at) if isinstance(cls, str) else None
        if custom is not None:
            findings.append(custom)
        stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in reversed(list(node.items())))
    return findings


def h5_config_findings(path: str) -> list[Finding]:
    """The findings of the Keras configurations an HDF5 file keeps in its root attributes (``model.save("x.h5")``);
    its metadata is parsed by libhdf5 in a child process, as ``ls`` parses it."""
    from ..formats.hdf5.h5tree import H5Source  # here: a scan without HDF5 files never loads the HDF5 modules
    from ..formats.hdf5.hdf5_safe import open_h5

    root = open_h5(H5Source(path, 0, open_source(path).size, path))
    findings: list[Finding] = []
    for attr in CONFIG_ATTRS:
        if attr not in root.attrs:
            continue
        value = root.attrs[attr]
        if isinstance(value, list) and len(value) == 1:  # a one-element string array
            value = value[0]
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        where = f"{path}:{attr}"
        try:
            findings += keras_config_findings(parse_config(text, where), where)
        except CheckpointError as exc:
            findings.append(Finding("damaged", where, f"{exc} (while reading its Keras configuration)"))
    return findings
