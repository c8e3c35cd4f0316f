"""A stack is layers whose inputs chain (issue 20, found by an independent review): a Keras config that shows two
LSTMs side by side, or something between them, or a subclassed model whose call() order no file states, is never
grafted as one N-layer stack; and a concatenating Bidirectional never goes silently into a template that sums."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli
from tfenv import run_tf

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
L = keras.layers


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def template(tmp_path):
    torch.save({f"rnn.{k}": v for k, v in torch.nn.LSTM(4, 4, num_layers=2).state_dict().items()}, tmp_path / "tpl.pt")
    return tmp_path / "tpl.pt"


@pytest.mark.parametrize("shape", ["parallel", "residual", "dense", "chain", "dropout"])
def test_two_keras_lstms_pair_with_a_two_layer_stack_only_when_their_inputs_chain(tmp_path, template, shape):
    inp = keras.Input((5, 4))
    a, b = L.LSTM(4, return_sequences=True, name="a"), L.LSTM(4, return_sequences=True, name="b")
    if shape == "parallel":
        out = L.Concatenate()([a(inp), b(inp)])
    elif shape == "residual":
        out = b(L.Add()([a(inp), inp]))
    elif shape == "dense":
        out = b(L.Dense(4)(a(inp)))
    elif shape == "dropout":
        out = b(L.Dropout(0.5)(a(inp)))
    else:
        out = b(a(inp))
    model = keras.Model(inp, out)
    model.save(tmp_path / "m.keras")
    res = run("graft", tmp_path / "m.keras", "--into", template, "-o", tmp_path / "out.pt")
    if shape in ("chain", "dropout"):
        assert res.exit_code == 0, res.output
        lstm = torch.nn.LSTM(4, 4, num_layers=2, batch_first=True)
        lstm.load_state_dict({k[4:]: v for k, v in torch.load(tmp_path / "out.pt", weights_only=True).items()})
        x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype("float32")
        with torch.no_grad():
            got = lstm(torch.from_numpy(x))[0].numpy()
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)
    else:
        assert res.exit_code == 1 and "b does not take its input from a's output" in res.output, res.output
        assert not (tmp_path / "out.pt").exists()
        forced = run("graft", tmp_path / "m.keras", "--into", template, "-o", tmp_path / "out.pt", "--map", "a,b=rnn")
        assert forced.exit_code == 1 and "not one stack" in forced.output, forced.output


def test_a_subclassed_savedmodels_list_order_is_not_its_run_order(tmp_path, template):
    run_tf("subclassed_savedmodel", tmp_path, path=str(tmp_path / "sm"))
    res = run("graft", tmp_path / "sm", "--into", template, "-o", tmp_path / "out.pt")
    assert res.exit_code == 1 and "nothing in the files tells the order" in res.output, res.output


def test_a_concatenating_bidirectional_is_not_grafted_into_one_that_sums(tmp_path):
    def build(mode):
        inp = keras.Input((5, 3))
        return keras.Model(inp, L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode=mode, name="b")(inp))

    build("concat").save(tmp_path / "concat.keras")
    build("sum").save(tmp_path / "sum.keras")
    res = run("graft", tmp_path / "concat.keras", "--into", tmp_path / "sum.keras", "-o", tmp_path / "out.keras")
    assert res.exit_code == 1 and "merges them with merge_mode='sum'" in res.output, res.output
    ok = run("graft", tmp_path / "concat.keras", "--into", tmp_path / "sum.keras", "-o", tmp_path / "out.keras",
             "--allow-concat-merge")
    assert ok.exit_code == 0, ok.output
