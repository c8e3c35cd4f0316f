"""The TensorFlow checkpoint writer, proven by TensorFlow itself (run in .tfvenv): byte-identical to what
tf.raw_ops.SaveV2 writes for the same variables, read back by tf.train.load_checkpoint, and restored into
real TF1 cells (init_from_checkpoint, Saver) that then compute what the source computed."""
from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

from ckptsurgeon import api
from ckptsurgeon.cli import cli as main
from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats.tensorflow.writer import write_bundle
from tfenv import run_tf, save_x

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _variables(n_many: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {
        "a/kernel": rng.standard_normal((3, 5)).astype(np.float32),
        "a/bias": rng.standard_normal(5).astype(np.float32),
        "f64": rng.standard_normal((2, 2)),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "i64": np.arange(-2, 2, dtype=np.int64),
        "bool": np.array([True, False, True]),
        "half": rng.standard_normal(3).astype(np.float16),
        "bf16": rng.standard_normal(4).astype(ml_dtypes.bfloat16),
        "u8": np.arange(3, dtype=np.uint8),
        "i8": np.arange(-2, 2, dtype=np.int8),
        "i16": np.arange(-2, 2, dtype=np.int16),
        "u16": np.arange(3, dtype=np.uint16),
        "c64": (rng.standard_normal(2) + 1j).astype(np.complex64),
        "c128": rng.standard_normal(2) - 2j,
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "big_endian": np.arange(4, dtype=">f4"),
        "unicode/é": np.ones(2, np.float32),
    }
    for i in range(n_many):  # long shared prefixes: several 256 KiB blocks and index separators
        out[f"encoder/stack/layer_{i:05d}/attention/output/dense/kernel"] = rng.standard_normal(2).astype(np.float32)
    return out


def test_bundle_is_byte_identical_to_tensorflows(tmp_path: Path) -> None:
    values = _variables(20000)
    as_npz = {k: (v.view(np.uint16) if k == "bf16" else v.astype("<f4") if k == "big_endian" else v)
              for k, v in values.items()}
    np.savez(tmp_path / "v.npz", **as_npz)
    (tmp_path / "tf").mkdir()
    (tmp_path / "ours").mkdir()
    run_tf("savev2", tmp_path, npz=str(tmp_path / "v.npz"), prefix=str(tmp_path / "tf" / "model.ckpt"), bf16=["bf16"])
    files = write_bundle(values, str(tmp_path / "ours" / "model.ckpt"))
    assert [os.path.basename(f) for f in files] == ["model.ckpt.data-00000-of-00001", "model.ckpt.index", "checkpoint"]
    index = (tmp_path / "ours" / "model.ckpt.index").read_bytes()
    assert len(index) > 3 * 256 * 1024  # several data blocks: separators and the index block are exercised
    assert index == (tmp_path / "tf" / "model.ckpt.index").read_bytes()
    for name in ("model.ckpt.data-00000-of-00001",):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "tf" / name).read_bytes()
    assert (tmp_path / "ours" / "checkpoint").read_text().startswith('model_checkpoint_path: "model.ckpt"\n')


def test_sharded_bundle_and_every_dtype_read_by_tensorflow(tmp_path: Path) -> None:
    values = _variables(10)
    files = write_bundle(values, str(tmp_path / "model.ckpt"), max_shard_size=40)
    shards = [f for f in files if ".data-" in f]
    assert len(shards) > 3 and shards[-1].endswith(f"-of-{len(shards):05d}")
    got = run_tf("load", tmp_path, prefix=str(tmp_path / "model.ckpt"))
    assert set(got) == set(values)
    for key, want in values.items():
        have = got[key].view(ml_dtypes.bfloat16) if key == "bf16" else got[key]
        assert have.dtype == want.dtype.newbyteorder("=") and have.shape == want.shape, key
        assert np.array_equal(have, want.astype(want.dtype.newbyteorder("="))), key
    # and our own reader agrees with TensorFlow's, shard by shard
    index = api.open(tmp_path / "model.ckpt")
    assert all(np.array_equal(index[k].numpy(), v) for k, v in values.items() if k != "unicode/é")


