"""ONNX recurrent groups converted (``extract --to``) and loaded into the real frameworks: torch modules and
Keras 3 layers compute what onnxruntime computes running the original model (1e-5); ``--to onnx`` outputs,
rebuilt into a node, run like the original; refusals name their reason."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.numpy import load_file

from onnx_models import onnx, rnn_model, torch_export
from onnx_rnn_helpers import Wrapper, export_lstmcell, flat_y, input_names, one_group, ort_run, ref_run

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.rnn import refusals
from onnx import helper, numpy_helper

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(23)


def extract(path, out, to: str, node: str, **kw):
    """``extract --scope <node scope> --to ... --rename <scope>/=``: the node's scope selects the tensors it reads."""
    kw.setdefault("scope", [node])
    return ckptsurgeon.extract(str(path), str(out), to=to, rename=[(node + "/", "")], **kw)


def metadata(out) -> dict:
    with safe_open(str(out), "np") as f:
        return f.metadata()


# ------------------------------------------------------------------ into torch

@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("export", ["torchscript", "torchscript-unfolded", "dynamo"])
def test_torch_export_back_into_torch(tmp_path, cls, export):
    if export == "dynamo":
        pytest.importorskip("onnxscript")
    torch.manual_seed(1)
    m = Wrapper.make(torch, cls, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    kw = dict(dynamo=True) if export == "dynamo" else dict(dynamo=False, do_constant_folding=export == "torchscript")
    path = torch_export(m, (x,), tmp_path / "m.onnx", **kw)
    g = one_group(path)
    result = extract(path, tmp_path / "t.safetensors", "torch", g.scope)
    assert result.checks and result.checks[0]["max_abs_diff"] <= 1e-6
    back = getattr(torch.nn, cls)(3, 4, num_layers=2, bidirectional=True)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(tmp_path / "t.safetensors")).items()}, strict=True)
    for name, p in m.rnn.state_dict().items():  # the very weights the model was exported from
        assert torch.equal(p, back.state_dict()[name]), name
    y = ort_run(path, {input_names(path)[0]: x.numpy()})[0]
    np.testing.assert_allclose(back(x)[0].detach().numpy(), y, rtol=1e-5, atol=1e-5)


def test_lstmcell_inside_if_into_torch_cell(tmp_path):
    module, args = export_lstmcell(torch, tmp_path / "cell.onnx")
    path = tmp_path / "cell.onnx"
    g = one_group(path)
    extract(path, tmp_path / "c.safetensors", "torch-cell", g.scope, scope=["cell"])
    cell = torch.nn.LSTMCell(3, 4)
    cell.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(tmp_path / "c.safetensors")).items()}, strict=True)
    feeds = dict(zip(input_names(path), (a.numpy() for a in args)))
    h, c = ort_run(path, feeds)
    th, tc = cell(args[0], (args[1], args[2]))
    np.testing.assert_allclose(th.detach().numpy(), h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tc.detach().numpy(), c, rtol=1e-5, atol=1e-5)


