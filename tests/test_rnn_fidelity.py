"""Issue 10 regressions (no silent wrong result), against real torch modules, real Keras 3 layers and real
ONNX LSTM/GRU nodes: self-describing gates, topology, go_backwards, unstated facts, metadata that survives
every output format, hard_sigmoid formulas, verify by default."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.rnn import ConversionError, ConvertOptions, convert_group, refusals, verify_converted
from ckptsurgeon.rnn.reference import run_stack
from rnn_helpers import TF, convert, only_group, run_onnx

torch = pytest.importorskip("torch")


def _torch_file(tmp_path, module, name="rnn", suffix=".pt"):
    path = tmp_path / f"{name}{suffix}"
    torch.save({f"{name}.{k}": v for k, v in module.state_dict().items()}, path)
    return path


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


MODULES = {
    "lstm": lambda: torch.nn.LSTM(5, 4),
    "lstm_square": lambda: torch.nn.LSTM(4, 4),  # input == hidden: no transposition guess
    "lstm_stack_bi": lambda: torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True),
    "lstm_proj": lambda: torch.nn.LSTM(5, 4, num_layers=2, proj_size=3),
    "gru": lambda: torch.nn.GRU(5, 4),
    "gru_square_bi": lambda: torch.nn.GRU(3, 3, num_layers=2, bidirectional=True),
    "lstm_cell": lambda: torch.nn.LSTMCell(4, 4),
}


# --- item 2: --to gates reads back exactly, describes itself, and verifies ---------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5", ".pt"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_gates_round_trip_is_bit_exact_in_every_format(tmp_path, name, suffix):
    torch.manual_seed(0)
    module = MODULES[name]()
    src = _torch_file(tmp_path, module)
    out = tmp_path / f"gates{suffix}"
    res = _cli("extract", src, "--to", "gates", "-o", out)  # verification is on by default
    assert res.exit_code == 0, res.output
    assert "verified rnn: max abs diff 0" in res.output
    gates = ckptsurgeon.open(out)
    described = json.loads(gates.metadata["__metadata__"]["rnn:rnn"])
    group = only_group(gates)
    assert group.layout == "gates" and described["kind"] == group.kind
    assert described["family"] == ("reset-after" if "gru" in name else None)
    assert (described["recurrent_activation"], described["activation"]) == ("sigmoid", "tanh")
    assert described["num_layers"] == getattr(module, "num_layers", 1)
    assert all(origin.startswith("file") for origin in group.provenance.values()), group.provenance
    back = tmp_path / "back.safetensors"
    target = "torch-cell" if name.endswith("cell") else "torch"
    res = _cli("extract", out, "--to", target, "-o", back)
    assert res.exit_code == 0, res.output
    got = {r.key.removeprefix("rnn."): r.numpy() for r in ckptsurgeon.open(back).values()}
    state = module.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)  # both biases kept, nothing transposed


def test_gates_without_description_refuse_and_name_the_flags(tmp_path):
    torch.manual_seed(1)
    out = tmp_path / "g.safetensors"
    assert _cli("extract", _torch_file(tmp_path, torch.nn.GRU(3, 2)), "--to", "gates", "-o", out).exit_code == 0
    stripped = tmp_path / "stripped.safetensors"
    ckptsurgeon.save({r.key: r.numpy() for r in ckptsurgeon.open(out).values()}, stripped)  # metadata lost
    group = only_group(ckptsurgeon.open(stripped))
    assert group.reset_after is None and set(group.unsettled()) == {"reset_after", "activation", "recurrent_activation",
                                                                     "go_backwards"}
    res = _cli("extract", stripped, "--to", "torch", "-o", tmp_path / "t.safetensors")
    assert res.exit_code == 1 and "--reset-after or --reset-before" in res.output
    res = _cli("extract", stripped, "--to", "torch", "-o", tmp_path / "t.safetensors", "--reset-after",
               "--activation", "tanh", "--recurrent-activation", "sigmoid", "--no-go-backwards")
    assert res.exit_code == 0, res.output


# --- item 1: topology (interleaved stacks written and read with TF1 stack_bidirectional names) ------------------

def test_interleaved_stack_to_tf1_uses_stack_bidirectional_names(tmp_path):
    torch.manual_seed(2)
    module = torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True)
    converted, arrays = convert(ckptsurgeon.open(_torch_file(tmp_path, module)), "tf1")
    assert arrays["rnn/stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/lstm_cell/kernel"].shape == (8 + 4, 16)
    group = only_group(converted)
    assert (group.topology, group.num_layers, group.directions) == ("interleaved", 2, 2)
    x = np.random.default_rng(0).standard_normal((6, 2, 5))
    np.testing.assert_allclose(run_stack(group.cells(), x), module(torch.tensor(x, dtype=torch.float32))[0].detach().numpy(),
                               atol=1e-5)


def test_independent_bidirectional_stacks_are_recognized_and_refused_where_no_equivalent(tmp_path):
    """bidirectional_dynamic_rnn(MultiRNNCell, MultiRNNCell): layer 1 of fw reads H, not 2H."""
    rng = np.random.default_rng(3)
    tensors = {}
    for d in ("fw", "bw"):
        for k, n_in in enumerate((3, 4)):
            base = f"enc/bidirectional_rnn/{d}/multi_rnn_cell/cell_{k}/lstm_cell/"
            tensors[base + "kernel"] = rng.standard_normal((n_in + 4, 16)).astype(np.float32)
            tensors[base + "bias"] = rng.standard_normal(16).astype(np.float32)
    path = tmp_path / "indep.safetensors"
    ckptsurgeon.save(tensors, path)
    group = only_group(ckptsurgeon.open(path))
    assert (group.scope, group.topology, group.input_size, group.num_layers, group.directions) == ("enc", "independent", 3, 2, 2)
    for target in ("torch", "keras", "onnx", "torch-cell"):
        assert refusals(group, target), target
    res = _cli("extract", path, "--to", "torch", "-o", tmp_path / "t.pt")
    assert res.exit_code == 1 and "independent stacks" in res.output and not (tmp_path / "t.pt").exists()
    for target in ("tf1", "gates"):  # both hold it, and read back as the same computation
        res = _cli("extract", path, "--to", target, "-o", tmp_path / f"{target}.safetensors")
        assert res.exit_code == 0 and "verified enc: max abs diff 0" in res.output, res.output
        assert only_group(ckptsurgeon.open(tmp_path / f"{target}.safetensors")).topology == "independent"
    written = ckptsurgeon.open(tmp_path / "tf1.safetensors")
    assert written["enc/bidirectional_rnn/bw/multi_rnn_cell/cell_1/lstm_cell/kernel"].shape == (8, 16)


# --- item 3: graft into a CudnnCompatibleLSTMCell template keeps the bias (no forget_bias subtracted) ------------

def test_graft_into_cudnn_compatible_template_subtracts_nothing(tmp_path):
    torch.manual_seed(4)
    lstm = torch.nn.LSTM(3, 4)
    src = _torch_file(tmp_path, lstm)
    rng = np.random.default_rng(4)
    template = tmp_path / "tpl.safetensors"
    ckptsurgeon.save({"rnn/cudnn_compatible_lstm_cell/kernel": rng.standard_normal((7, 16)).astype(np.float32),
                      "rnn/cudnn_compatible_lstm_cell/bias": np.zeros(16, np.float32)}, template)
    basic = tmp_path / "basic.safetensors"
    ckptsurgeon.save({"rnn/basic_lstm_cell/kernel": rng.standard_normal((7, 16)).astype(np.float32),
                      "rnn/basic_lstm_cell/bias": np.zeros(16, np.float32)}, basic)
    s = lstm.state_dict()
    total = (s["bias_ih_l0"] + s["bias_hh_l0"]).numpy()
    i, f, g, o = np.split(total, 4)
    for tpl, forget_bias in ((template, 0.0), (basic, 1.0)):
        out = tmp_path / f"out_{tpl.stem}.safetensors"
        res = _cli("graft", src, "--into", tpl, "-o", out, "--map", "rnn=")
        assert res.exit_code == 0 and "verified rnn -> /: max abs diff" in res.output, res.output
        grafted = ckptsurgeon.open(out)
        bias = next(r for p, r in grafted.items() if p.endswith("bias")).numpy()
        np.testing.assert_allclose(bias, np.concatenate([i, g, f - forget_bias, o]), atol=1e-6)  # TF1 order i, j, f, o
        group = only_group(grafted)
        x = np.random.default_rng(0).standard_normal((5, 2, 3))
        np.testing.assert_allclose(run_stack(group.cells(), x), lstm(torch.tensor(x, dtype=torch.float32))[0].detach().numpy(),
                                   atol=1e-5)


# --- item 4: facts the file does not state ------------------------------------------------------------------

keras = pytest.importorskip("keras")


def _keras_model(tmp_path, layer, input_shape=(6, 5), name="m", seed=5):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(input_shape), layer])
    for w in model.weights:
        if "bias" in w.path:
            w.assign(np.random.default_rng(seed).uniform(-0.5, 0.5, w.shape).astype("float32"))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    model.save_weights(tmp_path / f"{name}.weights.h5")
    return model, path


def _keras_out(model, x):
    return keras.ops.convert_to_numpy(model(x.astype(np.float32)))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keras_go_backwards_is_honoured(tmp_path, kind):
    cls = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    model, path = _keras_model(tmp_path, cls(4, return_sequences=True, go_backwards=True, name="rnn"))
    x = np.random.default_rng(0).standard_normal((2, 6, 5)).astype(np.float32)
    want = _keras_out(model, x)  # Keras returns the outputs last step first
    group = only_group(ckptsurgeon.open(path))
    assert group.go_backwards and group.provenance["go_backwards"] == "file: model config"
    np.testing.assert_allclose(run_stack(group.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2), want, atol=1e-5)
    for target in ("torch", "torch-cell", "tf1"):
        with pytest.raises(ConversionError, match="go_backwards"):
            convert_group(group, target)
    conv = convert_group(group, "onnx")  # ONNX direction=reverse: Y aligned with X, Keras's flipped
    assert conv.metadata["onnx"]["direction"] == "reverse" and verify_converted(conv).max_abs_diff < 1e-6
    arrays = {k: np.asarray(v) for k, v in conv.tensors.items()}
    y = run_onnx(kind, arrays, conv.metadata["onnx"], x.transpose(1, 0, 2), runtime="onnxruntime")
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2)[:, ::-1], want, atol=1e-5)
    conv = convert_group(group, "keras")  # carried: a Keras layer built with go_backwards=True computes it
    assert conv.metadata["go_backwards"] and any("go_backwards=True" in n for n in conv.notes)
    twin = cls(4, return_sequences=True, go_backwards=True)
    twin.build((2, 6, 5))
    twin.set_weights([conv.tensors[f"cell/{n}"] for n in ("kernel", "recurrent_kernel", "bias")])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(twin(x)), want, atol=1e-5)


def test_weights_only_keras_gru_without_bias_needs_the_family(tmp_path):
    model, _ = _keras_model(tmp_path, keras.layers.GRU(3, use_bias=False, return_sequences=True, name="g"), (5, 4))
    weights_only = tmp_path / "m.weights.h5"
    group = only_group(ckptsurgeon.open(weights_only))
    assert group.reset_after is None and "--reset-after or --reset-before" in group.provenance["reset_after"]
    res = _cli("extract", weights_only, "--to", "torch", "-o", tmp_path / "t.pt")
    assert res.exit_code == 1 and "--reset-after or --reset-before" in res.output and not (tmp_path / "t.pt").exists()
    res = _cli("rnn", weights_only)
    assert "reset_after: unknown  (missing:" in res.output
    res = _cli("extract", weights_only, "--to", "torch", "-o", tmp_path / "t.pt", "--reset-after")  # Keras 3's family
    assert res.exit_code == 0, res.output
    gru = torch.nn.GRU(4, 3, batch_first=True, bias=False)
    gru.load_state_dict({k.removeprefix("g."): v for k, v in torch.load(tmp_path / "t.pt", weights_only=True).items()})
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(gru(torch.tensor(x))[0].detach().numpy(), _keras_out(model, x), atol=1e-5)
    assert only_group(ckptsurgeon.open(tmp_path / "m.keras")).provenance["reset_after"] == "file: model config"


def _keras2_weights_only(path, version: str, kind="lstm", seed=0):
    """A weights-only Keras 2 .h5 as Keras writes it (save_weights): no model config, a keras_version."""
    import h5py

    rng = np.random.default_rng(seed)
    G = 4 if kind == "lstm" else 3
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = version
        f.attrs["backend"] = "tensorflow"
        f.attrs["layer_names"] = np.array([b"rnn"])
        g = f.create_group("rnn")
        names = [f"rnn/{kind}_cell/{n}:0" for n in ("kernel", "recurrent_kernel", "bias")]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        for n, shape in zip(names, ((3, G * 2), (2, G * 2), (G * 2,))):
            g.create_dataset(n, data=rng.standard_normal(shape).astype(np.float32))
    return path


@pytest.mark.parametrize("version,rule", [
    ("2.1.6", "version default"),  # standalone Keras < 2.3: hard_sigmoid
    ("2.15.0", "version default"),  # tf.keras 2.15 is >= 2.3, not "2.1": sigmoid
    ("2.21.0", "version default"),
    ("2.2.4-tf", "missing"),  # TF 1.x and TF 2.0/2.1 both wrote this, with different defaults
])
def test_weights_only_keras2_activations_come_from_a_version_rule_or_a_flag(tmp_path, version, rule):
    path = _keras2_weights_only(tmp_path / "w.h5", version)
    group = only_group(ckptsurgeon.open(path))
    assert group.provenance["recurrent_activation"].startswith(rule), group.provenance
    if rule == "missing":
        res = _cli("extract", path, "--to", "keras", "-o", tmp_path / "k.safetensors")
        assert res.exit_code == 1 and "--recurrent-activation" in res.output
        res = _cli("rnn", path, "--recurrent-activation", "sigmoid", "--activation", "tanh")
        assert "recurrent_activation: sigmoid = 1 / (1 + exp(-x))  (flag: --recurrent-activation sigmoid)" in res.output
        return
    old = tuple(int(p) for p in version.split(".")[:2]) < (2, 3)
    assert group.recurrent_activation == ("hard_sigmoid_keras2" if old else "sigmoid")
    res = _cli("rnn", path)
    assert f"Keras {version}" in res.output and ("< 2.3" if old else ">= 2.3") in res.output


def test_flags_never_override_what_the_file_states(tmp_path):
    path = _keras2_weights_only(tmp_path / "w.h5", "2.21.0", kind="gru")  # bias (6,): reset-before, from the file
    group = only_group(ckptsurgeon.open(path), options=ConvertOptions(reset_after=True))
    assert group.reset_after is False and any("--reset-after ignored" in n for n in group.notes)


# --- item 9 / 14: hard_sigmoid formulas ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keras3_hard_sigmoid_reference_matches_a_real_keras3_layer(tmp_path, kind):
    cls = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    model, path = _keras_model(tmp_path, cls(4, recurrent_activation="hard_sigmoid", return_sequences=True, name="r"))
    group = only_group(ckptsurgeon.open(path))
    assert group.recurrent_activation == "hard_sigmoid_keras3"
    x = np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32) * 3  # reach the clipped region
    want = _keras_out(model, x)
    got = run_stack(group.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    keras2 = group.cells().map(lambda c: c.with_(recurrent_activation="hard_sigmoid_keras2"))
    assert np.abs(run_stack(keras2, x.transpose(1, 0, 2)).transpose(1, 0, 2) - want).max() > 1e-3  # the formulas differ
    conv = convert_group(group, "onnx")  # HardSigmoid(alpha=1/6, beta=0.5) is relu6(x+3)/6
    assert conv.metadata["onnx"]["activations"][0] == "HardSigmoid"
    y = run_onnx(kind, {k: np.asarray(v) for k, v in conv.tensors.items()}, conv.metadata["onnx"], x.transpose(1, 0, 2),
                 runtime="onnxruntime")
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2), want, atol=1e-5)


def _keras1_file(path, kind="lstm", seed=0, n_in=3, hidden=2):
    """A Keras 1 weights file (per-gate lstm_1_W_i ...), as Keras 1's save_weights wrote it."""
    import h5py

    rng = np.random.default_rng(seed)
    letters = "icfo" if kind == "lstm" else "zrh"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"lstm_1"])
        g = f.create_group("lstm_1")
        names = [f"lstm_1_{m}_{gate}" for gate in letters for m in "WUb"]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        for n in names:
            g[n] = rng.standard_normal({"W": (n_in, hidden), "U": (hidden, hidden), "b": (hidden,)}[n.split("_")[2]]).astype(np.float32)
    return path


