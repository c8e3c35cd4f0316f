"""The reference cells ``verify`` runs, against a real framework for every semantic they model.

The suite checks them on every drawn source; these tests make sure no semantic is left to chance: each
activation formula in ``ACTIVATIONS`` (as gate and as cell activation, in an LSTM and a GRU of both
families) against Keras 3 layers and onnxruntime, Keras 2's hard_sigmoid against tf.keras 2's recorded
outputs, and a list of the other semantics with the fixtures that prove each (which must exist).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("keras")
pytest.importorskip("onnxruntime")

import ckptsurgeon  # noqa: E402
from cf_check import ATOL, _close, run_target  # noqa: E402
from cf_sources import KERAS_GRID, TF1_GRID, build, tf1_grid_cases, tfkeras_grid_cases, tfkeras_source  # noqa: E402
from cf_space import Config  # noqa: E402
from ckptsurgeon.rnn import ACTIVATIONS, convert_group, recognize, run_stack  # noqa: E402


@pytest.mark.parametrize("kind,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_formula_against_keras3_and_onnxruntime(name, kind, reset_after):
    spec = ACTIVATIONS[name]
    if spec.keras is None:
        assert name == "hard_sigmoid_keras2", f"{name}: no framework computes this formula in the tests"
        pytest.skip("Keras 1/2's formula: tf.keras 2's recorded outputs (next test)")
    keras_name = next(k for k, v in {"hard_sigmoid": "hard_sigmoid_keras3"}.items() if v == name) \
        if name == "hard_sigmoid_keras3" else spec.keras
    with tempfile.TemporaryDirectory() as tmp:
        for fact in ("activation", "recurrent_activation"):
            cfg = Config("keras", kind, reset_after=reset_after, file="keras", input_size=3, hidden=3, seed=7,
                         **{fact: keras_name})
            source = build(cfg, Path(tmp))
            layer = source.layers[0]
            group = recognize(ckptsurgeon.open(source.path))[0]
            assert getattr(group, fact) == name, (fact, group.provenance)
            assert _close(run_stack(group.cells(), layer.x), layer.want, ATOL) <= ATOL, (name, fact, "Keras 3")
            onnx = Path(tmp) / f"{fact}.safetensors"
            res = ckptsurgeon.extract(source.path, onnx, to="onnx")
            y, _ = run_target("onnx", onnx, res.converted[0]["scope"], layer.x)
            assert _close(y, layer.want, ATOL) <= ATOL, (name, fact, "onnxruntime", res.converted[0]["output"]["onnx"])


@pytest.mark.parametrize("name", ["lstm_hard_sigmoid", "gru_hard_sigmoid_rb", "gru_hard_sigmoid_ra"])
def test_keras2_hard_sigmoid_against_tfkeras(name):
    source = tfkeras_source(name, "model.h5")
    layer = source.layers[0]
    group = recognize(ckptsurgeon.open(source.path))[0]
    assert group.recurrent_activation == "hard_sigmoid_keras2"
    assert _close(run_stack(group.cells(), layer.x), layer.want, ATOL) <= ATOL
    conv = convert_group(group, "onnx")
    assert conv.metadata["onnx"]["activation_alpha"][0] == 0.2


# semantic the reference cells model -> the TF-made fixture cases whose recorded outputs prove it
# (every case of both grids runs in test_conformance; this table makes sure each semantic keeps a witness)
WITNESSES = {
    "forget_bias (1.0, 0.5, 0, CudnnCompatible none)": ["lstm", "lstm_fb05", "lstm_fb0", "cudnn_compat_lstm"],
    "peepholes": ["lstm_peep", "lstm_block_peep_fb05"],
    "projection": ["lstm_proj", "multi2_lstm_peep_proj"],
    "cell_clip and proj_clip": ["lstm_clip"],
    "TF1 activation relu": ["lstm_relu"],
    "reset-before GRU (TF1)": ["gru", "multi3_gru"],
    "independent bidirectional stacks": ["bi_multi2_lstm", "bi_multi2_gru", "bi_multi3_lstm_in4"],
    "interleaved bidirectional stacks": ["stack_bi2_lstm", "stack_bi3_gru_in4"],
    "hidden size 1, input == hidden": ["lstm_h1", "gru_h1", "gru_in4", "lstm_in4_tm"],
}
KERAS_WITNESSES = {
    "go_backwards": ["lstm_go_backwards", "gru_go_backwards"],
    "merge modes": ["bi_lstm_concat", "bi_lstm_sum", "bi_lstm_mul", "bi_lstm_ave", "bi_lstm_none"],
    "Keras GRU families": ["gru_reset_before", "gru_reset_after"],
    "explicit backward_layer": ["bi_backward_gru_relu", "bi_backward_mixed", "bi_swapped_go_backwards"],
}


def test_every_semantic_has_a_framework_witness():
    tf1, tfk = set(tf1_grid_cases()), set(tfkeras_grid_cases())
    for semantic, cases in WITNESSES.items():
        assert set(cases) <= tf1 and all((TF1_GRID / c / "reference.npz").exists() for c in cases), semantic
    for semantic, cases in KERAS_WITNESSES.items():
        assert set(cases) <= tfk and all((KERAS_GRID / c / "reference.npz").exists() for c in cases), semantic