def test_layout_1_gru_into_batch_first_torch(tmp_path):
    path, _ = rnn_model(tmp_path / "g.onnx", "GRU", layout=1, direction="bidirectional", with_initial=False,
                        extra_attrs=dict(linear_before_reset=1))
    extract(path, tmp_path / "t.safetensors", "torch", "enc/rnn")
    gru = torch.nn.GRU(3, 4, bidirectional=True, batch_first=True)
    gru.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(tmp_path / "t.safetensors")).items()})
    x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    y = ref_run(path, {"X": x})[0]  # [B, T, D, H]; onnxruntime does not run layout=1
    np.testing.assert_allclose(gru(torch.from_numpy(x))[0].detach().numpy(), y.reshape(2, 5, 8), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ into Keras 3

keras = pytest.importorskip("keras")


def _keras_hard_sigmoid(x):
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def _weights(arrays: dict, prefix: str) -> list[np.ndarray]:
    return [arrays[prefix + n] for n in ("cell/kernel", "cell/recurrent_kernel", "cell/bias") if prefix + n in arrays]


def test_keras2_hard_sigmoid_lstm_bidirectional_into_keras(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", direction="bidirectional", with_initial=False, extra_attrs=dict(
        activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5]))
    res = extract(path, tmp_path / "k.safetensors", "keras", "enc/rnn")
    assert any("Keras 3's 'hard_sigmoid'" in n for c in res.converted for n in c["notes"])
    arrays = load_file(str(tmp_path / "k.safetensors"))
    desc = json.loads(metadata(tmp_path / "k.safetensors")["rnn:"])
    assert desc["recurrent_activation"] == "hard_sigmoid_keras2" and desc["formulas"]["recurrent_activation"] == "clip(0.2 * x + 0.5, 0, 1)"
    x = (RNG.standard_normal((2, 5, 3)) * 3).astype(np.float32)
    y = flat_y(ort_run(path, {"X": x.transpose(1, 0, 2)})[0]).transpose(1, 0, 2)

    def run(recurrent_activation) -> np.ndarray:  # Keras's Bidirectional: a forward layer and a go_backwards copy
        outs = []
        for prefix, backwards in (("forward_layer/", False), ("backward_layer/", True)):
            layer = keras.layers.LSTM(4, return_sequences=True, recurrent_activation=recurrent_activation,
                                      go_backwards=backwards)
            layer.build(x.shape)
            layer.set_weights(_weights(arrays, prefix))
            out = keras.ops.convert_to_numpy(layer(x))
            outs.append(out[:, ::-1] if backwards else out)
        return np.concatenate(outs, axis=-1)

    np.testing.assert_allclose(run(_keras_hard_sigmoid), y, rtol=1e-5, atol=1e-5)
    # Keras 3's own 'hard_sigmoid' is another function: the same weights computing with it differ
    assert np.abs(run("hard_sigmoid") - y).max() > 1e-3


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_families_into_keras(tmp_path, lbr):
    path, _ = rnn_model(tmp_path / "g.onnx", "GRU", with_initial=False, extra_attrs=dict(linear_before_reset=lbr))
    res = extract(path, tmp_path / "k.safetensors", "keras", "enc/rnn")
    assert any(f"reset_after={bool(lbr)}" in n for n in res.converted[0]["notes"])
    arrays = load_file(str(tmp_path / "k.safetensors"))
    layer = keras.layers.GRU(4, return_sequences=True, reset_after=bool(lbr))
    x = (RNG.standard_normal((2, 5, 3)) * 2).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights(_weights(arrays, ""))
    y = flat_y(ort_run(path, {"X": x.transpose(1, 0, 2)})[0]).transpose(1, 0, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), y, rtol=1e-5, atol=1e-5)


def test_reverse_node_is_keras_go_backwards_with_outputs_flipped(tmp_path):
    path, _ = rnn_model(tmp_path / "r.onnx", "LSTM", direction="reverse", with_initial=False)
    res = extract(path, tmp_path / "k.safetensors", "keras", "enc/rnn")
    notes = res.converted[0]["notes"]
    assert any("go_backwards=True" in n for n in notes) and any("aligned with X" in n for n in notes)
    arrays = load_file(str(tmp_path / "k.safetensors"))
    layer = keras.layers.LSTM(4, return_sequences=True, return_state=True, go_backwards=True)
    x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights(_weights(arrays, ""))
    seq, h, _ = (keras.ops.convert_to_numpy(t) for t in layer(x))
    y, y_h, _ = ort_run(path, {"X": x.transpose(1, 0, 2)})
    np.testing.assert_allclose(seq[:, ::-1], flat_y(y).transpose(1, 0, 2), rtol=1e-5, atol=1e-5)  # flipped in time
    np.testing.assert_allclose(h, y_h[0], rtol=1e-5, atol=1e-5)  # the final state is the same


def test_stacked_torch_export_into_stacked_keras(tmp_path):
    torch.manual_seed(4)
    m = Wrapper.make(torch, "LSTM", num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    path = torch_export(m, (x,), tmp_path / "m.onnx", dynamo=False)
    g = one_group(path)
    extract(path, tmp_path / "k.safetensors", "keras", g.scope)
    arrays = load_file(str(tmp_path / "k.safetensors"))
    xs = x.numpy().transpose(1, 0, 2)
    layers = [keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)) for _ in range(2)]
    h = xs
    for k, layer in enumerate(layers):
        layer.build(h.shape)
        layer.set_weights(_weights(arrays, f"layer_{k}/forward_layer/") + _weights(arrays, f"layer_{k}/backward_layer/"))
        h = keras.ops.convert_to_numpy(layer(h))
    y = ort_run(path, {input_names(path)[0]: x.numpy()})[0]
    np.testing.assert_allclose(h.transpose(1, 0, 2), y, rtol=1e-5, atol=1e-5)


def test_parametric_activation_into_keras_with_its_formula(tmp_path):
    path, _ = rnn_model(tmp_path / "s.onnx", "GRU", with_initial=False, extra_attrs=dict(
        activations=["Sigmoid", "ScaledTanh"], activation_alpha=[1.7], activation_beta=[0.6], linear_before_reset=1))
    res = extract(path, tmp_path / "k.safetensors", "keras", "enc/rnn")
    assert any("1.7 * tanh(0.6 * x)" in n for n in res.converted[0]["notes"])
    arrays = load_file(str(tmp_path / "k.safetensors"))
    a, b = float(np.float32(1.7)), float(np.float32(0.6))
    layer = keras.layers.GRU(4, return_sequences=True, activation=lambda v: a * keras.ops.tanh(b * v))
    x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights(_weights(arrays, ""))
    y = flat_y(ort_run(path, {"X": x.transpose(1, 0, 2)})[0]).transpose(1, 0, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), y, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ gates and onnx targets

