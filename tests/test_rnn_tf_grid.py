"""The TF-made grids (fixtures/tensorflow/tf1_grid, fixtures/keras/tfkeras_grid): ckptsurgeon's reading of each
case computes what TensorFlow / tf.keras 2 recorded, its conversions verify, and a real torch module loaded
from a conversion reproduces TensorFlow's own outputs. TensorFlow is never imported."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.rnn import ConversionError, ConvertOptions, convert_group, recognize, refusals, verify_converted
from ckptsurgeon.rnn.reference import run_stack
from conftest import FIXTURES

TF1_GRID = FIXTURES / "tensorflow" / "tf1_grid"
KERAS_GRID = FIXTURES / "keras" / "tfkeras_grid"


def _cases(grid):
    return [c["name"] for c in json.loads((grid / "manifest.json").read_text())["cases"]]


def _case(grid, name):
    meta = json.loads((grid / name / "case.json").read_text())
    return meta, np.load(grid / name / "reference.npz")


def _time_major(arr, layout: str) -> np.ndarray:
    return arr if layout.startswith("[time") else arr.transpose(1, 0, 2)


def _tf1_declared(meta) -> ConvertOptions:
    """The facts TF1 used that its checkpoint does not store, declared as a user would (--forget-bias, --activation);
    nothing for a case saved with its MetaGraph, which states them."""
    if meta["spec"].get("meta_graph"):
        return ConvertOptions()
    config = meta["layers"][0]["config"]
    fb, act = config.get("forget_bias"), config.get("activation")
    return ConvertOptions(forget_bias=None if fb in (None, 1.0) else fb, activation=None if act in (None, "tanh") else act,
                          orientation="xw" if meta["structure"] == "hand_built" else None,  # its code: x @ wx
                          cell_clip=config.get("cell_clip"), proj_clip=config.get("proj_clip"))


# cases saved with a MetaGraph that shows facts one group cannot hold -> (fact, what its refusal names)
_META_REFUSED = {"meta_multi2_lstm_fb_mixed": ("forget_bias", "cells disagree"), "meta_gru_relu6": ("activation", "Relu6")}


def _tf1_want(meta, arrays) -> np.ndarray:
    outs = meta["outputs"]
    if "outputs" in outs:
        return _time_major(arrays[outs["outputs"]["npz"]], outs["outputs"]["layout"])
    fw, bw = (_time_major(arrays[outs[f"outputs/{d}"]["npz"]], outs[f"outputs/{d}"]["layout"]) for d in ("fw", "bw"))
    return np.concatenate([fw, bw], -1)


@pytest.mark.parametrize("name", _cases(TF1_GRID))
def test_tf1_case_computes_what_tf_recorded(name):
    meta, arrays = _case(TF1_GRID, name)
    groups = recognize(ckptsurgeon.open(TF1_GRID / name / meta["prefix"]), _tf1_declared(meta))
    assert len(groups) == 1, [g.scope for g in groups]
    group = groups[0]
    assert group.num_layers == meta["num_layers"] and group.directions == len(meta["directions"])
    x = _time_major(arrays["out/x"], meta["inputs"]["x"]["layout"])
    want = _tf1_want(meta, arrays)
    if name == "multi2_lstm_mixed":
        assert "different widths" in group.provenance["layers"] and refusals(group, "gates")
        return
    if name in _META_REFUSED:  # the MetaGraph shows what no one set of facts holds: every conversion refuses, saying why
        fact, why = _META_REFUSED[name]
        assert group.provenance[fact].startswith("missing") and why in group.provenance[fact]
        assert all(any(why in r for r in refusals(group, t)) for t in ("torch", "keras", "tf1", "onnx", "gates"))
        return
    if meta["spec"].get("meta_graph"):  # what the variables cannot say comes from the graph, not a default or a flag
        facts = ("activation",) + (("forget_bias",) if group.kind == "lstm" else ())
        assert all(group.provenance[f].startswith("file: MetaGraph") for f in facts), group.provenance
    cells = group.cells()
    lengths = meta.get("sequence_length") or [x.shape[0]] * x.shape[1]
    for b, n in enumerate(lengths):  # sequence_length: each sequence is its own length (bw starts at its end)
        np.testing.assert_allclose(run_stack(cells, x[:n, b:b + 1]), want[:n, b:b + 1], atol=1e-5, err_msg=name)
    if meta.get("structure") == "bidirectional_dynamic_rnn(MultiRNNCell, MultiRNNCell)":
        assert group.topology == "independent" and any("independent" in r for r in refusals(group, "torch"))
    for target in ("torch", "torch-cell", "keras", "tf1", "onnx", "gates"):
        try:
            conv = convert_group(group, target, _tf1_declared(meta))
        except ConversionError:
            continue
        check = verify_converted(conv)
        assert check.ok and check.max_abs_diff < 1e-6, (name, target, check)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["lstm", "lstm_fb05", "basic_lstm_fb03", "lstm_proj", "multi2_lstm", "stack_bi2_lstm",
                                  "stack_bi3_lstm", "bi_lstm", "cudnn_compat_lstm", "multi2_cudnn_compat",
                                  "lstm_block_fused", "old_lstm", "old_multi2_basic_lstm", "old_lstm_peep_proj",
                                  "stack_bi2_cudnn_compat", "meta_basic_lstm_fb0",
                                  "meta_multi2_lstm_fb0", "meta_stack_bi2_lstm_fb0", "meta_lstm_block_fused_fb025"])
def test_tf1_case_into_a_real_torch_module(tmp_path, name):
    """extract --to torch (verified by default), loaded strictly into nn.LSTM: TF's outputs."""
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    meta, arrays = _case(TF1_GRID, name)
    options = _tf1_declared(meta)
    out = tmp_path / "t.pt"
    args = ["extract", str(TF1_GRID / name / meta["prefix"]), "--to", "torch", "-o", str(out)]
    if options.forget_bias is not None:
        args += ["--forget-bias", str(options.forget_bias)]
    if name == "old_lstm_peep_proj":
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1 and "peephole" in res.output
        return
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "verified" in res.output, res.output
    group = recognize(ckptsurgeon.open(out))[0]
    state = {k.split(".")[-1]: v for k, v in torch.load(out, weights_only=True).items()}
    module = torch.nn.LSTM(group.input_size, group.hidden_size, num_layers=group.num_layers,
                           bidirectional=group.directions == 2, proj_size=group.proj_size)
    module.load_state_dict(state, strict=True)
    x = _time_major(arrays["out/x"], meta["inputs"]["x"]["layout"])
    y = module(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(y, _tf1_want(meta, arrays), atol=1e-5)


def test_tf1_relu_activation_is_a_declared_fact():
    """TF1 cells do not store activation=: the version default (tanh) is named, and --activation relu matches TF."""
    meta, arrays = _case(TF1_GRID, "lstm_relu")
    index = ckptsurgeon.open(TF1_GRID / "lstm_relu" / meta["prefix"])
    x, want = _time_major(arrays["out/x"], "[batch"), _tf1_want(meta, arrays)
    default = recognize(index)[0]
    assert default.provenance["activation"].startswith("version default")
    assert np.abs(run_stack(default.cells(), x) - want).max() > 1e-2
    declared = recognize(index, ConvertOptions(activation="relu"))[0]
    assert declared.provenance["activation"] == "flag: --activation relu"
    np.testing.assert_allclose(run_stack(declared.cells(), x), want, atol=1e-5)
    assert refusals(declared, "torch") and not refusals(declared, "onnx")  # nn.LSTM computes tanh; ONNX takes Relu


def test_graft_from_tf1_cudnn_compatible_into_torch_reproduces_tf(tmp_path):
    """The source's run-time constant is its own cell class's (CudnnCompatibleLSTMCell: none)."""
    meta, arrays = _case(TF1_GRID, "cudnn_compat_lstm")
    template = tmp_path / "tpl.pt"
    torch.save(torch.nn.LSTM(3, 4).state_dict(), template)
    out = tmp_path / "out.pt"
    report = ckptsurgeon.graft(TF1_GRID / "cudnn_compat_lstm" / meta["prefix"], template, out)
    assert report.checks[0].ok
    module = torch.nn.LSTM(3, 4)
    module.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = _time_major(arrays["out/x"], meta["inputs"]["x"]["layout"])
    np.testing.assert_allclose(module(torch.tensor(x))[0].detach().numpy(), _tf1_want(meta, arrays), atol=1e-5)


# --- tf.keras 2 grid ------------------------------------------------------------------------------------------

def _merge(mode, fw, bw):
    return {"concat": lambda: np.concatenate([fw, bw], -1), "sum": lambda: fw + bw, "mul": lambda: fw * bw,
            "ave": lambda: (fw + bw) / 2}[mode]()


_TFKERAS_DEFAULTS = {"recurrent_activation": "sigmoid", "activation": "tanh", "go_backwards": False, "reset_after": True}


def _facts(layer: list) -> dict | None:
    """What a tf.keras 2 layer of the case's spec computes (None: the two halves of a Bidirectional differ)."""
    cls, kwargs = layer
    if cls == "Bidirectional":
        inner = _facts(kwargs["layer"])
        if kwargs.get("backward_layer"):
            back = _facts(kwargs["backward_layer"])
            back = back and {**back, "go_backwards": not back["go_backwards"], "kind": back["kind"]}
            if back != inner or kwargs["backward_layer"][1].get("units") != kwargs["layer"][1].get("units"):
                return None
        mode = kwargs.get("merge_mode", "concat")
        return inner and {**inner, "merge_mode": "none" if mode is None else mode}
    facts = {k: kwargs.get(k, v) for k, v in _TFKERAS_DEFAULTS.items()}
    if facts["recurrent_activation"] == "hard_sigmoid":
        facts["recurrent_activation"] = "hard_sigmoid_keras2"  # tf.keras 2: clip(0.2x + 0.5, 0, 1)
    facts["kind"] = cls.lower()
    return facts


def _layer_inputs(meta, arrays) -> dict[str, np.ndarray]:
    """Each spec layer's input (T, B, F): x, then the previous layer's recorded output."""
    x, out = arrays["out/x"].transpose(1, 0, 2), {}
    for cls, kwargs in meta["spec"]["layers"]:
        out[kwargs["name"]] = x
        key = f"out/layers/{kwargs['name']}"
        x = arrays[key].transpose(1, 0, 2) if key in arrays.files else None
    return out


@pytest.mark.parametrize("file", ["model.h5", "weights.h5", "ckpt"])
@pytest.mark.parametrize("name", _cases(KERAS_GRID))
def test_tfkeras_case_computes_what_tfkeras_recorded(name, file):
    """model.h5 states every fact in its config; weights.h5 and the TF checkpoint do not, so each fact is either a
    named version default or missing, and declaring the layer's real facts (as flags) reproduces tf.keras."""
    meta, arrays = _case(KERAS_GRID, name)
    index = ckptsurgeon.open(KERAS_GRID / name / file)
    spec = meta["spec"]["layers"]
    inputs = _layer_inputs(meta, arrays)
    groups = recognize(index)
    if name == "bi_backward_mixed":  # forward LSTM(4), backward GRU(3): two halves no target holds together
        assert len(groups) == 2 and all("bidirectional" in g.unsettled() and refusals(g, "gates") for g in groups)
        return
    assert len(groups) == len(spec), [g.scope for g in groups]
    for k, (group, layer) in enumerate(zip(groups, spec)):
        layer_name = layer[1]["name"]
        facts = _facts(layer)
        if file != "model.h5":
            if facts is None:
                continue  # a Bidirectional whose halves differ cannot be declared by flags (model.h5 covers it)
            if any(group.provenance[f].startswith("file") and getattr(group, f) != facts[f]
                   for f in ("reset_after", "recurrent_activation", "activation", "go_backwards") if f in group.provenance):
                raise AssertionError((name, file, group.provenance))
            declared = {f: v for f, v in facts.items() if f != "kind" and (f != "reset_after" or facts["kind"] == "gru")}
            group = recognize(index, ConvertOptions(**declared))[k]
        if facts is None or (group.go_backwards and group.directions == 2):
            assert group.unsettled() or group.go_backwards, (name, file, group.provenance)
            assert all(refusals(group, t) for t in ("torch", "keras", "onnx", "gates", "tf1")), (name, file)
            continue
        assert not group.unsettled(), (name, file, group.unsettled())
        for fact in ("recurrent_activation", "activation", "go_backwards"):
            assert getattr(group, fact) == facts[fact], (name, file, fact)
        got = run_stack(group.cells(), inputs[layer_name])
        _compare_keras_layer(name, group, layer_name, got, arrays)
        for target in ("torch", "keras", "onnx", "gates", "tf1"):
            try:
                conv = convert_group(group, target)
            except ConversionError:
                continue
            assert verify_converted(conv).max_abs_diff < 1e-6, (name, file, target)


def _compare_keras_layer(name, group, layer_name, got, arrays):
    key = f"out/layers/{layer_name}"
    if group.directions == 2:
        H = group.hidden_size
        fw_own = arrays[f"{key}/forward_layer"].transpose(1, 0, 2)
        bw_own = arrays[f"{key}/backward_layer"].transpose(1, 0, 2)
        np.testing.assert_allclose(got[..., :H], fw_own, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[..., H:], bw_own[::-1], atol=1e-5, err_msg=name)  # its own order is reversed
        if group.merge_mode not in (None, "None") and key in arrays.files:
            merged = arrays[key].transpose(1, 0, 2)
            np.testing.assert_allclose(_merge(group.merge_mode, got[..., :H], got[..., H:]), merged, atol=1e-5)
    else:
        np.testing.assert_allclose(got, arrays[key].transpose(1, 0, 2), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["lstm_hard_sigmoid", "gru_hard_sigmoid_rb", "gru_hard_sigmoid_ra"])
def test_tfkeras_hard_sigmoid_to_onnx_runs_in_a_real_onnx_runtime(name):
    """Keras 2's hard_sigmoid is ONNX HardSigmoid(alpha=0.2, beta=0.5): exact, against tf.keras's own outputs."""
    from rnn_helpers import run_onnx

    meta, arrays = _case(KERAS_GRID, name)
    group = recognize(ckptsurgeon.open(KERAS_GRID / name / "model.h5"))[0]
    assert group.recurrent_activation == "hard_sigmoid_keras2" and group.provenance["recurrent_activation"].startswith("file")
    conv = convert_group(group, "onnx")
    assert conv.metadata["onnx"]["activation_alpha"][0] == 0.2 and conv.metadata["onnx"]["activation_beta"][0] == 0.5
    y = run_onnx(group.kind, {k: np.asarray(v) for k, v in conv.tensors.items()}, conv.metadata["onnx"],
                 arrays["out/x"].transpose(1, 0, 2), runtime="onnxruntime")
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2), arrays["out/predict"], atol=1e-5)
    with pytest.raises(ConversionError, match="--allow-approx"):
        convert_group(group, "torch" if group.reset_after else "tf1")


