"""TFLite LSTM op variants (fixtures/tflite/make_tflite_ops_fixtures.py: single-op models written with TF's own
flatbuffer schema code, their outputs recorded from the TFLite interpreter of TF 2.21): read by their kernels'
input tables, converted to torch / keras / tf1 where the target holds the variant, the conversions computing the
interpreter's outputs (real torch.nn.LSTM and Keras 3 layers, tf1 read back); every other variant refused by name."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.formats.tflite import schema as S
from ckptsurgeon.rnn.convert import ConvertOptions, refusals
from ckptsurgeon.rnn.recognize import recognize
from ckptsurgeon.rnn.reference import run_stack

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tflite"
# name -> (op, directions, hidden, proj, peepholes, cell_clip, proj_clip, targets that hold it)
CONVERTED = {
    "useq_peephole_proj": ("UNIDIRECTIONAL_SEQUENCE_LSTM", 1, 4, 3, True, 0.6, 0.25, ("tf1",)),
    "useq_proj": ("UNIDIRECTIONAL_SEQUENCE_LSTM", 1, 5, 3, False, None, None, ("torch", "tf1")),
    "bidi": ("BIDIRECTIONAL_SEQUENCE_LSTM", 2, 4, 0, False, None, None, ("torch", "keras", "tf1")),
    "bidi_peephole": ("BIDIRECTIONAL_SEQUENCE_LSTM", 2, 4, 0, True, 0.5, None, ("tf1",)),
    "lstm_full": ("LSTM", 1, 4, 0, False, None, None, ("torch", "keras", "tf1")),
    "lstm_full_peephole_proj": ("LSTM", 1, 4, 2, True, 0.3, 0.1, ("tf1",)),
}
REFUSED = {  # name -> words of the reason every target gives
    "useq_proj_bias": "projection with a bias",
    "useq_layer_norm": "layer-normalized",
    "useq_cifg": "input gate = 1 - forget gate",
    "useq_diagonal": "diagonal_recurrent_tensors",
    "bidi_aux": "aux_input",
    "lstm_basic": "basic kernel",
}
TARGETS = ("torch", "keras", "tf1")


def _recorded(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURES / f"{name}.forward.npz") as z:
        return z["x"], z["y"]  # batch major (B, T, in), (B, T, out)


def _group(name: str, **options):
    (group,) = recognize(ckptsurgeon.open(FIXTURES / f"{name}.tflite"), ConvertOptions(**options))
    return group


@pytest.mark.parametrize("name", list(CONVERTED) + list(REFUSED))
def test_op_inputs_are_what_tensorflow_reads(name):
    """The reader's ``recurrent_ops`` give the op's inputs by position and its options as TF's schema code parses
    them (recorded in NAME.op.json); ``schema``'s input tables name the positions the fixture script filled."""
    info = json.loads((FIXTURES / f"{name}.op.json").read_text())
    index = ckptsurgeon.open(FIXTURES / f"{name}.tflite")
    (op,) = index.metadata["recurrent_ops"]
    assert S.BUILTIN_OPS[info["builtin_code"]] == op["op"]
    assert op["inputs"] == info["inputs"]  # tensor names (unique in these models) or None where absent (-1)
    table = {"BIDIRECTIONAL_SEQUENCE_LSTM": S.BIDI_LSTM_INPUTS, "UNIDIRECTIONAL_SEQUENCE_LSTM": S.LSTM_INPUTS,
             "LSTM": S.BASIC_LSTM_INPUTS if name == "lstm_basic" else S.LSTM_INPUTS}[op["op"]]
    for role, path in zip(table, op["inputs"]):
        assert path is None or path.rsplit("/", 1)[-1] == role  # the fixture names each tensor by its role
    camel = {"cell_clip": "cellClip", "proj_clip": "projClip", "merge_outputs": "mergeOutputs",
             "time_major": "timeMajor", "kernel_type": "kernelType", "diagonal_recurrent_tensors": "diagonalRecurrentTensors"}
    for ours, theirs in camel.items():
        if ours in op["options"]:
            assert op["options"][ours] == pytest.approx(info["options"][theirs], rel=1e-7), ours