def _keras2_hard_sigmoid(x):
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keras1_hard_sigmoid_extracts_exactly_to_weight_targets(tmp_path, kind):
    src = _keras1_file(tmp_path / "k1.h5", kind)
    group = only_group(ckptsurgeon.open(src))
    assert group.recurrent_activation == "hard_sigmoid_keras2" and group.provenance["recurrent_activation"].startswith(
        "version default: Keras 1")
    x = np.random.default_rng(2).standard_normal((6, 2, 3)) * 3
    want = run_stack(group.cells(), x)
    # --to keras: exact weights, the activation and its formula in the output and in the report
    out = tmp_path / "k.safetensors"
    res = _cli("extract", src, "--to", "keras", "-o", out, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["checks"][0]["max_abs_diff"] == 0
    assert report["converted"][0]["output"]["formulas"]["recurrent_activation"] == "clip(0.2 * x + 0.5, 0, 1)"
    assert any("Keras 3's 'hard_sigmoid' is relu6(x + 3) / 6" in n for n in report["converted"][0]["notes"])
    stored = json.loads(ckptsurgeon.open(out).metadata["__metadata__"]["rnn:lstm_1"])
    assert stored["recurrent_activation"] == "hard_sigmoid_keras2"
    # a Keras 3 consumer, told the formula, computes what Keras 1 computed
    arrays = {r.path: r.numpy() for r in ckptsurgeon.open(out).values()}
    cls = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    layer = cls(2, recurrent_activation=_keras2_hard_sigmoid, return_sequences=True,
                **({} if kind == "lstm" else {"reset_after": False}))
    layer.build((2, 6, 3))
    layer.set_weights([arrays[f"lstm_1/cell/{n}"] for n in ("kernel", "recurrent_kernel", "bias")])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x.transpose(1, 0, 2).astype(np.float32))),
                               want.transpose(1, 0, 2), atol=1e-5)
    # --to onnx: HardSigmoid alpha 0.2 beta 0.5, run by a real ONNX runtime
    conv = convert_group(group, "onnx")
    attrs = conv.metadata["onnx"]
    assert attrs["activations"][0] == "HardSigmoid" and attrs["activation_alpha"] == [0.2] and attrs["activation_beta"] == [0.5]
    y = run_onnx(kind, {k: np.asarray(v) for k, v in conv.tensors.items()}, attrs, x, runtime="onnxruntime")
    np.testing.assert_allclose(y[:, 0], want, atol=1e-5)
    # --to gates: exact, described
    res = _cli("extract", src, "--to", "gates", "-o", tmp_path / "g.npz")
    assert res.exit_code == 0 and "verified lstm_1: max abs diff 0" in res.output, res.output
    assert only_group(ckptsurgeon.open(tmp_path / "g.npz")).recurrent_activation == "hard_sigmoid_keras2"
    # torch / tf1 cannot compute it: refused unless --allow-approx, which measures the error
    for target in ("torch", "tf1"):
        if kind == "gru" and target == "torch":
            continue  # Keras 1 GRUs are reset-before: refused for that reason first
        res = _cli("extract", src, "--to", target, "-o", tmp_path / f"{target}.safetensors")
        assert res.exit_code == 1 and "--allow-approx" in res.output and "clip(0.2 * x + 0.5, 0, 1)" in res.output
    res = _cli("extract", src, "--to", "tf1", "-o", tmp_path / "tf1.safetensors", "--allow-approx")
    assert res.exit_code == 0 and "max abs output difference" in res.output, res.output


