"""Keras 3 ``.weights.h5`` of subclassed models: layers stored under attribute names get Keras's variable
names (issue 10, item 16). Files are written by real Keras 3 (KERAS_BACKEND=torch) and compared with
``get_weights()``; the recurrent groups found compute what the Keras layers compute."""
from __future__ import annotations

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.rnn.recognize import recognize
from ckptsurgeon.rnn.reference import run_stack

keras = pytest.importorskip("keras")
L = keras.layers


class Encoder(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.lstm = L.LSTM(6, return_sequences=True)
        self.proj = L.Dense(4)

    def call(self, x):
        return self.proj(self.lstm(x))


class Head(keras.Model):  # attributes that sort before "layers": stored under their own names
    def __init__(self, **kw):
        super().__init__(**kw)
        self.a_gru = L.GRU(3, return_sequences=True, reset_after=False)
        self.a_norm = L.LayerNormalization()

    def call(self, x):
        return self.a_norm(self.a_gru(x))


class Net(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.encoder = Encoder(name="enc")
        self.gru = L.GRU(5, return_sequences=True)
        self.bi = L.Bidirectional(L.LSTM(3, return_sequences=True))
        self.head = Head()
        self.blocks = [L.Dense(3), L.Dense(3)]
        self.dec_out = L.Dense(2, name="logits")  # a user's name: its class is not stored
        self.top = L.Dense(2, name="top")  # after "layers" in Keras's walk: stored as layers/dense_N, named top
        self.fc = L.Dense(2)

    def call(self, x):
        h = self.head(self.bi(self.gru(self.encoder(x))))
        for block in self.blocks:
            h = block(h)
        return self.fc(h) + self.dec_out(h) + self.top(h)


def _expected(model):
    """Keras's own variables, each at the path ckptsurgeon should give it (attribute names, cell/, direction)."""
    def layer(prefix, lay):
        if isinstance(lay, L.Bidirectional):
            return layer(f"{prefix}/forward_layer", lay.forward_layer) | layer(f"{prefix}/backward_layer", lay.backward_layer)
        if isinstance(lay, L.RNN):
            return {f"{prefix}/cell/{w.name}": w for w in lay.cell.weights}
        return {f"{prefix}/{w.name}": w for w in lay.weights}

    enc, head = model.encoder, model.head
    return (layer("bi", model.bi) | layer("blocks/dense", model.blocks[0]) | layer("blocks/dense_1", model.blocks[1])
            | layer(f"encoder/{enc.lstm.name}", enc.lstm) | layer(f"encoder/{enc.proj.name}", enc.proj) | layer("fc", model.fc)
            | layer("gru", model.gru) | layer("head/a_gru", head.a_gru) | layer("head/a_norm", head.a_norm)
            | layer("dec_out", model.dec_out) | layer("top", model.top))  # in a layers/ list: the layer's name


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = Net()  # names of unnamed layers depend on what other tests built: the expectations use them
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    model(x)
    for w in model.weights:  # non-zero biases, so that every value is checked
        if w.name in ("bias", "beta"):
            w.assign(np.random.default_rng(1).uniform(-0.5, 0.5, w.shape).astype("float32"))
    path = tmp_path_factory.mktemp("sub") / "net.weights.h5"
    model.save_weights(path)
    return model, path, x


def test_variables_get_keras_names_and_values(saved):
    model, path, _ = saved
    index = ckptsurgeon.open(path)
    assert index.format == "keras-v3"
    want = _expected(model)
    assert sorted(index) == sorted(want)
    for p, var in want.items():
        np.testing.assert_array_equal(index[p].numpy(), keras.ops.convert_to_numpy(var.value), err_msg=p)
    assert len(index) == len(model.weights)
    for prefix, lay in (("gru/cell", model.gru), ("fc", model.fc), ("dec_out", model.dec_out), ("head/a_norm", model.head.a_norm)):
        names = ("kernel", "recurrent_kernel", "bias") if "cell" in prefix else ("gamma", "beta") if "norm" in prefix else ("kernel", "bias")
        for name, value in zip(names, lay.get_weights(), strict=True):
            np.testing.assert_array_equal(index[f"{prefix}/{name}"].numpy(), value)
    assert index.notes == ["the class of dec_out is not stored; its variables are named kernel and bias from their shapes"]


def test_recurrent_groups_compute_what_keras_computes(saved):
    model, path, x = saved
    lstm = f"encoder/{model.encoder.lstm.name}"
    groups = {g.scope: g for g in recognize(ckptsurgeon.open(path))}
    assert set(groups) == {lstm, "gru", "bi", "head/a_gru"}
    assert groups["head/a_gru"].reset_after is False and groups["gru"].reset_after and groups["bi"].directions == 2
    h0 = keras.ops.convert_to_numpy(model.encoder.lstm(x))
    h1 = keras.ops.convert_to_numpy(model.encoder(x))
    h2 = keras.ops.convert_to_numpy(model.gru(h1))
    h3 = keras.ops.convert_to_numpy(model.bi(h2))
    h4 = keras.ops.convert_to_numpy(model.head.a_gru(h3))
    for scope, inp, out in ((lstm, x, h0), ("gru", h1, h2), ("bi", h2, h3), ("head/a_gru", h3, h4)):
        got = run_stack(groups[scope].cells(), inp.transpose(1, 0, 2)).transpose(1, 0, 2)
        np.testing.assert_allclose(got, out, atol=1e-5, err_msg=scope)


def test_unknown_single_variable_keeps_its_index_with_a_note(tmp_path):
    class Tok(keras.Model):
        def __init__(self):
            super().__init__()
            self.emb = L.Embedding(10, 4, name="tokens")

        def call(self, x):
            return self.emb(x)

    model = Tok()
    model(np.zeros((1, 3), "int32"))
    model.save_weights(tmp_path / "tok.weights.h5")
    index = ckptsurgeon.open(tmp_path / "tok.weights.h5")
    assert list(index) == ["emb/vars/0"]
    assert any("variable names of emb" in n and "vars/<i>" in n for n in index.notes)
    np.testing.assert_array_equal(index["emb/vars/0"].numpy(), model.emb.get_weights()[0])