@pytest.mark.parametrize("name", CONVERTED)
def test_groups_run_as_the_interpreter_computed(name):
    """Each variant's cells, run by ckptsurgeon's reference, give the interpreter's recorded outputs (1e-5); the
    clips and peepholes each matter (dropping one misses them), so the test would catch a fact read wrongly."""
    op, dirs, hidden, proj, peep, clip, pclip, targets = CONVERTED[name]
    g = _group(name)
    assert (g.variant, g.directions, g.hidden_size, g.proj_size, g.peepholes) == (f"TFLite {op}", dirs, hidden, proj, peep)
    assert g.cell_clip == pytest.approx(clip) if clip else g.cell_clip is None
    assert g.proj_clip == pytest.approx(pclip) if pclip else g.proj_clip is None
    x, want = _recorded(name)
    stack = g.cells()
    got = run_stack(stack, x.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    for change in ({"cell_clip": None}, {"proj_clip": None}, {"peepholes": None}):
        if getattr(stack[0][0], next(iter(change))) is not None:
            other = run_stack(stack.map(lambda c: c.with_(**change)), x.transpose(1, 0, 2)).transpose(1, 0, 2)
            assert np.abs(other - want).max() > 1e-3, change
    for target in TARGETS:
        assert (refusals(g, target) == []) == (target in targets), (target, refusals(g, target))


def _extract(tmp_path: Path, name: str, to: str, *extra: str) -> dict[str, np.ndarray]:
    out = tmp_path / f"{name}.{to}.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / f"{name}.tflite"), "--to", to, "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    assert "verified" in res.output
    index = ckptsurgeon.open(str(out))
    return {p: index[p].numpy() for p in index}


@pytest.mark.parametrize("name", [n for n, c in CONVERTED.items() if "torch" in c[-1]])
def test_to_torch_computes_the_interpreter_forward(tmp_path, name):
    torch = pytest.importorskip("torch")
    _, dirs, hidden, proj, *_ = CONVERTED[name]
    sd = _extract(tmp_path, name, "torch")
    scope = next(iter(sd)).split("/")[0]
    module = torch.nn.LSTM(3, hidden, batch_first=True, bidirectional=dirs == 2, proj_size=proj)
    module.load_state_dict({k.removeprefix(scope + "/"): torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x, want = _recorded(name)
    with torch.no_grad():
        got = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n, c in CONVERTED.items() if "keras" in c[-1]])
def test_to_keras_computes_the_interpreter_forward(tmp_path, name):
    if os.environ.get("KERAS_BACKEND") != "torch":
        pytest.skip("Keras 3 runs here on the torch backend")
    keras = pytest.importorskip("keras")
    _, dirs, hidden, *_ = CONVERTED[name]
    sd = _extract(tmp_path, name, "keras")
    x, want = _recorded(name)
    layer = keras.layers.LSTM(hidden, return_sequences=True)
    rnn = keras.layers.Bidirectional(layer, merge_mode="concat") if dirs == 2 else layer
    rnn.build((None, x.shape[1], x.shape[2]))
    names = ["kernel", "recurrent_kernel", "bias"]
    scope = next(iter(sd)).split("/")[0]
    parts = [f"{d}_layer/cell" for d in ("forward", "backward")] if dirs == 2 else ["cell"]
    rnn.set_weights([sd[f"{scope}/{p}/{n}"] for p in parts for n in names])
    got = keras.ops.convert_to_numpy(rnn(x))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CONVERTED)