def test_graft_keras2_hard_sigmoid_into_keras3_hard_sigmoid_template_is_refused(tmp_path):
    model, _ = _keras_model(tmp_path, keras.layers.LSTM(2, recurrent_activation="hard_sigmoid", name="lstm_1"), (6, 3))
    src = _keras1_file(tmp_path / "k1.h5")
    out = tmp_path / "out.keras"
    res = _cli("graft", src, "--into", tmp_path / "m.keras", "-o", out)
    assert res.exit_code == 1 and "hard_sigmoid_keras2" in res.output and "hard_sigmoid_keras3" in res.output
    assert "--allow-approx" in res.output and not out.exists()
    res = _cli("graft", src, "--into", tmp_path / "m.keras", "-o", out, "--allow-approx")
    assert res.exit_code == 0 and "max abs output difference" in res.output, res.output
    sigmoid_model, _ = _keras_model(tmp_path, keras.layers.LSTM(2, name="lstm_1"), (6, 3), name="s")
    res = _cli("graft", src, "--into", tmp_path / "s.keras", "-o", tmp_path / "s_out.keras")
    assert res.exit_code == 1 and "sigmoid" in res.output  # a sigmoid template differs too


# --- item 5: every output format keeps what a reader needs ----------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5", ".pt"])
def test_every_writer_keeps_metadata_out_of_the_tensors(tmp_path, suffix):
    out = tmp_path / f"m{suffix}"
    ckptsurgeon.save({"a/w": np.ones((2, 3), np.float32)}, out, metadata={"rnn:a": '{"x": 1}', "note": "kept"})
    index = ckptsurgeon.open(out)
    meta = dict(index.metadata["__metadata__"])
    meta.pop("tensor_sha256", None)  # the safetensors writer adds the digest of each tensor it wrote
    assert list(index) == ["a/w"] and meta == {"rnn:a": '{"x": 1}', "note": "kept"}


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5", ".pt"])
def test_onnx_target_keeps_the_gru_family_in_every_format(tmp_path, suffix):
    out = tmp_path / f"gru{suffix}"
    res = _cli("extract", TF / "tf1_cells", "-s", "bigru", "--to", "onnx", "-o", out)
    assert res.exit_code == 0 and "verified bigru" in res.output, res.output
    group = only_group(ckptsurgeon.open(out))
    assert group.reset_after is False and group.provenance["reset_after"].startswith("file: ckptsurgeon metadata")
    res = _cli("verify", TF / "tf1_cells", out, "-s", "bigru")
    assert res.exit_code == 0 and "ok" in res.output, res.output