def _extract(*args: str) -> str:
    result = CliRunner().invoke(main, ["extract", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_seed_scenario_tf1_lstmcell_into_a_tf1_graph(tmp_path: Path) -> None:
    """The hand-built TF1 LSTMcell/* checkpoint -> an LSTMCell graph, restored three ways; TF's own forward
    pass of the hand-built cell (recorded when the fixture was made) is the reference."""
    ref = np.load(FIXTURES / "tensorflow" / "tf1_lstmcell" / "reference.npz")
    x = save_x(tmp_path, np.swapaxes(ref["out/x"], 0, 1).copy())
    want = np.swapaxes(ref["out/h"], 0, 1)
    src = str(FIXTURES / "tensorflow" / "tf1_lstmcell")
    (tmp_path / "a").mkdir()
    out = _extract(src, "-s", "LSTMcell/*", "--to", "tf1", "--rename", "LSTMcell/=", "-o", str(tmp_path / "a" / "model.ckpt"))
    assert "TensorFlow checkpoint" in out and "verified LSTMcell" in out
    prefix = str(tmp_path / "a" / "model.ckpt")
    lstm = {"scope": "", "kind": "lstm", "hidden": 4}
    got = run_tf("tf1", tmp_path, x=x, prefix=prefix, restore="init_from_checkpoint",
                 assignment_map={"rnn/": "rnn/"}, nets=[lstm])
    assert list(got["__variables__"]) == ["rnn/lstm_cell/bias", "rnn/lstm_cell/kernel"]
    np.testing.assert_allclose(got[""], want, atol=1e-6)
    # BasicLSTMCell names its variables basic_lstm_cell: init_from_checkpoint's assignment_map places them
    got = run_tf("tf1", tmp_path, x=x, prefix=prefix, restore="init_from_checkpoint",
                 assignment_map={"rnn/lstm_cell/": "rnn/basic_lstm_cell/"}, nets=[{**lstm, "kind": "basic_lstm"}])
    np.testing.assert_allclose(got[""], want, atol=1e-6)
    # --rename puts them under the new graph's own scope, where a plain Saver finds them
    (tmp_path / "b").mkdir()
    _extract(src, "-s", "LSTMcell/*", "--to", "tf1", "--rename", "LSTMcell/=encoder/", "-o", str(tmp_path / "b" / "enc"))
    got = run_tf("tf1", tmp_path, x=x, prefix=str(tmp_path / "b" / "enc"), restore="saver",
                 nets=[{**lstm, "scope": "encoder"}])
    np.testing.assert_allclose(got["encoder"], want, atol=1e-6)


@pytest.mark.parametrize("layers,bidirectional,proj", [(1, False, 0), (2, False, 0), (1, True, 0), (2, True, 0),
                                                       (1, False, 3)])
def test_torch_lstm_into_tf1_cells(tmp_path: Path, layers: int, bidirectional: bool, proj: int) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(layers * 10 + bidirectional + proj)
    lstm = torch.nn.LSTM(3, 5, num_layers=layers, bidirectional=bidirectional, batch_first=True, proj_size=proj)
    torch.save({"rnn": lstm.state_dict()}, tmp_path / "m.pt")
    xb = np.random.default_rng(1).standard_normal((2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        want = lstm(torch.from_numpy(xb))[0].numpy()
    _extract(str(tmp_path / "m.pt"), "--to", "tf1", "--rename", "rnn/=", "-o", str(tmp_path / "model.ckpt"))
    net = {"scope": "", "kind": "lstm", "hidden": 5, "layers": layers, "bidirectional": bidirectional}
    if proj:
        net["num_proj"] = proj
    got = run_tf("tf1", tmp_path, x=save_x(tmp_path, xb), prefix=str(tmp_path / "model.ckpt"), restore="saver", nets=[net])
    np.testing.assert_allclose(got[""], want, atol=1e-5)


def test_tf1_gru_and_stack_round_trip_through_our_writer(tmp_path: Path) -> None:
    """TF-written GRUCell (bidirectional) and MultiRNNCell of BasicLSTMCell -> --to tf1 -> TF1 restores them
    and reproduces the outputs it recorded when it made the fixture."""
    fixture = FIXTURES / "tensorflow" / "tf1_cells"
    ref = np.load(fixture / "reference.npz")
    _extract(str(fixture), "-s", "bigru/**", "-s", "stack/**", "--to", "tf1", "-o", str(tmp_path / "model.ckpt"))
    # our tf1 target names a MultiRNNCell's cells lstm_cell (LSTMCell computes what BasicLSTMCell does)
    nets = [{"scope": "bigru", "kind": "gru", "hidden": 4, "bidirectional": True},
            {"scope": "stack", "kind": "lstm", "hidden": 4, "layers": 2}]
    got = run_tf("tf1", tmp_path, x=save_x(tmp_path, ref["out/x"]), prefix=str(tmp_path / "model.ckpt"), restore="saver",
                 nets=nets)
    np.testing.assert_allclose(got["bigru"], np.concatenate([ref["out/bigru_fw"], ref["out/bigru_bw"]], -1), atol=1e-5)
    np.testing.assert_allclose(got["stack"], ref["out/stack"], atol=1e-5)


@pytest.mark.parametrize("name,needle", [
    ("x.ckpt", "pass --format tensorflow"),
    ("x.weights.h5", "graft SRC --into template.weights.h5"),
    ("m.keras", "ckptsurgeon.keras.load_into"),
    ("m.onnx", "--into model.onnx"),
    ("prefix", "--format tensorflow"),
])
def test_outputs_a_framework_would_not_load_are_refused(tmp_path: Path, name: str, needle: str) -> None:
    src = str(FIXTURES / "tensorflow" / "tf1_lstmcell")
    result = CliRunner().invoke(main, ["extract", src, "-s", "LSTMcell/*", "-o", str(tmp_path / name)])
    assert result.exit_code == 1 and needle in result.output, result.output
    assert result.output.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_format_tensorflow_and_its_refusals(tmp_path: Path) -> None:
    src = str(FIXTURES / "tensorflow" / "tf1_lstmcell")
    _extract(src, "-s", "LSTMcell/*", "--format", "tensorflow", "-o", str(tmp_path / "x.ckpt"))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "x.ckpt.data-00000-of-00001", "x.ckpt.index"]
    again = CliRunner().invoke(main, ["extract", src, "-s", "LSTMcell/*", "--format", "tensorflow", "-o", str(tmp_path / "x.ckpt")])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    # a second prefix in the same folder leaves the state file naming the first one
    _extract(src, "-s", "LSTMcell/*", "--format", "tensorflow", "-o", str(tmp_path / "y.ckpt"))
    assert '"x.ckpt"' in (tmp_path / "checkpoint").read_text()
    # never over an input
    with pytest.raises(OutputError, match="is an input"):
        api.extract(str(tmp_path / "x.ckpt"), tmp_path / "x.ckpt", format="tensorflow", force=True)


def test_seed_scenario_into_a_tf2_keras_lstm_and_an_nn_lstm(tmp_path: Path) -> None:
    """The same hand-built TF1 cell (b) into a tf.keras 2 LSTM's own checkpoint (save_weights, then load_weights)
    and (c) into nn.LSTM; both against TF's own forward pass of the hand-built cell."""
    torch = pytest.importorskip("torch")
    ref = np.load(FIXTURES / "tensorflow" / "tf1_lstmcell" / "reference.npz")
    xb = np.swapaxes(ref["out/x"], 0, 1).copy()
    want = np.swapaxes(ref["out/h"], 0, 1)
    src = str(FIXTURES / "tensorflow" / "tf1_lstmcell")
    spec = {"input": 3, "layers": [{"kind": "lstm", "units": 4}], "x": save_x(tmp_path, xb)}
    (tmp_path / "tpl").mkdir()
    (tmp_path / "out").mkdir()
    run_tf("keras", tmp_path, **spec, template=str(tmp_path / "tpl" / "ckpt"))
    out = _extract_like_graft(src, str(tmp_path / "tpl"), str(tmp_path / "out" / "ckpt"))
    assert "verified LSTMcell -> layer_with_weights-0" in out
    got = run_tf("keras", tmp_path, **spec, prefix=str(tmp_path / "out" / "ckpt"), seed=9)
    np.testing.assert_allclose(got["y"], want, atol=1e-6)
    _extract(src, "-s", "LSTMcell/*", "--to", "torch", "--rename", "LSTMcell/=", "-o", str(tmp_path / "lstm.pt"),
             "--format", "pt")
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    lstm.load_state_dict(torch.load(tmp_path / "lstm.pt"), strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(lstm(torch.from_numpy(xb))[0].numpy(), want, atol=1e-6)


def _extract_like_graft(source: str, template: str, out: str) -> str:
    result = CliRunner().invoke(main, ["graft", source, "--into", template, "-o", out])
    assert result.exit_code == 0, result.output
    return result.output


def test_tf1_cells_that_differ_and_user_scoped_bidirectionals(tmp_path: Path) -> None:
    """bidirectional_dynamic_rnn(..., scope='BiLSTM') names its halves BiLSTM/fw, BiLSTM/bw: one bidirectional
    group whose backward half runs backwards (TF's own outputs); a MultiRNNCell whose second cell has peepholes
    or a projection, and a bidirectional pair with peepholes on one side only, are refused, never read with the
    first cell's facts."""
    torch = pytest.importorskip("torch")
    xb = np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32)
    x = save_x(tmp_path, xb)
    nets = [{"scope": "enc", "kind": "lstm", "hidden": 4, "bidirectional": True, "bidi_scope": "BiLSTM"},
            {"scope": "peep", "kind": "lstm", "hidden": 4, "layers": 2, "per_layer": [{}, {"peepholes": True}]},
            {"scope": "proj", "kind": "lstm", "hidden": 4, "layers": 2, "per_layer": [{}, {"num_proj": 2}]},
            {"scope": "half", "kind": "lstm", "hidden": 4, "bidirectional": True, "bw": {"peepholes": True}}]
    (tmp_path / "tf").mkdir()
    got = run_tf("tf1", tmp_path, x=x, nets=nets, save_template=str(tmp_path / "tf" / "model.ckpt"), random_biases=True)
    src = str(tmp_path / "tf" / "model.ckpt")
    assert [g.scope for g in _groups(src)] == ["enc/BiLSTM", "half", "peep", "proj"]
    _extract(src, "-s", "enc/**", "--to", "torch", "-o", str(tmp_path / "bi.safetensors"))
    from safetensors.numpy import load_file

    lstm = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    lstm.load_state_dict({k.split(".")[-1]: torch.from_numpy(v) for k, v in load_file(tmp_path / "bi.safetensors").items()})
    with torch.no_grad():
        np.testing.assert_allclose(lstm(torch.from_numpy(xb))[0].numpy(), got["enc"], atol=1e-5)
    for scope, needle in (("peep", "layer 1: peepholes"), ("proj", "num_proj=2"), ("half", "layer 0 bw: peepholes")):
        result = CliRunner().invoke(main, ["extract", src, "-s", f"{scope}/**", "--to", "onnx", "-o", str(tmp_path / "x.npz")])
        assert result.exit_code == 1 and "its cells differ" in result.output and needle in result.output, result.output


def _groups(path: str) -> list:
    from ckptsurgeon.rnn import recognize

    return recognize(api.open(path))


def test_tensors_copied_from_pt_and_safetensors_files_read_back_in_tensorflow(tmp_path: Path) -> None:
    """Byte-exact tensors of a torch.save file and a safetensors file are copied by the kernel while a thread
    checksums them: TensorFlow reads every one back equal, crc32c checked, across shards."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tensors = {"enc.w": torch.randn(300, 200), "enc.b": torch.randn(200), "half": torch.randn(64, 64).half(),
               "steps": torch.arange(10), "flag": torch.tensor([True, False]), "bf": torch.randn(33).bfloat16()}
    torch.save(tensors, tmp_path / "m.pt")
    from safetensors.torch import save_file

    save_file({k.replace(".", "/"): v for k, v in tensors.items()}, tmp_path / "m.safetensors")
    for name in ("m.pt", "m.safetensors"):
        prefix = tmp_path / name.replace(".", "_") / "model.ckpt"
        prefix.parent.mkdir()
        _extract(str(tmp_path / name), "--format", "tensorflow", "--max-shard-size", "100000", "-o", str(prefix))
        got = run_tf("load", tmp_path, prefix=str(prefix))
        assert len([f for f in os.listdir(prefix.parent) if ".data-" in f]) > 1
        for key, t in tensors.items():
            have = got[key if name == "m.pt" else key.replace(".", "/")]
            want = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
            assert have.dtype == want.dtype and np.array_equal(have, want), (name, key)