def test_to_tf1_reads_back_as_the_interpreter_computed(tmp_path, name):
    """TF1 LSTMCell variables (peepholes w_*_diag, projection/kernel; cell_clip and proj_clip in the file's own
    description), read back as a TF1 group: its cells give the interpreter's outputs."""
    _, dirs, hidden, proj, peep, clip, pclip, _ = CONVERTED[name]
    out = tmp_path / "tf1.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / f"{name}.tflite"), "--to", "tf1", "-o", str(out)])
    assert res.exit_code == 0 and "verified" in res.output, res.output
    if clip:
        assert f"build the TF1 LSTMCell with cell_clip={clip:g}" in res.output
    index = ckptsurgeon.open(str(out))
    assert any(p.endswith("w_i_diag") for p in index) == peep
    assert any(p.endswith("projection/kernel") for p in index) == bool(proj)
    (g,) = recognize(index)
    assert (g.layout, g.directions, g.proj_size, g.peepholes) == ("tf1", dirs, proj, peep)
    x, want = _recorded(name)
    got = run_stack(g.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", REFUSED)
def test_variants_no_target_computes_are_refused_by_name(tmp_path, name):
    g = _group(name)
    assert g.load is None and g.members
    for target in TARGETS:
        (why,) = refusals(g, target)
        assert REFUSED[name] in why, why
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / f"{name}.tflite"), "--to", "torch", "-o",
                                   str(tmp_path / "o.safetensors")])
    assert res.exit_code != 0 and REFUSED[name] in res.output, res.output
    assert not (tmp_path / "o.safetensors").exists()
    res = CliRunner().invoke(cli, ["rnn", str(FIXTURES / f"{name}.tflite")])
    assert res.exit_code == 0 and REFUSED[name] in res.output, res.output


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_cifg_is_input_one_minus_forget_as_the_refusal_says():
    """The CIFG kernel computes input = 1 - forget (not ONNX's forget = 1 - input): the refusal's reason, checked."""
    index = ckptsurgeon.open(FIXTURES / "useq_cifg.tflite")
    (op,) = index.metadata["recurrent_ops"]
    roles = dict(zip(S.LSTM_INPUTS, op["inputs"]))
    assert roles["input_to_input_weights"] is None and roles["input_gate_bias"] is None
    w = {r: index[p].numpy().astype(np.float64) for r, p in roles.items() if p is not None and p in index}
    x, want = _recorded("useq_cifg")
    h, c, outs = np.zeros((x.shape[0], 4)), np.zeros((x.shape[0], 4)), []
    for t in range(x.shape[1]):
        pre = {g: x[:, t] @ w[f"input_to_{g}_weights"].T + h @ w[f"recurrent_to_{g}_weights"].T + w[f"{g}_gate_bias"]
               for g in ("forget", "cell", "output")}
        f = _sigmoid(pre["forget"])
        c = f * c + (1 - f) * np.tanh(pre["cell"])
        h = _sigmoid(pre["output"]) * np.tanh(c)
        outs.append(h)
    np.testing.assert_allclose(np.stack(outs, 1), want, atol=1e-5, rtol=0)


def test_int8_weights_convert_only_with_allow_approx(tmp_path):
    """Dynamic-range int8 gate weights (the converter's): refused by default; with --allow-approx dequantized
    (scale * (q - zero_point)) into tf1, whose read-back computes the interpreter's output within the error of the
    hybrid kernel quantizing its inputs on the fly."""
    src = str(FIXTURES / "lstm_dynamic.tflite")
    out = tmp_path / "tf1.safetensors"
    res = CliRunner().invoke(cli, ["extract", src, "--to", "tf1", "-o", str(out)])
    assert res.exit_code != 0 and "--allow-approx" in res.output and not out.exists(), res.output
    res = CliRunner().invoke(cli, ["extract", src, "--to", "tf1", "--allow-approx", "-o", str(out)])
    assert res.exit_code == 0, res.output
    (g,) = recognize(ckptsurgeon.open(str(out)))
    with np.load(FIXTURES / "lstm_dynamic.forward.npz") as z:
        x, want = z["x"], z["lstm"]
    got = run_stack(g.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2)
    err = np.abs(got - want).max()
    assert 1e-5 < err < 0.01, err  # not exact (quantized inputs in the kernel), and close



