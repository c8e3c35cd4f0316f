"""TFLite quantized tensors' real values: ``scale * (q - zero_point)``, per channel along ``quantized_dimension``
when the file gives several scales (the reader's ``quantization`` metadata entry of the tensor)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import FormatError

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["dequantize"]


def dequantize(arr: np.ndarray, q: dict[str, Any], what: str = "tensor") -> np.ndarray:
    """``arr`` (the stored integers) as float32 real values; a scale count that fits no axis is refused."""
    scale, zero = np.asarray(q["scale"], np.float64), np.asarray(q["zero_point"], np.float64)
    if zero.size not in (1, scale.size) or scale.size == 0:
        raise FormatError(f"{what}: {scale.size} scale(s) and {zero.size} zero point(s) do not pair up")
    if scale.size > 1:
        dim = int(q.get("quantized_dimension", 0))
        if not 0 <= dim < arr.ndim or arr.shape[dim] != scale.size:
            raise FormatError(f"{what}: {scale.size} per-channel scales along dimension {dim} of shape {list(arr.shape)}")
        shape = [-1 if d == dim else 1 for d in range(arr.ndim)]
        scale, zero = scale.reshape(shape), np.broadcast_to(zero, scale.shape).reshape(shape)
    return ((arr.astype(np.float64) - zero) * scale).astype(np.float32)
