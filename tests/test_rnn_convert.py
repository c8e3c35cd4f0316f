"""Conversions between layouts: loaded into real torch modules, real Keras 3 layers and the ONNX
reference evaluator, they compute what the source computed; inexact conversions are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.rnn.convert import ConversionError, ConvertOptions, convert_index
from ckptsurgeon.rnn.reference import run_stack
from conftest import FIXTURES
from rnn_helpers import TF, convert, only_group, open_scope, tf_outputs

torch = pytest.importorskip("torch")


def _torch_file(tmp_path, module, name="rnn"):
    path = tmp_path / f"{name}.pt"
    torch.save({f"{name}.{k}": v for k, v in module.state_dict().items()}, path)
    return ckptsurgeon.open(path)


SOURCES = {
    "lstm": lambda: torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True),
    "gru": lambda: torch.nn.GRU(5, 4, bidirectional=True),
    "lstm_proj": lambda: torch.nn.LSTM(5, 4, num_layers=2, proj_size=3),
    "lstm_cell": lambda: torch.nn.LSTMCell(5, 4),
    "gru_cell": lambda: torch.nn.GRUCell(5, 4),
}
REFUSED = {("gru", "tf1"): "reset-after GRU", ("gru_cell", "tf1"): "reset-after GRU",
           ("lstm_proj", "keras"): "projection", ("lstm_proj", "onnx"): "projection"}


def _forward(module, x: np.ndarray) -> np.ndarray:
    t = torch.tensor(x, dtype=torch.float32)
    if isinstance(module, (torch.nn.LSTMCell, torch.nn.GRUCell)):
        h = c = torch.zeros(x.shape[1], module.hidden_size)
        outs = []
        for step in t:
            if isinstance(module, torch.nn.LSTMCell):
                h, c = module(step, (h, c))
            else:
                h = module(step, h)
            outs.append(h)
        return torch.stack(outs).detach().numpy()
    return module(t)[0].detach().numpy()


@pytest.mark.parametrize("target", ["torch", "keras", "tf1", "onnx", "gates"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_round_trip_through_every_target(tmp_path, source, target):
    torch.manual_seed(0)
    module = SOURCES[source]()
    index = _torch_file(tmp_path, module)
    if (source, target) in REFUSED:
        with pytest.raises(ConversionError, match=REFUSED[(source, target)]):
            convert(index, target)
        return
    converted, arrays = convert(index, target)
    x = np.random.default_rng(1).standard_normal((6, 2, 5))
    want = _forward(module, x)
    if target == "gates":
        assert len(arrays) >= 12 and all(k.split("/")[-2] in ("input", "forget", "cell", "output", "reset", "update",
                                                                "new", "projection") for k in arrays)
        return
    group = only_group(converted)
    np.testing.assert_allclose(run_stack(group.cells(), x), want, atol=1e-5)
    back, back_arrays = convert(converted, "torch-cell" if source.endswith("cell") else "torch")
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    two_biases = target in ("torch", "onnx") or (target == "keras" and isinstance(module, (torch.nn.GRU, torch.nn.GRUCell)))
    for key, value in state.items():
        if key.startswith("weight") or two_biases:
            np.testing.assert_array_equal(back_arrays[f"rnn.{key}"], value)  # pure re-arrangement: bit-exact
        elif key.startswith("bias_ih"):  # one-bias layouts keep the sum (in bias_ih) and zeros in bias_hh
            hh = key.replace("bias_ih", "bias_hh")
            np.testing.assert_allclose(back_arrays[f"rnn.{key}"], value + state[hh], atol=1e-6)
            assert not back_arrays[f"rnn.{hh}"].any()


def test_done_when_tf1_lstmcell_to_torch_cell_loads_strictly_and_reproduces_tf(tmp_path):
    out = tmp_path / "cell.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(TF / "tf1_lstmcell" / "model.ckpt"), "--scope", "LSTMcell/*",
                                   "--to", "torch-cell", "--rename", "LSTMcell/=", "-o", str(out), "--verify"])
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    cell = torch.nn.LSTMCell(3, 4)
    cell.load_state_dict(load_file(str(out)), strict=True)
    ref = tf_outputs("tf1_lstmcell")
    x = torch.tensor(ref["x"])
    h = c = torch.zeros(2, 4)
    hs = []
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c))
        hs.append(h)
    np.testing.assert_allclose(torch.stack(hs).detach().numpy(), ref["h"], atol=1e-5)


@pytest.mark.parametrize("scope,module,key", [
    ("bilstm", lambda: torch.nn.LSTM(3, 4, bidirectional=True, batch_first=True), "bilstm"),
    ("stack", lambda: torch.nn.LSTM(3, 4, num_layers=2, batch_first=True), "stack"),
])
def test_tf1_to_torch_modules_reproduce_tf(tmp_path, scope, module, key):
    ref = tf_outputs("tf1_cells")
    out = tmp_path / f"{scope}.pt"
    res = CliRunner().invoke(cli, ["extract", str(TF / "tf1_cells"), "-s", scope, "--to", "torch",
                                   "--rename", f"{scope}/=", "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = module()
    m.load_state_dict(torch.load(out, weights_only=True), strict=True)
    y = m(torch.tensor(ref["x"]))[0].detach().numpy()
    want = np.concatenate([ref["bilstm_fw"], ref["bilstm_bw"]], -1) if key == "bilstm" else ref[key]
    np.testing.assert_allclose(y, want, atol=1e-5)


keras = pytest.importorskip("keras")


def _keras_weights(arrays, prefix):
    return [arrays[f"{prefix}cell/{n}"] for n in ("kernel", "recurrent_kernel", "bias") if f"{prefix}cell/{n}" in arrays]


def test_tf1_gru_cell_into_keras_reset_before_gru_reproduces_tf():
    ref = tf_outputs("tf1_cells")
    _, arrays = convert(open_scope(TF / "tf1_cells", "bigru"), "keras")
    layer = keras.layers.Bidirectional(keras.layers.GRU(4, reset_after=False, return_sequences=True), merge_mode=None)
    layer.build((2, 5, 3))
    layer.set_weights(_keras_weights(arrays, "bigru/forward_layer/") + _keras_weights(arrays, "bigru/backward_layer/"))
    fw, bw = layer(ref["x"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fw), ref["bigru_fw"], atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bw), ref["bigru_bw"], atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_torch_bidirectional_into_real_keras_layer(tmp_path, kind):
    torch.manual_seed(3)
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(5, 4, bidirectional=True, batch_first=True)
    _, arrays = convert(_torch_file(tmp_path, module), "keras")
    inner = (keras.layers.LSTM if kind == "lstm" else keras.layers.GRU)(4, return_sequences=True)
    layer = keras.layers.Bidirectional(inner)
    layer.build((2, 6, 5))
    layer.set_weights(_keras_weights(arrays, "rnn/forward_layer/") + _keras_weights(arrays, "rnn/backward_layer/"))
    x = np.random.default_rng(0).standard_normal((2, 6, 5)).astype(np.float32)
    want = module(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), want, atol=1e-5)


def test_keras3_file_into_torch_modules(tmp_path):
    """A real Keras 3 .keras (LSTM, reset-after GRU) converted to PyTorch computes what Keras computes."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(4, return_sequences=True, name="enc"),
                              keras.layers.GRU(3, return_sequences=True, name="dec")])
    for w in model.weights:
        if "bias" in w.path:
            w.assign(np.random.default_rng(0).uniform(-0.5, 0.5, w.shape).astype("float32"))
    path = tmp_path / "m.keras"
    model.save(path)
    _, arrays = convert(ckptsurgeon.open(path), "torch")
    lstm, gru = torch.nn.LSTM(5, 4, batch_first=True), torch.nn.GRU(4, 3, batch_first=True)
    lstm.load_state_dict({k[4:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("enc.")}, strict=True)
    gru.load_state_dict({k[4:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("dec.")}, strict=True)
    x = np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32)
    want = keras.ops.convert_to_numpy(model(x))
    got = gru(lstm(torch.tensor(x))[0])[0].detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_onnx_reference_evaluator(tmp_path, kind):
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    torch.manual_seed(4)
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(5, 4, bidirectional=True)
    _, arrays = convert(_torch_file(tmp_path, module), "onnx")
    attrs = {"hidden_size": 4, "direction": "bidirectional"}
    if kind == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(kind.upper(), ["X", "W", "R", "B"], ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [6, 2, 5])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [helper.make_tensor(n, TensorProto.FLOAT, arrays[f"rnn/{n}"].shape, arrays[f"rnn/{n}"].ravel())
                               for n in "WRB"])
    x = np.random.default_rng(0).standard_normal((6, 2, 5)).astype(np.float32)
    (y,) = ReferenceEvaluator(helper.make_model(graph)).run(None, {"X": x})  # [T, D, B, H]
    want = module(torch.tensor(x))[0].detach().numpy()  # [T, B, D*H]
    np.testing.assert_allclose(y.transpose(0, 2, 1, 3).reshape(6, 2, 8), want, atol=1e-5)


