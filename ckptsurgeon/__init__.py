"""ckptsurgeon: safe, lazy checkpoint surgery across PyTorch, safetensors, numpy, Keras and TensorFlow.

>>> import ckptsurgeon
>>> index = ckptsurgeon.open("model.pt")            # lazy: nothing but headers is read
>>> lstm = index.select("encoder/*")                # scope globs
>>> w = lstm["encoder/rnn/weight_ih_l0"].numpy()     # reads only that tensor's bytes
>>> ckptsurgeon.save(lstm, "enc.safetensors")       # atomic, byte-exact
"""
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562): ``ckptsurgeon ls`` stays light
    from .api import ExtractResult, extract, open, save, save_sharded
    from .errors import (
        CheckpointError,
        FormatError,
        MissingDependencyError,
        OutputError,
        SelectionError,
        UnsafeCheckpointError,
    )
    from .graft import GraftReport, graft
    from .index import CheckpointIndex, TensorRef
    from .remap import Plan, PlanError, Remap, Rule, load_rules, parse_map

# public name -> the module defining it
_LAZY = {
    **dict.fromkeys(("open", "save", "save_sharded", "extract", "ExtractResult"), ".api"),
    **dict.fromkeys(("CheckpointError", "FormatError", "CheckpointNotFoundError", "UnsafeCheckpointError", "SelectionError",
                     "OutputError", "MissingDependencyError"), ".errors"),
    **dict.fromkeys(("graft", "GraftReport"), ".graft"),
    **dict.fromkeys(("CheckpointIndex", "TensorRef"), ".index"),
    **dict.fromkeys(("Remap", "Plan", "PlanError", "Rule", "load_rules", "parse_map"), ".remap"),
}

__version__ = "0.1.0"

__all__ = [
    "open",
    "save",
    "save_sharded",
    "extract",
    "ExtractResult",
    "graft",
    "GraftReport",
    "Remap",
    "Plan",
    "PlanError",
    "Rule",
    "load_rules",
    "parse_map",
    "CheckpointIndex",
    "TensorRef",
    "CheckpointError",
    "FormatError",
    "CheckpointNotFoundError",
    "UnsafeCheckpointError",
    "SelectionError",
    "OutputError",
    "MissingDependencyError",
    "__version__",
]


class _Package(types.ModuleType):
    """Once the submodule ``ckptsurgeon.graft`` is imported, the import system sets the package's
    ``graft`` to that module; keep the public function there instead (as the eager import did)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == "." + name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptsurgeon' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
