"""ckptsurgeon: safe, lazy checkpoint surgery across PyTorch, safetensors, numpy, Keras and TensorFlow.

>>> import ckptsurgeon
>>> index = ckptsurgeon.open("model.pt")            # lazy: nothing but headers is read
>>> lstm = index.select("encoder/*")                # scope globs
>>> w = lstm["encoder/rnn/weight_ih_l0"].numpy()     # reads only that tensor's bytes
>>> ckptsurgeon.save(lstm, "enc.safetensors")       # atomic, byte-exact
"""
from __future__ import annotations

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
    "UnsafeCheckpointError",
    "SelectionError",
    "OutputError",
    "MissingDependencyError",
    "__version__",
]
