"""Recognition follows the model config Keras 3 stored, by each layer's full path: nested models whose inner
layers share a name, a nested Bidirectional's own merge_mode, a custom layer wrapping an LSTM (its own config
says nothing of the LSTM: refused until declared), LSTMs named like Bidirectional halves, and parallel layers
named layer_0/layer_1. Every conversion is checked against Keras's own forward pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.errors import CheckpointError
from ckptsurgeon.rnn import ConvertOptions, recognize

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
X = np.random.default_rng(7).standard_normal((2, 5, 3)).astype(np.float32)


def _np(t) -> np.ndarray:
    return keras.ops.convert_to_numpy(t)


def _torch_lstm(path: Path, prefix: str, bidirectional: bool = False):
    """An nn.LSTM loaded from the torch-layout conversion at ``path`` (keys under ``prefix``)."""
    from safetensors.numpy import load_file

    tensors = {k[len(prefix):]: torch.from_numpy(v) for k, v in load_file(path).items() if k.startswith(prefix)}
    hidden = tensors["weight_hh_l0"].shape[1]
    lstm = torch.nn.LSTM(tensors["weight_ih_l0"].shape[1], hidden, batch_first=True, bidirectional=bidirectional)
    lstm.load_state_dict(tensors, strict=True)
    return lstm


def _run(lstm) -> np.ndarray:
    with torch.no_grad():
        return lstm(torch.from_numpy(X))[0].numpy()


def _groups(path: Path, **options) -> dict:
    return {g.scope: g for g in recognize(ckptsurgeon.open(path), ConvertOptions(**options))}


def test_nested_models_whose_layers_share_a_name(tmp_path: Path) -> None:
    def sub(name: str, act: str, merge: str | None = None):
        layer = keras.layers.LSTM(4, activation=act, return_sequences=True, name="lstm")
        if merge:
            layer = keras.layers.Bidirectional(layer, merge_mode=merge, name="bi")
        return keras.Sequential([keras.Input((None, 3)), layer], name=name)

    inp = keras.Input((None, 3))
    subs = [sub("enc_a", "tanh"), sub("enc_b", "relu"), sub("enc_c", "tanh", merge="sum")]
    model = keras.Model(inp, keras.layers.Concatenate()([s(inp) for s in subs]))
    model.save(tmp_path / "nested.keras")
    groups = _groups(tmp_path / "nested.keras")
    assert groups["enc_a/lstm"].activation == "tanh" and groups["enc_b/lstm"].activation == "relu"
    assert groups["enc_c/bi"].merge_mode == "sum" and groups["enc_c/bi"].provenance["merge_mode"] == "file: model config"
    # torch computes tanh: enc_a converts, enc_b (relu) is refused, never converted as tanh
    ckptsurgeon.extract(tmp_path / "nested.keras", tmp_path / "a.safetensors", scope=["enc_a"], to="torch")
    np.testing.assert_allclose(_run(_torch_lstm(tmp_path / "a.safetensors", "enc_a.lstm.")), _np(subs[0](X)), atol=1e-5)
    with pytest.raises(CheckpointError, match="activation"):
        ckptsurgeon.extract(tmp_path / "nested.keras", tmp_path / "b.safetensors", scope=["enc_b"], to="torch")
    # the nested Bidirectional's sum: kept apart on request, and summed it is what Keras computed
    from ckptsurgeon.rnn.convert import ConvertOptions as Options

    ckptsurgeon.extract(tmp_path / "nested.keras", tmp_path / "c.safetensors", scope=["enc_c"], to="torch",
                        options=Options(allow_concat_merge=True))
    both = _run(_torch_lstm(tmp_path / "c.safetensors", "enc_c.bi.", bidirectional=True))
    np.testing.assert_allclose(both[..., :4] + both[..., 4:], _np(subs[2](X)), atol=1e-5)


def test_custom_layer_wrapping_an_lstm_is_not_read_with_the_wrappers_config(tmp_path: Path) -> None:
    @keras.saving.register_keras_serializable(package="ckptsurgeon_test")
    class Wrap(keras.layers.Layer):
        def __init__(self, activation: str = "relu", **kwargs) -> None:
            super().__init__(**kwargs)
            self.activation = activation
            self.lstm = keras.layers.LSTM(4, return_sequences=True, name="lstm")  # tanh: not the wrapper's relu

        def call(self, x):
            return self.lstm(x)

        def get_config(self) -> dict:
            return {**super().get_config(), "activation": self.activation}

    inp = keras.Input((None, 3))
    wrap = Wrap(name="wrap")
    model = keras.Model(inp, wrap(inp))
    model.save(tmp_path / "custom.keras")
    (group,) = _groups(tmp_path / "custom.keras").values()
    assert group.activation is None and "no entry for the layer" in group.provenance["activation"]
    with pytest.raises(CheckpointError, match="no entry for the layer"):
        ckptsurgeon.extract(tmp_path / "custom.keras", tmp_path / "x.safetensors", to="torch")
    res = ckptsurgeon.extract(tmp_path / "custom.keras", tmp_path / "x.safetensors", to="torch",
                              options=ConvertOptions(activation="tanh", recurrent_activation="sigmoid", go_backwards=False))
    prefix = res.written[0].rsplit(".", 1)[0] + "."
    np.testing.assert_allclose(_run(_torch_lstm(tmp_path / "x.safetensors", prefix)), _np(model(X)), atol=1e-5)


def test_names_do_not_make_bidirectionals_or_stacks_when_the_config_says_otherwise(tmp_path: Path) -> None:
    inp = keras.Input((None, 3))
    fw = keras.layers.LSTM(4, return_sequences=True, name="forward_lstm")
    bw = keras.layers.LSTM(4, return_sequences=True, name="backward_lstm")  # a plain LSTM, forward in time
    l0 = keras.layers.LSTM(4, return_sequences=True, name="layer_0")
    l1 = keras.layers.LSTM(4, return_sequences=True, name="layer_1")  # parallel to layer_0, not stacked on it
    model = keras.Model(inp, keras.layers.Concatenate()([fw(inp), bw(inp), l0(inp), l1(inp)]))
    model.save(tmp_path / "names.keras")
    groups = _groups(tmp_path / "names.keras")
    assert sorted(groups) == ["backward_lstm", "forward_lstm", "layer_0", "layer_1"]
    assert all(g.num_layers == 1 and g.directions == 1 and not g.go_backwards for g in groups.values())
    ckptsurgeon.extract(tmp_path / "names.keras", tmp_path / "t.safetensors", to="torch")
    for name, layer in (("backward_lstm", bw), ("layer_1", l1)):
        np.testing.assert_allclose(_run(_torch_lstm(tmp_path / "t.safetensors", f"{name}.")), _np(layer(X)), atol=1e-5)


def test_every_tensor_in_a_groups_scope_is_explained(tmp_path: Path) -> None:
    """A LayerNorm LSTM cell (nn.LSTMCell's names plus layer norms) and an nn.LSTM state dict with layers 0 and 2
    are refused, naming what does not fit; torch itself refuses to load the second into nn.LSTM(num_layers=2)."""

    class LayerNormLSTMCell(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight_ih = torch.nn.Parameter(torch.randn(16, 3))
            self.weight_hh = torch.nn.Parameter(torch.randn(16, 4))
            self.bias_ih = torch.nn.Parameter(torch.randn(16))
            self.bias_hh = torch.nn.Parameter(torch.randn(16))
            self.ln_gates = torch.nn.LayerNorm(16)
            self.ln_cell = torch.nn.LayerNorm(4)

    torch.save({"cell": LayerNormLSTMCell().state_dict()}, tmp_path / "ln.pt")
    (group,) = _groups(tmp_path / "ln.pt").values()
    assert "4 tensor(s) in its scope cell" in group.provenance["tensors"] and "cell/ln_gates/weight" in group.provenance["tensors"]
    with pytest.raises(CheckpointError, match="layer norm"):
        ckptsurgeon.extract(tmp_path / "ln.pt", tmp_path / "x.safetensors", to="keras")
    # leaving them out is the user's explicit statement that they play no part
    ckptsurgeon.extract(tmp_path / "ln.pt", tmp_path / "x.safetensors", to="keras", exclude=["cell/ln_*"])

    lstm = torch.nn.LSTM(3, 4, num_layers=3)
    state = {k: v for k, v in lstm.state_dict().items() if "_l1" not in k}  # layers 0 and 2
    torch.save({"rnn": state}, tmp_path / "gap.pt")
    with pytest.raises(RuntimeError):
        torch.nn.LSTM(3, 4, num_layers=2).load_state_dict(state)
    (group,) = _groups(tmp_path / "gap.pt").values()
    assert "numbered 0, 2" in group.provenance["layers"]
    with pytest.raises(CheckpointError, match="numbered 0, 2"):
        ckptsurgeon.extract(tmp_path / "gap.pt", tmp_path / "y.safetensors", to="keras")


def test_optimizer_slots_are_never_layers(tmp_path: Path) -> None:
    """tf.keras 2 stores Adam's m and v of each LSTM under optimizer_weights/Adam/m/lstm/lstm_cell/kernel ...: the
    LSTM's own names and shapes. They are marked optimizer state and never recognized as more LSTM layers."""
    from tfenv import run_tf, save_x

    spec = {"input": 3, "layers": [{"kind": "lstm", "units": 4}, {"kind": "lstm", "units": 4}], "x": save_x(tmp_path, X)}
    run_tf("keras", tmp_path, **spec, trained_h5=str(tmp_path / "trained.h5"))
    index = ckptsurgeon.open(tmp_path / "trained.h5")
    slots = [p for p, ref in index.items() if ref.optimizer and p.endswith("lstm_cell/kernel")]
    assert len(slots) == 4  # m and v of both layers: they look like two more LSTMs each
    assert [g.scope for g in recognize(index)] == ["lstm", "lstm_1"]


def test_keras_layers_in_a_tf1_name_based_checkpoint_have_no_default_activation(tmp_path: Path) -> None:
    """A Saver (name-based) checkpoint of tf.keras layers was written by TF 1.x (hard_sigmoid by default) or by
    TF 2.x in graph mode (sigmoid): nothing says which, so the fact is missing, not TF2's default."""
    from ckptsurgeon.formats.tensorflow.writer import write_bundle

    rng = np.random.default_rng(0)
    write_bundle({"lstm/lstm_cell/kernel": rng.standard_normal((3, 16)).astype(np.float32),
                  "lstm/lstm_cell/recurrent_kernel": rng.standard_normal((4, 16)).astype(np.float32),
                  "lstm/lstm_cell/bias": np.zeros(16, np.float32)}, str(tmp_path / "model.ckpt"))
    (group,) = _groups(tmp_path / "model.ckpt").values()
    assert group.recurrent_activation is None and "hard_sigmoid" in group.provenance["recurrent_activation"]
    with pytest.raises(CheckpointError, match="no default can be told"):
        ckptsurgeon.extract(tmp_path / "model.ckpt", tmp_path / "x.safetensors", to="torch")


def test_verify_and_diff_compare_what_bidirectionals_compute(tmp_path: Path) -> None:
    """The same weights in a Bidirectional that concatenates and in one that sums compute different functions:
    verify fails them and diff names merge_mode (both were 'identical'); two concats verify ok."""
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    def model(merge: str):
        inp = keras.Input((None, 3))
        return keras.Model(inp, keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), merge_mode=merge,
                                                           name="bi")(inp))

    a, b, c = model("concat"), model("sum"), model("concat")
    b.set_weights(a.get_weights())
    c.set_weights(a.get_weights())
    for m, name in ((a, "concat"), (b, "sum"), (c, "concat2")):
        m.save(tmp_path / f"{name}.keras")
    ok = CliRunner().invoke(cli, ["verify", str(tmp_path / "concat.keras"), str(tmp_path / "concat2.keras")])
    assert ok.exit_code == 0 and "ok   bi -> bi" in ok.output, ok.output
    bad = CliRunner().invoke(cli, ["verify", str(tmp_path / "concat.keras"), str(tmp_path / "sum.keras")])
    assert bad.exit_code == 1 and "FAIL" in bad.output, bad.output
    diff = CliRunner().invoke(cli, ["diff", str(tmp_path / "concat.keras"), str(tmp_path / "sum.keras")])
    assert diff.exit_code == 1 and "merge_mode" in diff.output, diff.output
