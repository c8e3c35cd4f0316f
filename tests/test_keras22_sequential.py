"""Keras 2.0-2.2 ``Sequential`` full-model ``.h5`` (model_config["config"] a plain list) and Keras 1 configs
(issue 10, item 15). The Keras 2.2.4 file is written by ``fixtures/keras/make_keras22_fixture.py`` exactly
as Keras 2.2.4's saving code wrote it; real Keras 3 reads it (its legacy .h5 weight loader) and computes
what the recognized groups compute."""
from __future__ import annotations

import importlib.util
import json

import h5py
import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.formats.hdf5.keras_config import layer_summaries
from ckptsurgeon.rnn.group import origin
from ckptsurgeon.rnn.recognize import recognize
from ckptsurgeon.rnn.reference import run_stack
from conftest import FIXTURES

spec = importlib.util.spec_from_file_location("make_keras22_fixture", FIXTURES / "keras" / "make_keras22_fixture.py")
keras22 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(keras22)


@pytest.mark.parametrize("lstm_activation", ["hard_sigmoid", "sigmoid"])
def test_layers_and_activations_come_from_the_file(tmp_path, lstm_activation):
    path = tmp_path / "seq.h5"
    values = keras22.make(str(path), recurrent_activation=lstm_activation)
    with h5py.File(path) as f:  # the shape this item is about
        assert isinstance(json.loads(f.attrs["model_config"])["config"], list)
    index = ckptsurgeon.open(path)
    layers = index.metadata["layers"]
    assert list(layers) == ["lstm_1", "gru_1", "bidirectional_1", "dropout_1", "dense_1"]
    assert layers["lstm_1"]["recurrent_activation"] == lstm_activation and layers["lstm_1"]["units"] == 6
    assert layers["gru_1"]["reset_after"] is False and layers["gru_1"]["class_name"] == "GRU"
    assert layers["bidirectional_1"]["layer"]["recurrent_activation"] == "sigmoid"
    for name, value in values.items():
        assert index[name[:-2]].numpy().tobytes() == value.tobytes()
    groups = {g.scope: g for g in recognize(index)}
    # 'hard_sigmoid' in a Keras 2 file is Keras 2's formula, clip(0.2x + 0.5, 0, 1)
    keras2 = {"hard_sigmoid": "hard_sigmoid_keras2", "sigmoid": "sigmoid"}
    assert {s: (g.recurrent_activation, origin(g.provenance["recurrent_activation"])) for s, g in groups.items()} == {
        "lstm_1": (keras2[lstm_activation], "file"), "gru_1": ("hard_sigmoid_keras2", "file"),
        "bidirectional_1": ("sigmoid", "file")}
    assert groups["gru_1"].reset_after is False and groups["bidirectional_1"].directions == 2


def test_real_keras_reads_the_file_and_computes_what_the_groups_compute(tmp_path):
    keras = pytest.importorskip("keras")
    path = tmp_path / "seq.h5"
    keras22.make(str(path), recurrent_activation="sigmoid")
    L = keras.layers
    model = keras.Sequential([
        keras.Input((keras22.STEPS, keras22.FEATURES)),
        L.LSTM(6, return_sequences=True, name="lstm_1"),
        L.GRU(5, return_sequences=True, reset_after=False, recurrent_activation="hard_sigmoid", name="gru_1"),
        L.Bidirectional(L.LSTM(4, return_sequences=True), name="bidirectional_1"),
        L.Dropout(0.5, name="dropout_1"), L.Dense(3, name="dense_1")])
    model.load_weights(path)  # Keras 3's loader for Keras 2 .h5 files: by layer_names and weight_names
    index = ckptsurgeon.open(path)
    for layer in model.layers:
        stored = [ref.numpy() for ref in index.values() if ref.path.split("/")[0] == layer.name]
        assert len(stored) == len(layer.get_weights())
        for got, want in zip(stored, layer.get_weights()):
            np.testing.assert_array_equal(got, want)
    groups = {g.scope: g for g in recognize(index)}
    x = np.random.default_rng(0).standard_normal((2, keras22.STEPS, keras22.FEATURES)).astype(np.float32)
    h1 = keras.ops.convert_to_numpy(model.get_layer("lstm_1")(x))
    np.testing.assert_allclose(run_stack(groups["lstm_1"].cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2), h1, atol=1e-5)
    h2 = keras.ops.convert_to_numpy(model.get_layer("gru_1")(h1))
    h3 = keras.ops.convert_to_numpy(model.get_layer("bidirectional_1")(h2))
    np.testing.assert_allclose(run_stack(groups["bidirectional_1"].cells(), h2.transpose(1, 0, 2)).transpose(1, 0, 2), h3, atol=1e-5)


def test_keras1_configs():
    """Keras 1 Sequential (a list, Keras 1 argument names) and Keras 0.x entries without class_name."""
    keras1 = {"class_name": "Sequential", "config": [
        {"class_name": "LSTM", "config": {"name": "lstm_1", "output_dim": 4, "inner_activation": "hard_sigmoid",
                                          "activation": "tanh", "consume_less": "cpu", "input_dim": 3}},
        {"class_name": "Sequential", "config": [{"class_name": "GRU", "config": {"name": "gru_1", "output_dim": 2,
                                                                                 "inner_activation": "sigmoid"}}]}]}
    got = layer_summaries(keras1)
    assert got["lstm_1"]["recurrent_activation"] == "hard_sigmoid" and got["lstm_1"]["units"] == 4
    assert got["lstm_1"]["inner_activation"] == "hard_sigmoid" and got["gru_1"]["recurrent_activation"] == "sigmoid"
    legacy = {"class_name": "Sequential", "config": [{"name": "LSTM", "custom_name": "lstm_1", "output_dim": 4,
                                                      "inner_activation": "sigmoid"}]}
    assert layer_summaries(legacy) == {"lstm_1": {"class_name": "LSTM", "output_dim": 4, "units": 4, "after": [],
                                                  "inner_activation": "sigmoid", "recurrent_activation": "sigmoid"}}
    functional = {"class_name": "Model", "config": {"name": "model_1", "layers": [
        {"name": "lstm_1", "class_name": "LSTM", "config": {"name": "lstm_1", "output_dim": 4, "inner_activation": "sigmoid"},
         "inbound_nodes": []}]}}
    assert layer_summaries(functional)["lstm_1"]["recurrent_activation"] == "sigmoid"