def test_tf1_clips_are_declared_facts():
    """TF1 LSTMCell's cell_clip/proj_clip are not stored: the version default (no clipping) is named and misses TF's
    outputs; --cell-clip/--proj-clip reproduce them; targets that cannot clip the cell state refuse, naming why."""
    meta, arrays = _case(TF1_GRID, "lstm_clip")
    index = ckptsurgeon.open(TF1_GRID / "lstm_clip" / meta["prefix"])
    x, want = _time_major(arrays["out/x"], "[batch"), _tf1_want(meta, arrays)
    default = recognize(index)[0]
    assert default.cell_clip is None and default.provenance["cell_clip"].startswith("version default: TF1 LSTMCell")
    assert "--cell-clip" in default.provenance["cell_clip"] and "--proj-clip" in default.provenance["proj_clip"]
    assert np.abs(run_stack(default.cells(), x) - want).max() > 1e-2
    declared = recognize(index, ConvertOptions(cell_clip=0.25, proj_clip=0.1))[0]
    assert declared.provenance["cell_clip"] == "flag: --cell-clip 0.25"
    np.testing.assert_allclose(run_stack(declared.cells(), x), want, atol=1e-5)
    only_cell = recognize(index, ConvertOptions(cell_clip=0.25))[0]
    assert np.abs(run_stack(only_cell.cells(), x) - want).max() > 1e-3  # both clips bite
    for target in ("torch", "keras", "onnx", "torch-cell"):
        assert any("clips (cell_clip=0.25, proj_clip=0.1" in r for r in refusals(declared, target)), target
    for target in ("tf1", "gates"):
        conv = convert_group(declared, target)
        assert (conv.metadata["cell_clip"], conv.metadata["proj_clip"]) == (0.25, 0.1)
        assert verify_converted(conv).max_abs_diff < 1e-6
    assert any("cell_clip=0.25, proj_clip=0.1" in n for n in convert_group(declared, "tf1").notes)


