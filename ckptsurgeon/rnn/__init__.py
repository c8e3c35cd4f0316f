"""Recurrent layers: recognition in every layout, a canonical cell, exact conversion, reference cells.

Driving it (what the conformance suite and the commands do)::

    groups = recognize(index, options)            # RecurrentGroup: sizes, layout, facts + provenance
    conv = convert_group(group, "keras")           # Converted: .tensors (relative names), .metadata, .notes
    back = read_back(conv)                         # the output recognized again, from its self-description
    check = verify_converted(conv)                 # GroupCheck: max_abs_diff of source vs output, ok
    refusals(group, "torch")                       # [] or every reason the target cannot be exact
    run_stack(group.cells(), x)                    # the numpy reference: (T, B, D*H) outputs

The conformance suite (tests/conformance/, docs/conversions.md) drives exactly this API: for
configurations drawn by hypothesis (kind, layers, directions, bias, proj, input == hidden, hidden 1, GRU
family, activations incl. both hard_sigmoid formulas, go_backwards, Keras merge modes and backward layers)
and every TF-made fixture, each target either refuses with the reasons its explicit rule table expects, or
its output, loaded into the real target framework, computes the source framework's outputs (1e-5), and
the round trip back holds the same values (1e-6). The tf1 target is proven in TensorFlow by recorded
fixtures (fixtures/tensorflow/tf1_targets); the conversion matrix in docs/conversions.md is generated from the suite.
"""
from __future__ import annotations

from .activations import ACTIVATIONS
from .cell import Cell, Stack
from .convert import (ConversionError, ConvertOptions, Converted, TARGETS, check_target, convert_group, convert_index,
                      convert_stack, refusals)
from .group import RecognizeOptions, RecurrentGroup
from .recognize import recognize
from .reference import run_cell, run_stack
from .verify import GroupCheck, check_pair, read_back, verify, verify_converted

__all__ = [
    "Cell", "Stack", "RecurrentGroup", "RecognizeOptions", "ConvertOptions", "ConversionError", "Converted",
    "TARGETS", "ACTIVATIONS", "recognize", "check_target", "refusals", "convert_group", "convert_stack",
    "convert_index", "run_cell", "run_stack", "verify", "verify_converted", "read_back", "check_pair", "GroupCheck",
]
