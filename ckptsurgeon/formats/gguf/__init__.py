"""GGUF files (llama.cpp): header parsed with bounds, plain tensors byte-exact, quantized ones dequantized on request."""
from __future__ import annotations

from .reader import dequantizing

__all__ = ["dequantizing"]