def test_gates_output_is_the_per_gate_view_and_verifies(tmp_path):
    path, w = rnn_model(tmp_path / "p.onnx", "LSTM", peepholes=True, with_initial=False, extra_attrs=dict(clip=1.5))
    extract(path, tmp_path / "g.safetensors", "gates", "enc/rnn")
    arrays = load_file(str(tmp_path / "g.safetensors"))
    H = 4
    onnx_gate = {"input": 0, "output": 1, "forget": 2, "cell": 3}  # ONNX i, o, f, c
    for gate, k in onnx_gate.items():
        assert np.array_equal(arrays[f"{gate}/weight_ih"], w["W"][0, k * H:(k + 1) * H])
        assert np.array_equal(arrays[f"{gate}/bias_hh"], w["B"][0, 4 * H + k * H:4 * H + (k + 1) * H])
    assert np.array_equal(arrays["forget/peephole"], w["P"][0, 2 * H:])  # P is i, o, f
    assert json.loads(metadata(tmp_path / "g.safetensors")["rnn:"])["clip"] == pytest.approx(1.5)
    res = CliRunner().invoke(cli, ["verify", str(path), str(tmp_path / "g.safetensors")])
    assert res.exit_code == 0 and "max abs diff 0" in res.output, res.output


def _node_from_output(out, op: str, x_shape) -> onnx.ModelProto:
    """A new one-node model from a --to onnx output: its W/R/B/P and the node attributes it states."""
    arrays = load_file(str(out))
    desc = json.loads(metadata(out)["rnn:"])
    names = [n for n in ("W", "R", "B") if n in arrays] + (["", "", "", "P"] if "P" in arrays else [])
    node = helper.make_node(op, ["X"] + names, ["Y"], **desc["onnx"])
    inits = [numpy_helper.from_array(arrays[n], n) for n in ("W", "R", "B", "P") if n in arrays]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("op,attrs,kw", [
    ("LSTM", dict(activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5],
                  clip=2.0, input_forget=1), dict(direction="bidirectional", peepholes=True)),
    ("GRU", dict(activations=["LeakyRelu", "Elu"], activation_alpha=[0.2, 0.7], clip=1.0), dict(direction="reverse")),
    ("GRU", dict(linear_before_reset=1, activations=["Sigmoid", "Affine"], activation_alpha=[0.5], activation_beta=[0.1]),
     {}),
])
def test_onnx_to_onnx_round_trip_runs_like_the_original(tmp_path, op, attrs, kw):
    path, _ = rnn_model(tmp_path / "m.onnx", op, with_initial=False, extra_attrs=attrs, **kw)
    extract(path, tmp_path / "o.safetensors", "onnx", "enc/rnn")
    rebuilt = tmp_path / "rebuilt.onnx"
    onnx.save(_node_from_output(tmp_path / "o.safetensors", op, (5, 2, 3)), str(rebuilt))
    x = (RNG.standard_normal((5, 2, 3)) * 2).astype(np.float32)
    np.testing.assert_array_equal(ort_run(rebuilt, {"X": x})[0], ort_run(path, {"X": x})[0])


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("op,attrs,kw,target,why", [
    ("LSTM", dict(activations=["HardSigmoid", "Tanh", "Tanh"]), {}, "torch", "pass --allow-approx"),
    ("LSTM", dict(activations=["Sigmoid", "LeakyRelu", "LeakyRelu"]), {}, "torch", "pass --allow-approx"),  # tf1 carries activation=
    ("LSTM", dict(clip=1.0), {}, "torch", "ONNX clip"),
    ("LSTM", dict(clip=1.0), {}, "keras", "ONNX clip"),
    ("LSTM", dict(clip=1.0), {}, "tf1", "cell_clip clips the cell state"),
    ("LSTM", dict(input_forget=1), {}, "keras", "input_forget=1"),
    ("LSTM", dict(input_forget=1), {}, "torch-cell", "input_forget=1"),
    ("LSTM", {}, dict(peepholes=True), "torch", "peephole"),
    ("LSTM", {}, dict(peepholes=True), "keras", "peephole"),
    ("GRU", {}, {}, "torch", "reset-before GRU"),
    ("GRU", dict(linear_before_reset=1), {}, "tf1", "reset-after GRU"),
    ("LSTM", {}, dict(direction="reverse"), "torch", "go_backwards"),
    ("LSTM", {}, dict(direction="bidirectional"), "torch-cell", "holds one"),
])
def test_refusals_name_their_reason(tmp_path, op, attrs, kw, target, why):
    path, _ = rnn_model(tmp_path / "m.onnx", op, with_initial=False, extra_attrs=attrs, **kw)
    assert any(why in r for r in refusals(one_group(path), target))
    out = tmp_path / "o.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(path), "--to", target, "-o", str(out)])
    assert res.exit_code == 1 and why in res.output and "Traceback" not in res.output, res.output
    assert not out.exists()


