"""TensorFlow Lite: models written by the real TFLite converter (fixtures/tflite, recorded by make_tflite_fixtures.py
with TF 2.21) read without TensorFlow exactly as TF's own schema code and ``tf.lite.Interpreter`` read them, lazily;
damaged files refused."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import CheckpointError, FormatError
from ckptsurgeon.formats import detect
from ckptsurgeon.formats.tflite import flatbuf, reader

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tflite"
CASES = ("dense", "dense_int8", "lstm", "lstm_dynamic", "dense_offset")
TYPE_DTYPES = {0: "float32", 2: "int32", 9: "int8"}


def _expected(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    info = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    with np.load(FIXTURES / f"{name}.expected.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return info, arrays


def _constants(info: dict) -> list[tuple[int, dict]]:
    return [(s, t) for s, sub in enumerate(info["subgraphs"]) for t in sub["tensors"] if t["has_data"]]


@pytest.mark.parametrize("name", CASES)
def test_lists_every_constant_as_tensorflow_reads_it(name):
    path = FIXTURES / f"{name}.tflite"
    assert detect(str(path)) == "tflite"
    index = ckptsurgeon.open(path)
    info, arrays = _expected(name)
    consts = _constants(info)
    assert len(consts) == len(index) > 0
    for s, t in consts:  # subgraph 0 only in these models: paths are TF's tensor names
        ref = index[t["name"]]
        got = ref.numpy()
        want = arrays[f"s{s}t{t['index']}"]  # tf.lite.Interpreter.get_tensor
        assert ref.shape == tuple(t["shape"]) == want.shape
        assert got.dtype == want.dtype and got.dtype.name == TYPE_DTYPES[t["type"]] == t["interpreter"]["dtype"]
        assert got.tobytes() == want.tobytes(), t["name"]
        q = index.metadata.get("quantization", {}).get(t["name"])
        if t["scale"]:
            # what TF's schema code and the interpreter report (float32 scales, as stored)
            assert np.array_equal(np.float32(q["scale"]), np.float32(t["scale"]))
            assert np.array_equal(np.float32(q["scale"]), np.float32(t["interpreter"]["scales"]))
            assert q["zero_point"] == t["zero_point"] == t["interpreter"]["zero_points"]
            assert q["quantized_dimension"] == t["quantized_dimension"] == t["interpreter"]["quantized_dimension"]
        else:
            assert q is None
    dataless = sum(len(sub["tensors"]) for sub in info["subgraphs"]) - len(consts)
    assert any(f"{dataless} tensors without data" in n for n in index.notes)
    ops = [reader.S.BUILTIN_OPS[c] for c in info["subgraphs"][0]["operators"]]
    assert index.metadata["subgraphs"][0]["operators"] == ops
    assert index.metadata["tflite.version"] == info["version"]


def test_int8_models_are_quantized_as_the_interpreter_says():
    index = ckptsurgeon.open(FIXTURES / "dense_int8.tflite")
    quant = index.metadata["quantization"]
    assert {index[p].dtype.name for p in quant} == {"int8", "int32"}  # weights int8, biases int32
    weights = [p for p in quant if index[p].dtype.name == "int8"]
    assert all(len(quant[p]["scale"]) == index[p].shape[0] for p in weights)  # per output channel
    assert any("quantized tensors" in n for n in index.notes)
    dyn = ckptsurgeon.open(FIXTURES / "lstm_dynamic.tflite")
    assert sum(dyn[p].dtype.name == "int8" for p in dyn.metadata["quantization"]) == 8  # the LSTM's gate matrices


def test_large_model_layout_reads_buffers_after_the_flatbuffer():
    """``_experimental_use_buffer_offset``: Buffer.offset/size point past the flatbuffer; same tensors as ``dense``."""
    index = ckptsurgeon.open(FIXTURES / "dense_offset.tflite")
    data = (FIXTURES / "dense_offset.tflite").read_bytes()
    info, arrays = _expected("dense_offset")
    for s, t in _constants(info):
        ref = index[t["name"]]
        assert ref.loader is None and data[ref.offset:ref.offset + ref.nbytes] == arrays[f"s{s}t{t['index']}"].tobytes()
    dense = ckptsurgeon.open(FIXTURES / "dense.tflite")
    assert sorted(r.shape for r in index.values()) == sorted(r.shape for r in dense.values())


def test_cli_ls_tree_extract_byte_exact(tmp_path):
    runner = CliRunner()
    path = str(FIXTURES / "lstm_dynamic.tflite")
    res = runner.invoke(cli, ["ls", path])
    assert res.exit_code == 0 and "tfl.pseudo_qconst" in res.output and "int8" in res.output, res.output
    res = runner.invoke(cli, ["ls", "--json", path])
    assert res.exit_code == 0 and json.loads(res.output)["metadata"]["quantization"]
    assert runner.invoke(cli, ["tree", path]).exit_code == 0
    out = tmp_path / "all.safetensors"
    res = runner.invoke(cli, ["extract", path, "-s", "**", "-o", str(out)])
    assert res.exit_code == 0, res.output
    info, arrays = _expected("lstm_dynamic")
    got = {r.key: r for r in ckptsurgeon.open(out).values()}  # safetensors keys: the paths as written
    for s, t in _constants(info):
        assert got[t["name"]].numpy().tobytes() == arrays[f"s{s}t{t['index']}"].tobytes()


def _patch_big_tensor(tmp_path: Path, mib: int = 4) -> tuple[Path, int]:
    """``dense_offset`` with its first weight grown to ``mib`` MiB appended after the file (shape and buffer
    offset/size rewritten in place), for a listing that must not read it."""
    data = bytearray((FIXTURES / "dense_offset.tflite").read_bytes())
    buf = flatbuf.Buffer(ckptsurgeon.source.open_source(str(FIXTURES / "dense_offset.tflite")))
    model = flatbuf.root(buf, b"TFL3")
    sub = model.tables(2, "subgraphs")[0]
    t = next(t for t in sub.tables(0, "tensors") if t.string(3, "name").endswith("MatMul"))
    shape_at, rank = t.vector(0, 4, "shape")
    assert rank == 2
    n = mib << 18  # float32 elements
    struct.pack_into("<2i", data, shape_at, 1024, n // 1024)
    entry = model.tables(4, "buffers")[int(t.scalar(2, "I"))]
    off_at, size_at = entry.pos + entry._offset(1), entry.pos + entry._offset(2)
    struct.pack_into("<Q", data, off_at, len(data))
    struct.pack_into("<Q", data, size_at, 4 * n)
    big = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    path = tmp_path / "big.tflite"
    path.write_bytes(bytes(data) + big.tobytes())
    return path, big.nbytes


def test_listing_reads_no_tensor_bytes(tmp_path, monkeypatch):
    path, nbytes = _patch_big_tensor(tmp_path)
    reads = []
    real = flatbuf.Buffer.read

    def count(self, pos, n, what):
        out = real(self, pos, n, what)
        reads.append(self.bytes_read)
        return out

    monkeypatch.setattr(flatbuf.Buffer, "read", count)
    index = ckptsurgeon.open(path)
    big = next(r for r in index.values() if r.nbytes == nbytes)
    assert max(reads) <= 3 * flatbuf.PAGE < nbytes  # the flatbuffer's pages, never the 4 MiB
    assert big.numpy().nbytes == nbytes


def test_damaged_files_are_refused(tmp_path):
    data = (FIXTURES / "dense_int8.tflite").read_bytes()
    bad = tmp_path / "bad.tflite"
    for cut in (12, 100, len(data) // 2, len(data) - 8):
        bad.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            ckptsurgeon.open(bad)
    huge = bytearray(data)
    struct.pack_into("<I", huge, 0, len(data) * 4)  # the root table outside the file
    bad.write_bytes(bytes(huge))
    with pytest.raises(FormatError, match="outside the file"):
        ckptsurgeon.open(bad)


def test_mutated_files_fail_only_with_checkpoint_errors(tmp_path):
    """1,000 seeded mutants of the real files: each lists, or is refused with a CheckpointError; nothing else."""
    rng = random.Random(24)
    originals = [(FIXTURES / f"{n}.tflite").read_bytes() for n in CASES]
    bad = tmp_path / "m.tflite"
    outcomes = {"listed": 0, "refused": 0}
    for k in range(1000):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(8, len(data))
            if rng.random() < 0.5:
                data[at] = rng.randrange(256)
            else:
                struct.pack_into("<I", data, at - at % 4, rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32))))
        bad.write_bytes(bytes(data))
        try:
            index = ckptsurgeon.open(bad)
            for ref in index.values():
                ref.numpy()
            outcomes["listed"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert sum(outcomes.values()) == 1000 and outcomes["listed"] > 50 and outcomes["refused"] > 50, outcomes


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _run_lstm_op(index, op: dict, x: np.ndarray) -> np.ndarray:
    """The op's per-gate tensors as read (dequantized where quantized), computed as TFLite's kernel does."""
    quant = index.metadata.get("quantization", {})
    names = dict(zip(reader.S.LSTM_INPUTS, op["inputs"]))

    def arr(role):
        path = names[role]
        a = index[path].numpy().astype(np.float64)
        q = quant.get(path)
        if q is not None:
            scale, zero = np.asarray(q["scale"]), np.asarray(q["zero_point"])
            shape = [-1 if d == q["quantized_dimension"] else 1 for d in range(a.ndim)] if len(scale) > 1 else [1] * a.ndim
            a = (a - zero.reshape(shape)) * scale.reshape(shape)
        return a

    gates = "input forget cell output".split()
    W = {g: arr(f"input_to_{g}_weights") for g in gates}  # (H, in): W @ x
    U = {g: arr(f"recurrent_to_{g}_weights") for g in gates}
    b = {g: arr(f"{g}_gate_bias") for g in gates}
    clip = op["options"]["cell_clip"]
    batch, steps, _ = x.shape
    H = b["input"].shape[0]
    h, c, out = np.zeros((batch, H)), np.zeros((batch, H)), []
    for t in range(steps):
        pre = {g: x[:, t] @ W[g].T + h @ U[g].T + b[g] for g in gates}
        c = _sigmoid(pre["forget"]) * c + _sigmoid(pre["input"]) * np.tanh(pre["cell"])
        if clip:
            c = np.clip(c, -clip, clip)
        h = _sigmoid(pre["output"]) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


@pytest.mark.parametrize("name,atol", [("lstm", 1e-5), ("lstm_dynamic", 0.01)])
def test_lstm_op_inputs_and_options_compute_the_interpreter_forward(name, atol):
    """The reader's ``recurrent_ops`` (per-gate tensors by position, cell_clip, activation) are what TFLite computes:
    float exactly (1e-5); dynamic-range int8 within the error of quantizing the inputs on the fly."""
    index = ckptsurgeon.open(FIXTURES / f"{name}.tflite")
    (op,) = index.metadata["recurrent_ops"]
    assert op["op"] == "UNIDIRECTIONAL_SEQUENCE_LSTM" and op["options_stated"]
    assert op["options"]["fused_activation_function"] == "tanh" and op["options"]["time_major"] is False
    assert op["options"]["cell_clip"] == 10.0  # the converter's fused Keras LSTM clips its cell state
    absent = [r for r, p in zip(reader.S.LSTM_INPUTS, op["inputs"]) if p is None]
    assert absent == ["cell_to_input_weights", "cell_to_forget_weights", "cell_to_output_weights", "projection_weights",
                      "projection_bias"] + [f"{g}_layer_norm_coefficients" for g in ("input", "forget", "cell", "output")]
    fwd = np.load(FIXTURES / f"{name}.forward.npz")
    got = _run_lstm_op(index, op, fwd["x"].astype(np.float64))
    np.testing.assert_allclose(got, fwd["lstm"], atol=atol, rtol=0)  # dynamic: 2e-3 off (raw int8 values: 1.3)


@pytest.mark.parametrize("name,atol", [("lstm", 1e-5), ("lstm_dynamic", 0.01)])
def test_rnn_reads_the_lstm_op_as_the_interpreter_computes_it(name, atol):
    """`rnn` finds the UNIDIRECTIONAL_SEQUENCE_LSTM op's group (facts from the op: tanh, cell_clip 10); its cells run
    by ckptsurgeon's reference give the TFLite interpreter's recorded output sequence."""
    from ckptsurgeon.rnn.convert import ConvertOptions, refusals
    from ckptsurgeon.rnn.recognize import recognize
    from ckptsurgeon.rnn.reference import run_stack

    index = ckptsurgeon.open(FIXTURES / f"{name}.tflite")
    (group,) = recognize(index)
    (op,) = index.metadata["recurrent_ops"]
    assert group.variant.startswith("TFLite UNIDIRECTIONAL_SEQUENCE_LSTM") and group.cell_clip == 10.0
    assert sorted(group.members) == sorted(p for p in op["inputs"][1:] if p is not None and p in index)
    assert group.provenance["activation"].startswith("file: op options")
    fwd = np.load(FIXTURES / f"{name}.forward.npz")
    got = run_stack(group.cells(), fwd["x"].transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_allclose(got, fwd["lstm"], atol=atol, rtol=0)
    if name == "lstm_dynamic":  # int8 weights: dequantized only when asked
        (why,) = refusals(group, "tf1")
        assert "--allow-approx" in why
        (group,) = recognize(index, ConvertOptions(allow_approx=True))
    assert refusals(group, "tf1") == []
    assert any("cell_clip=10" in why for why in refusals(group, "torch"))  # torch cells do not clip their state


def test_extract_to_tf1_writes_the_lstm_op(tmp_path):
    out = tmp_path / "o.npz"
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / "lstm.tflite"), "--to", "tf1", "-o", str(out)])
    assert res.exit_code == 0 and "verified tfl.unidirectional_sequence_lstm" in res.output, res.output
    assert "build the TF1 LSTMCell with cell_clip=10" in res.output
