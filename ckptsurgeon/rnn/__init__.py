"""Recurrent layers: recognition in every layout, a canonical cell, exact conversion, reference cells."""
from __future__ import annotations

from .cell import Cell, Stack
from .convert import ConversionError, ConvertOptions, TARGETS, check_target, convert_index, convert_stack
from .group import RecognizeOptions, RecurrentGroup
from .recognize import recognize
from .reference import run_cell, run_stack
from .verify import GroupCheck, verify

__all__ = [
    "Cell", "Stack", "RecurrentGroup", "RecognizeOptions", "ConvertOptions", "ConversionError", "TARGETS",
    "recognize", "check_target", "convert_stack", "convert_index", "run_cell", "run_stack", "verify", "GroupCheck",
]