def test_mutated_op_models_recognize_or_refuse_with_checkpoint_errors(tmp_path):
    """600 seeded mutants of the op fixtures: listing, recognizing, the refusals and the cells either work or fail
    with a CheckpointError; nothing else escapes."""
    import random
    import struct

    from ckptsurgeon.errors import CheckpointError

    rng = random.Random(2024)
    originals = [(FIXTURES / f"{n}.tflite").read_bytes() for n in list(CONVERTED) + list(REFUSED)]
    bad = tmp_path / "m.tflite"
    seen = {"ok": 0, "refused": 0}
    for _ in range(600):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(8, len(data) - 4)
            if rng.random() < 0.5:
                data[at] = rng.randrange(256)
            else:
                struct.pack_into("<I", data, at - at % 4, rng.choice((0, 1, 0xFFFFFFFF, rng.randrange(1 << 32))))
        bad.write_bytes(bytes(data))
        try:
            for g in recognize(ckptsurgeon.open(bad)):
                refusals(g, "tf1")
                if g.load is not None:
                    run_stack(g.cells(), np.zeros((2, 1, g.input_size)))
            seen["ok"] += 1
        except CheckpointError:
            seen["refused"] += 1
    assert seen["ok"] > 50 and seen["refused"] > 50, seen


def test_converted_gru_is_a_while_loop_named_in_the_notes():
    """The converter fuses no GRU (TF 2.21, recorded in gru_keras.op.json): a WHILE loop over a body subgraph of
    FULLY_CONNECTED, LOGISTIC, TANH ... ops. No group is made of it, and the listing says why."""
    info = json.loads((FIXTURES / "gru_keras.op.json").read_text())
    body = next(s for s in info["subgraphs"] if {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= set(s["operators"]))
    assert "WHILE" in info["subgraphs"][0]["operators"]
    assert not any("GRU" in op or "LSTM" in op for s in info["subgraphs"] for op in s["operators"])
    index = ckptsurgeon.open(FIXTURES / "gru_keras.tflite")
    assert [g["operators"] for g in index.metadata["subgraphs"]] == [s["operators"] for s in info["subgraphs"]]
    assert recognize(index) == []
    (note,) = [n for n in index.notes if "recurrent loop" in n]
    assert repr(body["name"]) in note and "not read as a recurrent group" in note
    res = CliRunner().invoke(cli, ["ls", str(FIXTURES / "gru_keras.tflite")])
    assert res.exit_code == 0 and "recurrent loop computed op by op" in res.output, res.output
    res = CliRunner().invoke(cli, ["rnn", str(FIXTURES / "gru_keras.tflite")])  # rnn says why there is no group
    assert res.exit_code == 0 and "no recurrent groups found" in res.output, res.output
    assert "note: subgraph 'while_body': a recurrent loop computed op by op" in res.output, res.output


def test_stats_of_int8_tensors_are_of_their_real_values():
    """dense_int8 is dense (the same Keras weights) quantized by the converter: stats of its int8 weights and int32
    biases, dequantized (scale * (q - zero_point)), are within half a quantization step of the float model's."""
    floats = {tuple(t.shape): t for t in ckptsurgeon.stats(FIXTURES / "dense.tflite").tensors}
    index = ckptsurgeon.open(FIXTURES / "dense_int8.tflite")
    quant = index.metadata["quantization"]
    for t in ckptsurgeon.stats(FIXTURES / "dense_int8.tflite").tensors:
        assert t.dtype.endswith("dequantized"), t
        step = max(quant[t.path]["scale"])
        want = floats[tuple(t.shape)]
        assert abs(t.mean - want.mean) <= step and abs(t.max - want.max) <= step, (t, want)


def test_stats_lists_the_tensors_of_a_refused_group():
    result = ckptsurgeon.stats(FIXTURES / "useq_cifg.tflite")
    assert len(result.tensors) == len(ckptsurgeon.open(FIXTURES / "useq_cifg.tflite"))
