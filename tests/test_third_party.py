"""Real third-party checkpoints (fixtures/third_party/README.md) against their own frameworks.

silero-vad: the issue-14 scenario on the published files: the LSTM out of the ``.onnx`` into PyTorch, "fine-tuned",
grafted back; onnxruntime runs the updated model like the original model whose tensors were replaced with onnx's
own API, in both branches of the ``If`` holding the cell. The TorchScript archive reads as ``torch.jit.load`` gives
it, holds the same cell, and takes a graft that ``torch.jit.load`` runs. g2p_en: its GRUs, renamed to PyTorch
names and converted, compute what g2p_en's own numpy code computed (recorded by make_references.py). chars2vec:
a Keras 2.2.0 weights-only file, whose activations come from that version's defaults (hard_sigmoid), converted
to ONNX and Keras 3, computes what tf.keras 2 computed with the file (recorded)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.rnn import recognize
from conftest import FIXTURES

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TP = FIXTURES / "third_party"
VAD_ONNX = TP / "silero_vad" / "silero_vad_16k_op15.onnx"
VAD_JIT = TP / "silero_vad" / "silero_vad.jit"
G2P = TP / "g2p_en" / "checkpoint20.npz"
C2V = TP / "chars2vec" / "weights.h5"
NODE = "model/decoder/If_1/then_branch/model/decoder/rnn/LSTM"
STATE_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _cli(*args) -> str:
    res = CliRunner().invoke(cli, [*map(str, args)])
    assert res.exit_code == 0, res.output
    return res.output


def _tensors(graph, out: dict) -> dict:
    """Every initializer and tensor attribute of the model, subgraphs included, as onnx reads it."""
    from onnx import numpy_helper

    for t in graph.initializer:
        out[t.name] = numpy_helper.to_array(t)
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out[f"{node.name}:{a.name}"] = numpy_helper.to_array(a.t)
            elif a.type == onnx.AttributeProto.GRAPH:
                _tensors(a.g, out)
    return out


def test_silero_onnx_reads_as_onnx_does():
    ref = _tensors(onnx.load(str(VAD_ONNX)).graph, {})
    index = ckptsurgeon.open(str(VAD_ONNX))
    ours = sorted((r.numpy().dtype.str, r.shape, r.numpy().tobytes()) for r in index.values())
    theirs = sorted((a.dtype.str, a.shape, a.tobytes()) for a in ref.values())
    assert len(ours) == len(theirs) == 177 and ours == theirs
    (group,) = recognize(index)
    assert group.scope == NODE and group.uses == ["model/decoder/If_1/else_branch/model/decoder/rnn_1/LSTM"]
    assert sorted(group.members) == sorted(f"model/decoder/rnn/{n}" for n in STATE_NAMES)


def _session(model, relax_state: bool):
    if relax_state:  # the else branch (fresh zero state) runs for a state of 0 rows, which the model declares 2
        state = next(i for i in model.graph.input if i.name == "state")
        state.type.tensor_type.shape.dim[0].dim_param = "n"
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_silero_onnx_lstm_to_torch_and_back(tmp_path):
    """The LSTM out as an nn.LSTMCell, perturbed, grafted back into the .onnx."""
    _cli("extract", VAD_ONNX, "--scope", NODE, "--to", "torch-cell", "--rename", f"{NODE}/=", "-o", tmp_path / "c.safetensors")
    from safetensors.torch import load_file

    cell = torch.nn.LSTMCell(128, 128)
    cell.load_state_dict(load_file(str(tmp_path / "c.safetensors")), strict=True)
    index = ckptsurgeon.open(str(VAD_ONNX))
    for n in STATE_NAMES:  # the state-dict tensors the export slices for its LSTM nodes
        assert np.array_equal(getattr(cell, n).detach().numpy(), index[f"model/decoder/rnn/{n}"].numpy())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    torch.save(cell.state_dict(), tmp_path / "tuned.pt")
    text = _cli("graft", tmp_path / "tuned.pt", "--into", VAD_ONNX, "-o", tmp_path / "tuned.onnx")
    assert f"verified / -> {NODE}: max abs diff 0" in text

    from onnx import numpy_helper

    want = onnx.load(str(VAD_ONNX))  # the expectation, made with onnx's own API
    for t in want.graph.initializer:
        if t.name.startswith("model.decoder.rnn."):
            t.CopyFrom(numpy_helper.from_array(getattr(cell, t.name.rsplit(".", 1)[1]).detach().numpy(), t.name))
    x = (0.1 * np.random.default_rng(1).standard_normal((1, 512))).astype(np.float32)
    for rows in (2, 0):  # the If's then branch (state passed in), then its else branch (zeros)
        feed = {"input": x, "state": np.full((rows, 1, 128), 0.1, np.float32), "sr": np.array(16000, np.int64)}
        got = _session(onnx.load(str(tmp_path / "tuned.onnx")), rows == 0).run(None, feed)
        exp = _session(want, rows == 0).run(None, feed)
        old = _session(onnx.load(str(VAD_ONNX)), rows == 0).run(None, feed)
        for a, b, c in zip(got, exp, old):
            assert np.array_equal(a, b)
        assert max(np.abs(b - c).max() for b, c in zip(exp, old)) > 1e-4


def _jit(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def test_silero_jit_reads_as_torch_jit_load_and_takes_a_graft(tmp_path):
    loaded = _jit(VAD_JIT)
    index = ckptsurgeon.open(str(VAD_JIT))
    assert index.format == "torchscript"
    for key, value in loaded.state_dict().items():
        ref = index[key.replace(".", "/")]
        assert ref.dtype == value.numpy().dtype and np.array_equal(ref.numpy(), value.numpy()), key
    onnx_index = ckptsurgeon.open(str(VAD_ONNX))
    for n in STATE_NAMES:  # the .jit's 16 kHz cell is the .onnx's
        assert np.array_equal(index[f"_model/decoder/rnn/{n}"].numpy(), onnx_index[f"model/decoder/rnn/{n}"].numpy())
    assert [g.scope for g in recognize(index)] == ["_model/decoder/rnn", "_model_8k/decoder/rnn"]

    torch.manual_seed(2)
    tuned = torch.nn.LSTMCell(128, 128)
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    _cli("graft", tmp_path / "tuned.pt", "--into", VAD_JIT, "--map", "/=_model/decoder/rnn", "-o", tmp_path / "t.jit")
    got, want = _jit(tmp_path / "t.jit"), _jit(VAD_JIT)
    with torch.no_grad():
        for n in STATE_NAMES:
            getattr(want._model.decoder.rnn, n).copy_(getattr(tuned, n))
        x = 0.1 * torch.randn(1, 512, generator=torch.Generator().manual_seed(3))
        assert torch.equal(got(x, 16000), want(x, 16000))
    assert [k for k, v in got.state_dict().items() if not torch.equal(v, loaded.state_dict()[k])] == \
        [f"_model.decoder.rnn.{n}" for n in STATE_NAMES]


@pytest.mark.parametrize("target", ["torch", "keras", "onnx"])
def test_g2p_en_grus_compute_what_g2p_en_computed(tmp_path, target):
    ref = np.load(TP / "g2p_en" / "reference.npz")
    maps = ("--map", "{m}_w_{x}={m}/weight_{x}", "--map", "{m}_b_{x}={m}/bias_{x}")
    _cli("extract", G2P, *maps, "-o", tmp_path / "named.npz")
    _cli("extract", tmp_path / "named.npz", "--to", target, "-o", tmp_path / "out.safetensors")
    from safetensors.numpy import load_file

    t, x = load_file(str(tmp_path / "out.safetensors")), ref["x"]
    for m in ("enc", "dec"):
        if target == "torch":
            gru = torch.nn.GRU(256, 256, batch_first=True)
            gru.load_state_dict({k.split(".")[-1]: torch.from_numpy(v) for k, v in t.items() if k.startswith(m + ".")})
            with torch.no_grad():
                y = gru(torch.from_numpy(x))[0].numpy()
        elif target == "keras":
            keras = pytest.importorskip("keras")
            layer = keras.layers.GRU(256, return_sequences=True, reset_after=True)
            layer.build((None, 6, 256))
            layer.set_weights([t[f"{m}/cell/kernel"], t[f"{m}/cell/recurrent_kernel"], t[f"{m}/cell/bias"]])
            y = np.asarray(keras.ops.convert_to_numpy(layer(x)))
        else:
            import json

            from onnx import TensorProto, helper, numpy_helper
            from safetensors import safe_open

            with safe_open(str(tmp_path / "out.safetensors"), "np") as f:
                attrs = json.loads(f.metadata()[f"rnn:{m}"])["onnx"]  # the node attributes the conversion reports
            assert attrs["linear_before_reset"] == 1
            nodes = [helper.make_node("Transpose", ["xb"], ["x"], perm=[1, 0, 2]),
                     helper.make_node("GRU", ["x", "W", "R", "B"], ["y"], **attrs),
                     helper.make_node("Squeeze", ["y", "one"], ["s"]), helper.make_node("Transpose", ["s"], ["yb"], perm=[1, 0, 2])]
            inits = [numpy_helper.from_array(t[f"{m}/{r}"], r) for r in "WRB"] + [numpy_helper.from_array(np.array([1]), "one")]
            graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xb", TensorProto.FLOAT, list(x.shape))],
                                      [helper.make_tensor_value_info("yb", TensorProto.FLOAT, None)], inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"xb": x})[0]
        np.testing.assert_allclose(y, ref[f"{m}_y"], rtol=1e-5, atol=1e-5)


def _onnx_lstm_stack(tensors: dict, meta: dict, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    """One ONNX LSTM node per converted layer, with the attributes the conversion reports, in onnxruntime."""
    import json

    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["xb"], ["x0"], perm=[1, 0, 2])]
    inits = [numpy_helper.from_array(np.array([1]), "one")]
    cur, outs = "x0", []
    for k, name in enumerate(names):
        attrs = json.loads(meta[f"rnn:{name}"])["onnx"]
        inits += [numpy_helper.from_array(tensors[f"{name}/{r}"], f"{name}.{r}") for r in "WRB"]
        nodes += [helper.make_node("LSTM", [cur, f"{name}.W", f"{name}.R", f"{name}.B"], [f"y{k}"], **attrs),
                  helper.make_node("Squeeze", [f"y{k}", "one"], [f"s{k}"]),
                  helper.make_node("Transpose", [f"s{k}"], [f"o{k}"], perm=[1, 0, 2])]
        cur = f"s{k}"
        outs.append(f"o{k}")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xb", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"xb": x})


def test_chars2vec_keras22_weights_compute_what_tf_keras_computed(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    ref = np.load(TP / "chars2vec" / "reference.npz")
    text = _cli("rnn", C2V)
    assert text.count("hard_sigmoid_keras2 = clip(0.2 * x + 0.5, 0, 1)  (version default: Keras 2.2.0 < 2.3") == 2
    res = CliRunner().invoke(cli, ["extract", str(C2V), "--to", "torch", "-o", str(tmp_path / "t.safetensors")])
    assert res.exit_code == 1 and "--allow-approx" in res.output and not (tmp_path / "t.safetensors").exists()

    _cli("extract", C2V, "--to", "onnx", "-o", tmp_path / "o.safetensors")
    with safe_open(str(tmp_path / "o.safetensors"), "np") as f:
        meta = f.metadata()
    got = _onnx_lstm_stack(load_file(str(tmp_path / "o.safetensors")), meta, ["lstm_1", "lstm_2"], ref["x"])
    for g, want in zip(got, (ref["y1"], ref["y2"])):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)

    keras = pytest.importorskip("keras")
    _cli("extract", C2V, "--to", "keras", "-o", tmp_path / "k.safetensors")
    t = load_file(str(tmp_path / "k.safetensors"))
    x = ref["x"]
    for name, want in (("lstm_1", ref["y1"]), ("lstm_2", ref["y2"])):
        layer = keras.layers.LSTM(50, return_sequences=True,
                                  recurrent_activation=lambda v: keras.ops.clip(0.2 * v + 0.5, 0.0, 1.0))
        layer.build((None, None, x.shape[-1]))
        layer.set_weights([t[f"{name}/cell/kernel"], t[f"{name}/cell/recurrent_kernel"], t[f"{name}/cell/bias"]])
        x = np.asarray(keras.ops.convert_to_numpy(layer(x)))
        np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-6)
