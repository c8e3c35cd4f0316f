"""``keras.load_into`` reads the live model's recurrent layers (issue 20 #7): a subclassed or nested model's
template states no layer config, its layers do. Every case loads real torch weights into a real Keras 3
model and compares Keras's own forward pass with torch's, or checks the refusal."""
from __future__ import annotations

import numpy as np
import pytest

from ckptsurgeon.errors import CheckpointError
from ckptsurgeon.keras import load_into

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
L = keras.layers


class Subclassed(keras.Model):
    def __init__(self, rnn, **kw):
        super().__init__(**kw)
        self.rnn = rnn
        self.head = L.Dense(2)

    def call(self, x):
        return self.head(self.rnn(x))


class Plain(keras.Model):  # what users write most: layers built in __init__, no get_config
    def __init__(self, **kw):
        super().__init__(**kw)
        self.rnn = L.LSTM(4, activation="relu", return_sequences=True, name="enc_lstm")

    def call(self, x):
        return self.rnn(x)


class Wrapper(L.Layer):  # a custom layer whose own config says relu; the LSTM inside it runs tanh
    def __init__(self, **kw):
        super().__init__(**kw)
        self.activation = "relu"
        self.inner = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum")

    def call(self, x):
        return self.inner(x)

    def get_config(self):
        return super().get_config() | {"activation": self.activation}


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x))


def _torch_seq(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((2, 6, 3)).astype("float32")


def test_subclassed_model_whose_lstm_says_relu_refuses_a_tanh_source(tmp_path, x):
    torch.manual_seed(0)
    torch.save(torch.nn.LSTM(3, 4, batch_first=True).state_dict(), tmp_path / "tanh.pt")
    model = Subclassed(L.LSTM(4, activation="relu"))
    model(x)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(CheckpointError, match=r"activation: tanh .* vs relu"):
        load_into(model, tmp_path / "tanh.pt")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # nothing loaded


def test_subclassed_model_with_a_plain_lstm_loads_and_computes_what_torch_computes(tmp_path, x):
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    torch.save(lstm.state_dict(), tmp_path / "tanh.pt")
    model = Subclassed(L.LSTM(4, return_sequences=True))
    model(x)
    report = load_into(model, tmp_path / "tanh.pt")
    assert report.checks and all(c.ok for c in report.checks)
    got = keras.ops.convert_to_numpy(model.rnn(x))
    np.testing.assert_allclose(got, _torch_seq(lstm, x), atol=1e-5)


def test_custom_layer_wrapping_a_bidirectional_takes_the_inner_layers_facts(tmp_path, x):
    torch.manual_seed(2)
    bi = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    torch.save(bi.state_dict(), tmp_path / "bi.pt")
    inp = keras.Input((6, 3))
    model = keras.Model(inp, Wrapper(name="wrap")(inp))
    with pytest.raises(CheckpointError, match="merges them with merge_mode='sum'"):  # torch concatenates
        load_into(model, tmp_path / "bi.pt")
    from ckptsurgeon.rnn import ConvertOptions

    load_into(model, tmp_path / "bi.pt", options=ConvertOptions(allow_concat_merge=True))
    fw, bw = np.split(_torch_seq(bi, x), 2, axis=-1)
    np.testing.assert_allclose(_out(model, x), fw + bw, atol=1e-5)  # merge_mode sum, tanh: not the wrapper's relu


def test_gru_reset_before_in_a_nested_sequential_refuses_torch_gru(tmp_path, x):
    torch.manual_seed(3)
    torch.save(torch.nn.GRU(3, 4, batch_first=True).state_dict(), tmp_path / "gru.pt")  # torch: reset-after
    inner = keras.Sequential([keras.Input((6, 3)), L.GRU(4, reset_after=False, name="g")], name="inner")
    model = Subclassed(inner)
    model(x)
    with pytest.raises(CheckpointError, match="reset"):
        load_into(model, tmp_path / "gru.pt")


def test_live_layer_with_an_activation_ckptsurgeon_cannot_compute_is_refused_by_name(tmp_path, x):
    torch.manual_seed(4)
    torch.save(torch.nn.LSTM(3, 4, batch_first=True).state_dict(), tmp_path / "tanh.pt")
    model = Subclassed(L.LSTM(4, activation="gelu"))
    model(x)
    with pytest.raises(CheckpointError, match=r"live layer .*activation 'gelu'"):
        load_into(model, tmp_path / "tanh.pt")


def test_a_subclassed_models_keras_file_states_no_layer_facts_so_they_are_refused_until_declared(tmp_path, x):
    """Issue 20 (breaker W1): a subclassed model's config.json says nothing of its layers; defaults would be wrong."""
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    model = Plain()
    model(x)
    model.save(tmp_path / "sub.keras")
    out = tmp_path / "out.h5"
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "sub.keras"), "-s", "enc_lstm", "--to", "torch", "-o", str(out)])
    assert res.exit_code == 1 and "does not describe its layers" in res.output and not out.exists(), res.output
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "sub.keras"), "-s", "enc_lstm", "--to", "keras", "-o", str(out),
                                   "--activation", "relu", "--recurrent-activation", "sigmoid", "--no-go-backwards"])
    assert res.exit_code == 0, res.output
    import h5py

    with h5py.File(out) as f:
        weights = [f["enc_lstm/cell/kernel"][()], f["enc_lstm/cell/recurrent_kernel"][()], f["enc_lstm/cell/bias"][()]]
    again = L.LSTM(4, activation="relu", return_sequences=True)
    again(x)
    again.set_weights(weights)
    np.testing.assert_allclose(_out(again, x), _out(model.rnn, x), atol=1e-6)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_an_rnn_layer_around_a_cell_states_its_facts_in_the_cells_config(tmp_path, x, suffix):
    """keras.layers.RNN(LSTMCell(activation='relu')): the facts sit in the cell's config (was refused as unstated)."""
    import h5py
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    inp = keras.Input((6, 3))
    rnn = L.RNN(L.LSTMCell(4, activation="relu"), return_sequences=True, name="r")
    model = keras.Model(inp, rnn(inp))
    model.save(tmp_path / f"m{suffix}")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / f"m{suffix}"), "--to", "keras", "-o", str(tmp_path / "o.h5")])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "o.h5") as f:
        weights = [f[f"r/cell/{n}"][()] for n in ("kernel", "recurrent_kernel", "bias")]
    again = L.LSTM(4, activation="relu", return_sequences=True)
    again(x)
    again.set_weights(weights)
    np.testing.assert_allclose(_out(again, x), _out(model, x), atol=1e-6)