@pytest.mark.parametrize("scope,target,message", [
    ("bigru", "torch", "reset-before GRU"),
    ("bigru", "torch-cell", "reset-before GRU"),
    ("peephole", "torch", "peephole"),
    ("peephole", "keras", "peephole"),
    ("stack", "torch-cell", "holds one"),
])
def test_inexact_conversions_are_refused(scope, target, message):
    with pytest.raises(ConversionError, match=message):
        convert(open_scope(TF / "tf1_cells", scope), target)


def test_projection_refusals(tmp_path):
    index = _torch_file(tmp_path, torch.nn.LSTM(5, 4, proj_size=2))
    for target in ("keras", "onnx", "torch-cell"):
        with pytest.raises(ConversionError, match="projection"):
            convert(index, target)
    converted, _ = convert(index, "tf1")  # TF1 LSTMCell has num_proj
    assert only_group(converted).proj_size == 2


def test_reset_after_gru_into_tf1_refused(tmp_path):
    with pytest.raises(ConversionError, match="reset-after GRU"):
        convert(_torch_file(tmp_path, torch.nn.GRU(3, 2)), "tf1")


def test_hard_sigmoid_refused_unless_allow_approx(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    path = tmp_path / "keras1.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"lstm_1"])
        g = f.create_group("lstm_1")
        names = [f"lstm_1_{m}_{gate}" for gate in "icfo" for m in "WUb"]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        for n in names:
            g[n] = rng.standard_normal({"W": (3, 2), "U": (2, 2), "b": (2,)}[n.split("_")[2]]).astype(np.float32)
    index = ckptsurgeon.open(path)
    with pytest.raises(ConversionError, match="hard_sigmoid"):
        convert(index, "torch")
    rows, done = convert_index(index, "torch", ConvertOptions(allow_approx=True))
    assert "max abs output difference" in done[0].notes[0]


def test_gates_view_selects_gates(tmp_path):
    out = tmp_path / "g.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / "torch" / "model.pt"), "-s", "encoder/*", "--to", "gates",
                                   "--gates", "input,forget", "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = ckptsurgeon.open(out)
    src = ckptsurgeon.open(FIXTURES / "torch" / "model.pt")
    w = src["encoder/rnn/weight_ih_l1_reverse"].numpy()
    np.testing.assert_array_equal(got["encoder/rnn/layer_1/backward/forget/weight_ih"].numpy(), w[16:32])
    assert {p.split("/")[-2] for p in got} == {"input", "forget"}


def test_verify_cli_catches_a_tampered_conversion(tmp_path):
    good = tmp_path / "good.safetensors"
    CliRunner().invoke(cli, ["extract", str(TF / "tf1_cells"), "-s", "bilstm", "--to", "torch", "-o", str(good)])
    res = CliRunner().invoke(cli, ["verify", str(TF / "tf1_cells"), str(good), "-s", "bilstm"])
    assert res.exit_code == 0 and "ok" in res.output
    tensors = {r.key: r.numpy() for r in ckptsurgeon.open(good).values()}
    tensors["bilstm.bias_ih_l0"] = tensors["bilstm.bias_ih_l0"] + 0.1
    bad = tmp_path / "bad.safetensors"
    ckptsurgeon.save(tensors, bad)
    res = CliRunner().invoke(cli, ["verify", str(TF / "tf1_cells"), str(bad), "-s", "bilstm"])
    assert res.exit_code == 1 and "FAIL" in res.output


def test_onnx_keeps_the_gru_family(tmp_path):
    """ONNX holds the family in linear_before_reset, not in W/R/B: the output's metadata carries it."""
    out = tmp_path / "gru.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(TF / "tf1_cells"), "-s", "bigru", "--to", "onnx", "-o", str(out), "--verify"])
    assert res.exit_code == 0, res.output
    group = only_group(ckptsurgeon.open(out))
    assert group.reset_after is False
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        described = json.loads(f.metadata()["rnn:bigru"])
    assert described["family"] == "reset-before" and described["onnx"]["linear_before_reset"] == 0
