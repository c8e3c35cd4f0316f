"""Write a ``.pt`` state dict through torch itself (optional dependency)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import MissingDependencyError

__all__ = ["write", "to_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch", "writing .pt files") from None
    return torch


_VIEW_AS = {  # ml_dtypes dtypes travel as same-width integers, then are reinterpreted by torch
    "bfloat16": ("int16", "bfloat16"),
    "float8_e4m3fn": ("uint8", "float8_e4m3fn"),
    "float8_e5m2": ("uint8", "float8_e5m2"),
    "float8_e4m3fnuz": ("uint8", "float8_e4m3fnuz"),
    "float8_e5m2fnuz": ("uint8", "float8_e5m2fnuz"),
}


def to_torch(arr: np.ndarray) -> Any:
    """A torch tensor with exactly ``arr``'s bits and dtype."""
    torch = _torch()
    arr = np.ascontiguousarray(arr)
    if arr.dtype.name in _VIEW_AS:
        carrier, target = _VIEW_AS[arr.dtype.name]
        return torch.from_numpy(arr.view(carrier).copy()).view(getattr(torch, target))
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return torch.from_numpy(arr.copy())


METADATA_KEY = "ckptsurgeon"  # state_dict._metadata[METADATA_KEY] = {str: str}


def write(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """A plain state dict; ``metadata`` rides in ``state_dict._metadata["ckptsurgeon"]``, the non-tensor slot
    torch itself keeps on state dicts: ``torch.load`` restores it and ``load_state_dict(strict=True)``
    ignores it (a top-level entry would be an unexpected key)."""
    torch = _torch()
    state = OrderedDict((k, to_torch(v)) for k, v in tensors.items())
    if metadata:
        state._metadata = OrderedDict({METADATA_KEY: {str(k): str(v) for k, v in metadata.items()}})  # type: ignore[attr-defined]
    torch.save(state, fh)