def test_tf1_forget_bias_default_names_the_cell_and_the_flag():
    """An lstm_cell checkpoint may come from TF 1.4-1.5's CudnnCompatibleLSTMCell (forget_bias 0): the file cannot tell."""
    meta, _ = _case(TF1_GRID, "lstm")
    group = recognize(ckptsurgeon.open(TF1_GRID / "lstm" / meta["prefix"]))[0]
    source = group.provenance["forget_bias"]
    assert source.startswith("version default: TF1 LSTMCell (or LSTMBlockCell) forget_bias=1.0")
    assert "--forget-bias 0" in source and "CudnnCompatibleLSTMCell" in source
    meta, _ = _case(TF1_GRID, "basic_lstm")
    basic = recognize(ckptsurgeon.open(TF1_GRID / "basic_lstm" / meta["prefix"]))[0]
    assert basic.provenance["forget_bias"].startswith("version default: TF1 BasicLSTMCell forget_bias=1.0")
    assert basic.provenance["cell_clip"].startswith("file: layout")  # BasicLSTMCell cannot clip


def test_clip_flags_on_the_cli(tmp_path):
    """--cell-clip/--proj-clip declare the clips; the tf1 output states them, so verify needs no flag for it."""
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    meta, arrays = _case(TF1_GRID, "lstm_clip")
    src, out = str(TF1_GRID / "lstm_clip" / meta["prefix"]), tmp_path / "clip.npz"
    res = CliRunner().invoke(cli, ["extract", src, "--to", "torch", "-o", str(tmp_path / "t.pt"), "--cell-clip", "0.25"])
    assert res.exit_code == 1 and "it clips (cell_clip=0.25" in res.output
    res = CliRunner().invoke(cli, ["extract", src, "--to", "tf1", "-o", str(out), "--cell-clip", "0.25", "--proj-clip", "0.1"])
    assert res.exit_code == 0 and "build the TF1 LSTMCell with cell_clip=0.25, proj_clip=0.1" in res.output, res.output
    back = recognize(ckptsurgeon.open(out))[0]
    assert (back.cell_clip, back.proj_clip) == (0.25, 0.1) and back.provenance["cell_clip"].startswith("file")
    x = _time_major(arrays["out/x"], "[batch")
    np.testing.assert_allclose(run_stack(back.cells(), x), _tf1_want(meta, arrays), atol=1e-5)
    ok = CliRunner().invoke(cli, ["verify", src, str(out), "--cell-clip", "0.25", "--proj-clip", "0.1"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["verify", src, str(out)])  # the source read without its clips differs
    assert bad.exit_code == 1 and "FAIL" in bad.output
