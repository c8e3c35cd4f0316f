"""One N-layer stack into N one-layer groups and back, in one graft, proven by the frameworks: PyTorch's
nn.LSTM(num_layers=2, bidirectional=True) into Keras 3's two stacked Bidirectional layers (load_weights,
load_into) and tf.keras 2's (load_weights of a TF checkpoint), a TF1 MultiRNNCell into two Keras layers, and
Keras layers back into nn.LSTM (load_state_dict strict); verify pairs a stack with its layers."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import CheckpointError
from tfenv import run_tf, save_x

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
X = np.random.default_rng(4).standard_normal((2, 6, 3)).astype(np.float32)


def _keras_stack(merge: str = "concat", gru: bool = False, names: tuple[str, ...] = ("bi1", "bi2")):
    layer = keras.layers.GRU if gru else keras.layers.LSTM
    inp = keras.Input((None, 3))
    h = inp
    for name in names:
        h = keras.layers.Bidirectional(layer(5, return_sequences=True), merge_mode=merge, name=name)(h)
    return keras.Model(inp, h)


def _torch_stack(seed: int = 0, layers: int = 2):
    torch.manual_seed(seed)
    return torch.nn.LSTM(3, 5, num_layers=layers, bidirectional=True, batch_first=True)


def _run_torch(lstm) -> np.ndarray:
    with torch.no_grad():
        return lstm(torch.from_numpy(X))[0].numpy()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("how", [(), ("--map", "model/rnn=bi1,bi2")])
def test_torch_stack_into_keras3_layers_and_back(tmp_path: Path, how: tuple[str, ...]) -> None:
    lstm = _torch_stack()
    torch.save({"model": {"rnn": lstm.state_dict()}}, tmp_path / "src.pt")
    model = _keras_stack()
    model.save_weights(tmp_path / "tpl.weights.h5")
    out = _cli("graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "tpl.weights.h5"), *how,
               "-o", str(tmp_path / "out.weights.h5"))
    assert "verified model/rnn -> bi1,bi2" in out  # end to end: the stack against the layers chained
    model.load_weights(tmp_path / "out.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(X)), _run_torch(lstm), atol=1e-5)
    # and back: the two Keras layers into a fresh nn.LSTM(num_layers=2)'s own checkpoint
    torch.save({"model": {"rnn": _torch_stack(seed=9).state_dict()}}, tmp_path / "tpl.pt")
    back_map = ("--map", "bi1,bi2=model/rnn") if how else ()
    out = _cli("graft", str(tmp_path / "out.weights.h5"), "--into", str(tmp_path / "tpl.pt"), *back_map,
               "-o", str(tmp_path / "back.pt"))
    assert "verified bi1,bi2 -> model/rnn" in out
    fresh = _torch_stack(seed=11)
    fresh.load_state_dict(torch.load(tmp_path / "back.pt")["model"]["rnn"], strict=True)
    np.testing.assert_allclose(_run_torch(fresh), _run_torch(lstm), atol=1e-5)
    # verify pairs the stack with its layers both ways, and fails against other weights
    assert "ok   model/rnn -> bi1,bi2" in _cli("verify", str(tmp_path / "src.pt"), str(tmp_path / "out.weights.h5"))
    assert "ok   bi1,bi2 -> model/rnn" in _cli("verify", str(tmp_path / "out.weights.h5"), str(tmp_path / "src.pt"))
    bad = CliRunner().invoke(cli, ["verify", str(tmp_path / "tpl.pt"), str(tmp_path / "out.weights.h5")])
    assert bad.exit_code == 1 and "FAIL model/rnn -> bi1,bi2" in bad.output


def test_load_into_a_live_keras_model_with_stacked_layers(tmp_path: Path) -> None:
    lstm = _torch_stack(seed=2)
    torch.save(lstm.state_dict(), tmp_path / "src.pt")
    model = _keras_stack(names=("enc_a", "enc_b"))
    from ckptsurgeon.keras import load_into

    report = load_into(model, tmp_path / "src.pt", map=["/=enc_a,enc_b"])
    assert len(report.checks) == 3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(X)), _run_torch(lstm), atol=1e-5)


def test_tf1_multirnncell_into_two_keras_layers(tmp_path: Path) -> None:
    """TF-written MultiRNNCell of BasicLSTMCells (forget_bias 1) -> two Keras 3 LSTM layers; TF's recorded output."""
    fixture = FIXTURES / "tensorflow" / "tf1_cells"
    ref = np.load(fixture / "reference.npz")
    inp = keras.Input((None, 3))
    h = keras.layers.LSTM(4, return_sequences=True, name="l1")(inp)
    model = keras.Model(inp, keras.layers.LSTM(4, return_sequences=True, name="l2")(h))
    model.save_weights(tmp_path / "tpl.weights.h5")
    _cli("graft", str(fixture), "-s", "stack/**", "--into", str(tmp_path / "tpl.weights.h5"), "--map", "stack=l1,l2",
         "-o", str(tmp_path / "out.weights.h5"))
    model.load_weights(tmp_path / "out.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(ref["out/x"])), ref["out/stack"], atol=1e-5)


def test_torch_stack_into_tf_keras2_layers(tmp_path: Path) -> None:
    lstm = _torch_stack(seed=6)
    torch.save({"rnn": lstm.state_dict()}, tmp_path / "src.pt")
    spec = {"input": 3, "layers": [{"kind": "lstm", "units": 5, "bidirectional": True}] * 2, "x": save_x(tmp_path, X)}
    (tmp_path / "tpl").mkdir()
    (tmp_path / "out").mkdir()
    run_tf("keras", tmp_path, **spec, template=str(tmp_path / "tpl" / "ckpt"))
    _cli("graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "tpl"),
         "--map", "rnn=layer_with_weights-0,layer_with_weights-1", "-o", str(tmp_path / "out" / "ckpt"))
    got = run_tf("keras", tmp_path, **spec, prefix=str(tmp_path / "out" / "ckpt"), seed=3)
    np.testing.assert_allclose(got["y"], _run_torch(lstm), atol=1e-5)


def test_stacks_that_are_not_chains_of_layers_are_refused(tmp_path: Path) -> None:
    torch.save({"rnn": _torch_stack(layers=3).state_dict()}, tmp_path / "three.pt")
    _keras_stack().save_weights(tmp_path / "two.weights.h5")
    _keras_stack(merge="sum").save(tmp_path / "sum.keras")  # its config states the merge
    _keras_stack(merge="sum").save_weights(tmp_path / "sum.weights.h5")  # weights only: the sizes tell
    torch.save({"rnn": _torch_stack().state_dict()}, tmp_path / "two.pt")
    cases = [("three.pt", "two.weights.h5", "rnn=bi1,bi2", "has 3 layer(s) but 2 template groups"),
             ("two.pt", "sum.keras", "rnn=bi1,bi2", "merge_mode='sum'"),
             ("two.pt", "sum.weights.h5", "rnn=bi1,bi2", "bi2 reads 5 features but bi1 gives 10"),
             ("two.pt", "two.weights.h5", "rnn=bi1,nope", "no template group at 'nope'")]
    for src, tpl, rule, needle in cases:
        with pytest.raises(CheckpointError, match=re.escape(needle)) as caught:
            ckptsurgeon.graft(tmp_path / src, tmp_path / tpl, tmp_path / ("x" + tpl[tpl.index("."):]), map=[rule])
        assert "1 problem" in str(caught.value) and not [n for n in os.listdir(tmp_path) if n.startswith("x")]
    # TF1 bidirectional_dynamic_rnn over two MultiRNNCells: each direction its own stack, not a chain of layers
    from ckptsurgeon.rnn.group import RecurrentGroup
    from ckptsurgeon.rnn.layers import split_layers

    independent = RecurrentGroup("bi", "lstm", "tf1", "TF1", 3, 4, num_layers=2, directions=2, topology="independent")
    with pytest.raises(CheckpointError, match="independent directional stacks"):
        split_layers(independent)


def test_layer_order_comes_from_the_file_never_from_names(tmp_path: Path) -> None:
    """Keras's automatic names number layers in the order they were made: here the model runs lstm_1 before lstm.
    A .keras config states the order the model runs them in (graft follows it, and refuses a --map against it);
    a .weights.h5 states none, so three same-sized layers are refused until --map names the order."""
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(5, 5, num_layers=2, batch_first=True)
    torch.save({"rnn": lstm.state_dict()}, tmp_path / "src.pt")
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    keras.backend.clear_session()
    second = keras.layers.LSTM(5, return_sequences=True)  # made first: named lstm
    first = keras.layers.LSTM(5, return_sequences=True)  # named lstm_1, runs first
    inp = keras.Input((None, 5))
    model = keras.Model(inp, second(first(inp)))
    assert (first.name, second.name) == ("lstm_1", "lstm")
    model.save(tmp_path / "tpl.keras")
    model.save_weights(tmp_path / "tpl.weights.h5")
    out = _cli("graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "tpl.keras"), "-o", str(tmp_path / "out.keras"))
    assert "go into lstm_1, lstm in that order (the order the file states" in out
    model.load_weights(tmp_path / "out.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), want, atol=1e-5)
    with pytest.raises(CheckpointError, match="the template runs these layers in the order lstm_1, lstm"):
        ckptsurgeon.graft(tmp_path / "src.pt", tmp_path / "tpl.keras", tmp_path / "bad.keras", map=["rnn=lstm,lstm_1"])
    with pytest.raises(CheckpointError, match="nothing in the files tells the order"):
        ckptsurgeon.graft(tmp_path / "src.pt", tmp_path / "tpl.weights.h5", tmp_path / "bad.weights.h5")
    _cli("graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "tpl.weights.h5"), "--map", "rnn=lstm_1,lstm",
         "-o", str(tmp_path / "out.weights.h5"))
    model.load_weights(tmp_path / "out.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), want, atol=1e-5)
    # verify reads the order from the .keras file, and will not guess it for the weights-only one
    assert "ok   rnn -> lstm_1,lstm" in _cli("verify", str(tmp_path / "src.pt"), str(tmp_path / "out.keras"))
    bad = CliRunner().invoke(cli, ["verify", str(tmp_path / "src.pt"), str(tmp_path / "out.weights.h5")])
    assert bad.exit_code == 1 and "nothing in the file tells the order" in bad.output