def test_npz_metadata_reads_with_numpy_alone(tmp_path):
    out = tmp_path / "gru.npz"
    assert _cli("extract", TF / "tf1_cells", "-s", "bigru", "--to", "onnx", "-o", out).exit_code == 0
    with np.load(out, allow_pickle=False) as z:
        described = json.loads(json.loads(str(z["__metadata__"]))["rnn:bigru"])
    assert described["onnx"]["linear_before_reset"] == 0


def test_pt_output_still_loads_strictly(tmp_path):
    torch.manual_seed(6)
    module = torch.nn.GRU(3, 2)
    out = tmp_path / "o.pt"
    assert _cli("extract", _torch_file(tmp_path, module), "--to", "torch", "--rename", "rnn/=", "-o", out).exit_code == 0
    state = torch.load(out, weights_only=True)
    torch.nn.GRU(3, 2).load_state_dict(state, strict=True)
    assert "rnn:" in state._metadata["ckptsurgeon"]  # the description rides in _metadata, keyed by the renamed scope


# --- verify by default ------------------------------------------------------------------------------------

def test_verification_failure_writes_nothing(tmp_path, monkeypatch):
    from ckptsurgeon.rnn import convert as convert_mod

    torch.manual_seed(7)
    src = _torch_file(tmp_path, torch.nn.LSTM(3, 2))
    target = convert_mod.TARGETS["keras"]

    def broken(stack, group, options):
        out = target.write(stack, group, options)
        out["cell/bias"] = out["cell/bias"] + 0.5
        return out

    monkeypatch.setitem(convert_mod.TARGETS, "keras", convert_mod._Target(**{**target.__dict__, "write": broken}))
    out = tmp_path / "k.safetensors"
    res = _cli("extract", src, "--to", "keras", "-o", out)
    assert res.exit_code == 1 and "differ by" in res.output and not out.exists()
    res = _cli("extract", src, "--to", "keras", "-o", out, "--no-verify")
    assert res.exit_code == 0 and "verified" not in res.output and out.exists()
    with pytest.raises(ckptsurgeon.CheckpointError, match="differ by"):
        ckptsurgeon.extract(src, tmp_path / "api.safetensors", to="keras")


