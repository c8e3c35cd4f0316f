"""Recurrent layers: recognition in every layout, a canonical cell, exact conversion, reference cells.

Driving it (what the conformance suite and the commands do)::

    groups = recognize(index, options)            # RecurrentGroup: sizes, layout, facts + provenance
    conv = convert_group(group, "keras")           # Converted: .tensors (relative names), .metadata, .notes
    back = read_back(conv)                         # the output recognized again, from its self-description
    check = verify_converted(conv)                 # GroupCheck: max_abs_diff of source vs output, ok
    refusals(group, "torch")                       # [] or every reason the target cannot be exact
    run_stack(group.cells(), x)                    # the numpy reference: (T, B, D*H) outputs

What the conformance suite (tests/conformance/) should cover, per configuration (kind lstm/gru; layers
1-3; one or two directions; bias on/off; proj; input == hidden; hidden 1; GRU family; activations incl.
both hard_sigmoid formulas; go_backwards; Keras Bidirectional merge modes and an explicit
backward_layer; TF1 interleaved vs independent bidirectional stacks; TF1 forget_bias and CudnnCompatible):
- sources: real torch modules, real Keras 3 layers, the committed TF-made fixtures (recorded outputs);
- every target in ``TARGETS``: ``convert_group`` either raises ``ConversionError`` naming the reason (and
  ``refusals`` lists it) or the output, loaded into the real target framework (torch modules, Keras 3
  layers, ``onnx.reference`` for default activations / onnxruntime for others, tf1 via recorded outputs
  or the reference cells), computes the source framework's own outputs within 1e-5;
- ``verify_converted`` agrees with the real framework (it must fail for a tampered output);
- A -> B -> A round trips equal within 1e-6, and every output format (safetensors, npz, h5, pt) keeps the
  ``rnn:<scope>`` self-description so the round trip needs no flag;
- ``reference.run_stack`` itself against each framework for every semantic it models.
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
