"""ckptsurgeon: safe, lazy checkpoint surgery across PyTorch, safetensors, numpy, Keras and TensorFlow.

>>> import ckptsurgeon
>>> index = ckptsurgeon.open("model.pt")            # lazy: nothing but headers is read
>>> lstm = index.select("encoder/*")                # scope globs
>>> w = lstm["encoder/rnn/weight_ih_l0"].numpy()     # reads only that tensor's bytes
>>> ckptsurgeon.save(lstm, "enc.safetensors")       # atomic, byte-exact
"""
from __future__ import annotations

from .api import ExtractResult, extract, open, save
from .errors import (
    CheckpointError,
    FormatError,
    MissingDependencyError,
    OutputError,
    SelectionError,
    UnsafeCheckpointError,
)
from .index import CheckpointIndex, TensorRef

__version__ = "0.1.0"

__all__ = [
    "open",
    "save",
    "extract",
    "ExtractResult",
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