def test_allow_approx_measures_the_error(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", with_initial=False,
                        extra_attrs=dict(activations=["HardSigmoid", "Tanh", "Tanh"]))
    res = CliRunner().invoke(cli, ["extract", str(path), "--to", "torch", "--allow-approx", "-o", str(tmp_path / "o.pt.safetensors")])
    assert res.exit_code == 0, res.output
    assert "approximate: (hard_sigmoid_keras2, tanh) replaced by (sigmoid, tanh); max abs output difference" in res.output


# ------------------------------------------------------------------ tf1, graft into torch, load_into

@pytest.mark.parametrize("op,attrs", [("LSTM", {}), ("GRU", {})])
def test_tf1_target_is_verified(tmp_path, op, attrs):
    path, _ = rnn_model(tmp_path / "m.onnx", op, direction="bidirectional", with_initial=False, extra_attrs=attrs)
    res = CliRunner().invoke(cli, ["extract", str(path), "--scope", "enc/rnn", "--to", "tf1", "-o", str(tmp_path / "t.safetensors")])
    assert res.exit_code == 0 and "verified enc/rnn: max abs diff" in res.output, res.output
    names = set(load_file(str(tmp_path / "t.safetensors")))
    assert any("bidirectional_rnn/fw/" in n for n in names) and any("bidirectional_rnn/bw/" in n for n in names)
    res = CliRunner().invoke(cli, ["verify", str(path), str(tmp_path / "t.safetensors")])
    assert res.exit_code == 0, res.output


def test_onnx_source_grafted_into_a_torch_template(tmp_path):
    """The other direction: an ONNX model's stacked LSTM nodes into a PyTorch checkpoint (node scope -> module)."""
    torch.manual_seed(6)
    m = Wrapper.make(torch, "LSTM", num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    path = torch_export(m, (x,), tmp_path / "m.onnx", dynamo=False)
    torch.manual_seed(7)
    other = Wrapper.make(torch, "LSTM", num_layers=2, bidirectional=True)
    torch.save(other.state_dict(), tmp_path / "tpl.pt")
    res = CliRunner().invoke(cli, ["graft", str(path), "--scope", "rnn/LSTM", "--into", str(tmp_path / "tpl.pt"),
                                   "--map", "rnn/LSTM=rnn", "-o", str(tmp_path / "warm.pt")])
    assert res.exit_code == 0, res.output
    other.load_state_dict(torch.load(tmp_path / "warm.pt", weights_only=True))
    y = ort_run(path, {input_names(path)[0]: x.numpy()})[0]
    np.testing.assert_allclose(other(x).detach().numpy(), y, rtol=1e-5, atol=1e-5)


def test_load_into_a_torch_module_from_an_onnx_model(tmp_path):
    from ckptsurgeon.torch import load_into

    module, args = export_lstmcell(torch, tmp_path / "cell.onnx")
    cell = torch.nn.LSTMCell(3, 4)
    report = load_into(cell, str(tmp_path / "cell.onnx"), scope=["If/then_branch/cell/LSTM"],
                       map=["If/then_branch/cell/LSTM="])
    assert report.checks and report.checks[0].ok
    for name, value in module.cell.state_dict().items():
        assert torch.equal(cell.state_dict()[name], value), name


def test_keras_load_into_from_an_onnx_model(tmp_path):
    from ckptsurgeon.keras import load_into

    path, _ = rnn_model(tmp_path / "g.onnx", "GRU", with_initial=False, extra_attrs=dict(linear_before_reset=1))
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, return_sequences=True, name="gru")])
    report = load_into(model, str(path), map=["enc/rnn=gru"])
    assert report.checks and report.checks[0].ok
    x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    y = flat_y(ort_run(path, {"X": x.transpose(1, 0, 2)})[0]).transpose(1, 0, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), y, rtol=1e-5, atol=1e-5)
    # a reset-before node into Keras's default reset-after GRU: refused, nothing loaded
    path0, _ = rnn_model(tmp_path / "g0.onnx", "GRU", with_initial=False)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(Exception, match="reset-before GRU cannot compute"):
        load_into(model, str(path0), map=["enc/rnn=gru"])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
