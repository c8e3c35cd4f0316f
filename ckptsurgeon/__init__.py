"""ckptsurgeon: safe, lazy checkpoint surgery across PyTorch, safetensors, numpy, Keras and TensorFlow.

Every command has a Python function; reporting ones return typed results whose ``to_dict()`` is the
command's ``--json`` (see ``ckptsurgeon.results``). The examples run (doctest) beside ``model.pt``.

>>> import ckptsurgeon
>>> index = ckptsurgeon.open("model.pt")                 # lazy: nothing but headers is read
>>> enc = index.select("encoder/*")                      # scope globs
>>> enc["encoder/rnn/weight_ih_l0"].numpy().shape        # reads only that tensor's bytes
(64, 8)
>>> ckptsurgeon.save(enc, "enc.safetensors")             # atomic, byte-exact
'enc.safetensors'
>>> [g.scope for g in ckptsurgeon.rnn("model.pt").groups]
['encoder/rnn', 'decoder']
>>> index["encoder/rnn/weight_ih_l9"]                    # doctest: +ELLIPSIS
Traceback (most recent call last):
ckptsurgeon.errors.TensorNotFoundError: model.pt: no tensor 'encoder/rnn/weight_ih_l9'; closest: encoder/rnn/weight_ih_l1, ...
"""
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562): ``ckptsurgeon ls`` stays light
    from .api import ExtractResult, extract, open, save, save_sharded
    from .api_checks import diff, layout, rnn, scan, stats, validate, verify
    from .errors import (
        CheckpointError,
        CheckpointIsADirectoryError,
        CheckpointNotFoundError,
        FormatError,
        MissingDependencyError,
        OutputError,
        SelectionError,
        TensorNotFoundError,
        UnsafeCheckpointError,
    )
    from .graft import GraftReport, graft
    from .index import CheckpointIndex, TensorRef
    from .remap import Plan, PlanError, Remap, Rule, load_rules, parse_map
    from .results import (
        DiffResult,
        Finding,
        GroupCheck,
        GroupInfo,
        Layout,
        RnnResult,
        ScanFile,
        ScanReport,
        StatsResult,
        ValidationResult,
        VerifyResult,
    )

_CHECKS = ("stats", "validate", "layout", "diff", "scan", "verify")  # and rnn: the callable subpackage below
_RESULTS = ("StatsResult", "ValidationResult", "Finding", "Layout", "DiffResult", "ScanReport", "ScanFile", "RnnResult",
            "GroupInfo", "VerifyResult", "GroupCheck")

# public name -> the module defining it
_LAZY = {
    **dict.fromkeys(("open", "save", "save_sharded", "extract", "ExtractResult"), ".api"),
    **dict.fromkeys(_CHECKS, ".api_checks"),
    **dict.fromkeys(_RESULTS, ".results"),
    **dict.fromkeys(("CheckpointError", "FormatError", "CheckpointNotFoundError", "CheckpointIsADirectoryError",
                     "UnsafeCheckpointError", "SelectionError", "TensorNotFoundError", "OutputError",
                     "MissingDependencyError"), ".errors"),
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
    "stats",
    "validate",
    "layout",
    "diff",
    "scan",
    "rnn",
    "verify",
    "StatsResult",
    "ValidationResult",
    "Finding",
    "Layout",
    "DiffResult",
    "ScanReport",
    "ScanFile",
    "RnnResult",
    "GroupInfo",
    "VerifyResult",
    "GroupCheck",
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
    "CheckpointIsADirectoryError",
    "UnsafeCheckpointError",
    "SelectionError",
    "TensorNotFoundError",
    "OutputError",
    "MissingDependencyError",
    "__version__",
]


class _CallableSubpackage(types.ModuleType):
    """``ckptsurgeon.rnn`` is the recurrent subpackage (``from ckptsurgeon.rnn import recognize``,
    ``ckptsurgeon.rnn.recognize``) and, called, the ``rnn`` command: ``ckptsurgeon.rnn("model.pt")`` is
    ``ckptsurgeon.api_checks.rnn("model.pt")``, the recurrent groups as a typed result."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .api_checks import rnn

        return rnn(*args, **kwargs)


class _Package(types.ModuleType):
    """Once the submodule ``ckptsurgeon.graft`` is imported, the import system sets the package's
    ``graft`` to that module; keep the public function there instead (as the eager import did). The
    subpackage ``ckptsurgeon.rnn`` stays itself, made callable."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            if name == "rnn":
                value.__class__ = _CallableSubpackage
            elif _LAZY.get(name) == "." + name:
                value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name == "rnn":  # importing the subpackage sets it here (``_Package.__setattr__``)
        return import_module(".rnn", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptsurgeon' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