def test_load_into_verifies_by_default(tmp_path, monkeypatch):
    from ckptsurgeon.torch import load_into

    torch.manual_seed(8)
    src = torch.nn.LSTM(3, 2)
    path = _torch_file(tmp_path, src)
    model = torch.nn.Module()
    model.rnn = torch.nn.LSTM(3, 2)
    report = load_into(model, path)
    assert report.checks and report.checks[0].ok and report.checks[0].max_abs_diff == 0
    import importlib

    graft_mod = importlib.import_module("ckptsurgeon.graft")

    real = graft_mod.convert_group

    def tampered(*args, **kw):
        conv = real(*args, **kw)
        conv.tensors = {k: v + 0.25 if "bias_hh" in k else v for k, v in conv.tensors.items()}
        return conv

    monkeypatch.setattr(graft_mod, "convert_group", tampered)
    fresh = torch.nn.Module()
    fresh.rnn = torch.nn.LSTM(3, 2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = load_into(fresh, path)
    assert report.loaded == [] and "computes outputs" in report.mismatched[0]
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert load_into(fresh, path, verify_atol=None).loaded  # verification off: the tampered values load


def test_keras_versions_compare_as_versions():
    from ckptsurgeon.rnn.keras_facts import parse_version

    assert parse_version("2.15.0") > parse_version("2.3") > parse_version("2.2.4-tf") > parse_version("2.1.6")
    assert parse_version("3.0.0.dev2024") == (3, 0, 0) and parse_version("") is None


def test_keras_load_into_reports_the_verification(tmp_path):
    from ckptsurgeon.keras import load_into

    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((6, 5)), keras.layers.GRU(4, return_sequences=True, name="g")])
    torch.manual_seed(9)
    src = torch.nn.GRU(5, 4, batch_first=True)
    report = load_into(model, _torch_file(tmp_path, src, "g"))
    assert len(report.checks) == 1 and report.checks[0].ok and report.checks[0].max_abs_diff < 1e-6
    x = np.random.default_rng(3).standard_normal((2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(_keras_out(model, x), src(torch.tensor(x))[0].detach().numpy(), atol=1e-5)
    hard = keras.Sequential([keras.Input((6, 5)), keras.layers.GRU(4, recurrent_activation="hard_sigmoid", name="g")])
    with pytest.raises(ckptsurgeon.PlanError, match="hard_sigmoid_keras3"):  # its config states it: no silent swap
        load_into(hard, _torch_file(tmp_path, src, "g"))


def test_partial_selections_are_refused_not_passed_through(tmp_path):
    grid = TF.parent / "tensorflow" / "tf1_grid" / "bi_multi2_lstm" / "model.ckpt"
    res = _cli("extract", grid, "-s", "bidirectional_rnn/bw", "--to", "torch", "-o", tmp_path / "bw.pt")
    assert res.exit_code == 1 and "only the backward (bw) cells" in res.output and not (tmp_path / "bw.pt").exists()
    res = _cli("extract", grid, "-s", "bidirectional_rnn/fw", "--to", "torch", "-o", tmp_path / "fw.pt")
    assert res.exit_code == 0 and "verified" in res.output, res.output  # the forward stack alone is a plain stack
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    module.load_state_dict({k.split(".")[-1]: v for k, v in torch.load(tmp_path / "fw.pt", weights_only=True).items()})
    ref = np.load(grid.parent / "reference.npz")
    np.testing.assert_allclose(module(torch.tensor(ref["out/x"]))[0].detach().numpy(), ref["out/outputs/fw"], atol=1e-5)
    res = _cli("extract", TF / "tf1_misc", "--to", "torch", "-o", tmp_path / "none.pt")
    assert res.exit_code == 1 and "no recurrent group" in res.output
