"""Keras ``RNN(StackedRNNCells([...]))`` (also written ``RNN([cell, cell])``): the cells run one after another at each
step, each on the previous one's output, which is what a stack of layers computes. ckptsurgeon reads it as one group
of ``len(cells)`` layers in list order: Keras 3 files store a list's items by class and position (``lstm_cell``,
``lstm_cell_1``, whatever the cells' own names), tf.keras 2 files by the names the layer config lists in order; a
file that states neither (the same tensors in a safetensors) is refused. Checked against Keras 3's own forward pass
through real torch nn.LSTM/GRU stacks."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")


def _model(kind: str, path, names=("zz", "aa"), units=(6, 6)):
    keras.utils.set_random_seed(0)
    cell = keras.layers.LSTMCell if kind == "lstm" else keras.layers.GRUCell
    inp = keras.Input((5, 3))
    out = keras.layers.RNN([cell(u, name=n) for u, n in zip(units, names)], return_sequences=True, name="r")(inp)
    model = keras.Model(inp, out)
    for w in model.weights:  # biases too: a zero bias would hide a dropped one
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.4, w.shape).astype("float32"))
    model.save(path)
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    return model, x, keras.ops.convert_to_numpy(model(x))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stacked_cells_convert_to_a_stack_that_torch_runs_as_keras_did(tmp_path, kind):
    model, x, want = _model(kind, tmp_path / "m.keras")
    (group,) = ckptsurgeon.rnn(tmp_path / "m.keras").groups
    assert (group.scope, group.num_layers, group.input_size) == ("r", 2, 3)
    # list order (zz first), not the names' order (aa first): Keras 3 stores the items by position
    assert "stored by class and position" in group.provenance["num_layers"], group.provenance
    out = tmp_path / "t.safetensors"
    ckptsurgeon.extract(tmp_path / "m.keras", out, to="torch", rename=["r/="])
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(3, 6, num_layers=2, batch_first=True)
    index = ckptsurgeon.open(out)
    module.load_state_dict({k: torch.from_numpy(index[k].numpy()) for k in index}, strict=True)
    with torch.no_grad():
        got = module(torch.from_numpy(x))[0].numpy()
    assert float(np.abs(got - want).max()) <= 1e-5


def test_a_weights_only_keras3_file_states_the_order_by_position(tmp_path):
    model, x, want = _model("lstm", tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    out = tmp_path / "t.safetensors"
    ckptsurgeon.extract(tmp_path / "m.weights.h5", out, to="torch", rename=["r/="])
    module = torch.nn.LSTM(3, 6, num_layers=2, batch_first=True)
    index = ckptsurgeon.open(out)
    module.load_state_dict({k: torch.from_numpy(index[k].numpy()) for k in index}, strict=True)
    with torch.no_grad():
        assert float(np.abs(module(torch.from_numpy(x))[0].numpy() - want).max()) <= 1e-5


def test_cells_whose_order_no_file_states_are_refused(tmp_path):
    """The same tensors in a safetensors: nothing states which cell runs first; refused, naming a way out."""
    _model("lstm", tmp_path / "m.keras")
    ckptsurgeon.extract(tmp_path / "m.keras", tmp_path / "plain.safetensors")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "plain.safetensors"), "--to", "torch", "-o",
                                   str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and "the file does not state their order" in res.output, res.output
    assert "--scope 'r/cell/cells/<cell>/*'" in res.output
    assert not os.path.exists(tmp_path / "o.safetensors")


def test_stacked_cells_of_different_widths_are_refused(tmp_path):
    _model("lstm", tmp_path / "m.keras", units=(6, 4))
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "m.keras"), "--to", "torch", "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and "different widths" in res.output, res.output


def test_graft_a_torch_stack_into_stacked_cells_runs_in_keras(tmp_path):
    """The other way: a 2-layer nn.LSTM grafted into the .keras template; Keras loads it and computes torch's outputs."""
    _model("lstm", tmp_path / "m.keras", units=(6, 6))
    torch.manual_seed(0)
    src = torch.nn.Module()
    src.r = torch.nn.LSTM(3, 6, num_layers=2, batch_first=True)
    torch.save(src.state_dict(), tmp_path / "src.pt")
    ckptsurgeon.graft(tmp_path / "src.pt", tmp_path / "m.keras", tmp_path / "out.keras")
    model = keras.models.load_model(tmp_path / "out.keras")
    x = np.random.default_rng(2).normal(size=(2, 5, 3)).astype("float32")
    with torch.no_grad():
        want = src.r(torch.from_numpy(x))[0].numpy()
    assert float(np.abs(keras.ops.convert_to_numpy(model(x)) - want).max()) <= 1e-5
