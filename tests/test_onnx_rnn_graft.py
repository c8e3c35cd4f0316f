"""``graft pretrained.pt --into model.onnx -o updated.onnx``: recurrent groups paired with the template's nodes,
layouts converted (PyTorch i,f,g,o into ONNX i,o,f,c, biases into B = [Wb, Rb], directions, layers to their
nodes), written into initializers or, through the folded chains, into their source tensors. The updated model
runs (onnxruntime, and onnx.reference where its semantics apply) like the torch module holding the new
weights; every other byte of the model and of its external data is unchanged."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from onnx_models import onnx, rnn_model, torch_export
from onnx_rnn_helpers import (Wrapper, assert_bytes_only_changed_inside, export_lstmcell, flat_y, input_names, lstmcell_module,
                              one_group, ort_run, ref_run)

import ckptsurgeon
from ckptsurgeon import graft
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import CheckpointError

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(31)


def run_graft(*args) -> str:
    res = CliRunner().invoke(cli, ["graft", *map(str, args)])
    assert res.exit_code == 0, res.output
    return res.output


def refused(*args) -> str:
    res = CliRunner().invoke(cli, ["graft", *map(str, args)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    return res.output


def spans(index, paths, file) -> list[tuple[int, int]]:
    return [(index[p].offset, index[p].offset + index[p].nbytes) for p in paths if index[p].file == file]


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("export", ["torchscript", "torchscript-unfolded", "dynamo"])
def test_torch_weights_into_torch_exports(tmp_path, cls, export):
    if export == "dynamo":
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    old = Wrapper.make(torch, cls, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    (tmp_path / "tpl").mkdir()
    (tmp_path / "out").mkdir()
    kw = dict(dynamo=True) if export == "dynamo" else dict(dynamo=False, do_constant_folding=export == "torchscript")
    tpl = torch_export(old, (x,), tmp_path / "tpl" / "model.onnx", **kw)
    torch.manual_seed(1)
    new = Wrapper.make(torch, cls, num_layers=2, bidirectional=True)
    torch.save(new.state_dict(), tmp_path / "pretrained.pt")
    out = tmp_path / "out" / "updated.onnx"
    text = run_graft(tmp_path / "pretrained.pt", "--into", tpl, "-o", out)
    group = one_group(tpl)
    assert f"rnn (nn.{cls}) -> {group.scope} (ONNX {cls} nodes x2 layers)" in text and "verified" in text

    feeds = {input_names(tpl)[0]: x.numpy()}
    want = new(x).detach().numpy()
    for got in (ort_run(out, feeds)[0], ref_run(out, feeds)[0]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(ort_run(tpl, feeds)[0] - want).max() > 1e-3  # the template computed something else

    index = ckptsurgeon.open(str(tpl))
    replaced = group.members
    if export == "torchscript-unfolded":  # written back through Slice/Concat/Unsqueeze: the state dict itself
        assert set(replaced) == {k.replace(".", "/") for k in new.state_dict()}
        after = ckptsurgeon.open(str(out))
        for k, v in new.state_dict().items():
            assert np.array_equal(after[k.replace(".", "/")].numpy(), v.numpy()), k
    files = [(str(tpl), str(out))] + [(f, str(tmp_path / "out" / os.path.basename(f))) for f in index.files[1:]]
    changed = 0
    for src, dst in files:
        with open(src, "rb") as a, open(dst, "rb") as b:
            changed += assert_bytes_only_changed_inside(a.read(), b.read(), spans(index, replaced, src))
    assert changed > 100
    # A -> ONNX -> A: the updated model's group, back in torch, is the state dict that went in, bit for bit
    ckptsurgeon.extract(str(out), str(tmp_path / "back.safetensors"), scope=[group.scope], to="torch",
                        rename=[(group.scope + "/", "")])
    from safetensors.numpy import load_file

    back = load_file(str(tmp_path / "back.safetensors"))
    for k, v in new.rnn.state_dict().items():
        assert np.array_equal(back[k], v.numpy()), k


def test_lstmcell_inside_if_written_back_into_the_state_dict_tensors(tmp_path):
    export_lstmcell(torch, tmp_path / "cell.onnx")
    tpl = tmp_path / "cell.onnx"
    torch.manual_seed(5)
    new = lstmcell_module(torch)
    torch.save(new.state_dict(), tmp_path / "cell.pt")
    out = tmp_path / "updated.onnx"
    text = run_graft(tmp_path / "cell.pt", "--into", tpl, "--map", "cell=If/then_branch/cell/LSTM", "-o", out)
    assert "cell (nn.LSTMCell) -> If/then_branch/cell/LSTM (ONNX LSTM node)" in text
    after = ckptsurgeon.open(str(out))
    for name, value in new.cell.state_dict().items():
        assert np.array_equal(after[f"cell/{name}"].numpy(), value.numpy()), name
    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.tensor(True))
    feeds = dict(zip(input_names(tpl), (a.numpy() for a in args)))
    want = [t.detach().numpy() for t in new(*args)]
    for got in (ort_run(out, feeds), ref_run(out, feeds)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    index = ckptsurgeon.open(str(tpl))
    assert_bytes_only_changed_inside(tpl.read_bytes(), out.read_bytes(), spans(index, one_group(tpl).members, str(tpl)))


@pytest.mark.parametrize("layout", [0, 1])
def test_torch_gru_into_a_helper_node_reorders_gates_and_biases(tmp_path, layout):
    tpl, w = rnn_model(tmp_path / "g.onnx", "GRU", direction="bidirectional", layout=layout, with_initial=False,
                       extra_attrs=dict(linear_before_reset=1))
    torch.manual_seed(2)
    gru = torch.nn.GRU(3, 4, bidirectional=True, batch_first=bool(layout))
    save_file({f"enc.{k}": v.numpy() for k, v in gru.state_dict().items()}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.onnx"
    run_graft(tmp_path / "src.safetensors", "--into", tpl, "-o", out)
    after = ckptsurgeon.open(str(out))
    H, sd = 4, gru.state_dict()
    z, r, n = slice(H, 2 * H), slice(0, H), slice(2 * H, 3 * H)  # torch r, z, n -> onnx z, r, h
    for d, sfx in enumerate(("", "_reverse")):
        w_ih, b_ih, b_hh = (sd[f"{k}_l0{sfx}"].numpy() for k in ("weight_ih", "bias_ih", "bias_hh"))
        assert np.array_equal(after["rnn/W"].numpy()[d], np.concatenate([w_ih[z], w_ih[r], w_ih[n]]))
        assert np.array_equal(after["rnn/B"].numpy()[d], np.concatenate([b[s] for b in (b_ih, b_hh) for s in (z, r, n)]))
    x = RNG.standard_normal((5, 2, 3) if not layout else (2, 5, 3)).astype(np.float32)
    y = (ort_run if not layout else ref_run)(out, {"X": x})[0]
    np.testing.assert_allclose(flat_y(y, layout), gru(torch.from_numpy(x))[0].detach().numpy()
                               if not layout else gru(torch.from_numpy(x))[0].detach().numpy().transpose(1, 0, 2),
                               rtol=1e-5, atol=1e-5)


def test_peepholes_of_the_template_become_zero_for_a_torch_source(tmp_path):
    tpl, w = rnn_model(tmp_path / "p.onnx", "LSTM", peepholes=True, with_initial=False)
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(3, 4)
    save_file({f"lstm.{k}": v.numpy() for k, v in lstm.state_dict().items()}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.onnx"
    run_graft(tmp_path / "src.safetensors", "--into", tpl, "-o", out)
    assert not np.any(ckptsurgeon.open(str(out))["rnn/P"].numpy()) and np.any(w["P"])
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(ort_run(out, {"X": x})[0][:, 0], lstm(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ Keras sources, activations by formula

keras = pytest.importorskip("keras")


def test_keras3_hard_sigmoid_lstm_into_a_matching_onnx_node(tmp_path):
    """Keras 3's 'hard_sigmoid' is relu6(x + 3) / 6 = ONNX HardSigmoid(alpha=1/6, beta=0.5): exact."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, return_sequences=True, name="enc",
                                                                     recurrent_activation="hard_sigmoid")])
    model.save(tmp_path / "k.keras")
    acts = dict(activations=["HardSigmoid", "Tanh", "Tanh"], activation_alpha=[1 / 6], activation_beta=[0.5])
    tpl, _ = rnn_model(tmp_path / "m.onnx", "LSTM", with_initial=False, extra_attrs=acts)
    assert one_group(tpl).recurrent_activation == "hard_sigmoid_keras3"
    out = tmp_path / "out.onnx"
    run_graft(tmp_path / "k.keras", "--into", tpl, "-o", out)
    x = (RNG.standard_normal((2, 5, 3)) * 3).astype(np.float32)
    y = ort_run(out, {"X": x.transpose(1, 0, 2)})[0]
    np.testing.assert_allclose(flat_y(y).transpose(1, 0, 2), keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    # into a Keras 2 HardSigmoid(0.2, 0.5) node: another function, refused with the formulas
    tpl2, _ = rnn_model(tmp_path / "m2.onnx", "LSTM", with_initial=False, extra_attrs=dict(
        activations=["HardSigmoid", "Tanh", "Tanh"], activation_alpha=[0.2], activation_beta=[0.5]))
    text = refused(tmp_path / "k.keras", "--into", tpl2, "-o", tmp_path / "o2.onnx")
    assert "relu6(x + 3) / 6" in text and "clip(0.2 * x + 0.5, 0, 1)" in text and "--allow-approx" in text


def test_onnx_to_gates_to_onnx_round_trip_is_byte_identical(tmp_path):
    """A -> gates -> A: an ONNX HardSigmoid(0.2, 0.5) bidirectional LSTM with peepholes and clip, extracted to the
    per-gate view (both biases kept) and grafted back into its own model, gives the model back byte for byte."""
    acts = dict(activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5],
                clip=2.5)
    tpl, _ = rnn_model(tmp_path / "m.onnx", "LSTM", direction="bidirectional", with_initial=False, peepholes=True,
                       extra_attrs=acts)
    ckptsurgeon.extract(str(tpl), str(tmp_path / "g.safetensors"), scope=["enc/rnn"], to="gates")
    out = tmp_path / "again.onnx"
    run_graft(tmp_path / "g.safetensors", "--into", tpl, "-o", out)
    assert out.read_bytes() == tpl.read_bytes()


def test_onnx_to_keras_to_onnx_round_trip(tmp_path):
    """A -> Keras -> A: W and R come back bit for bit; Keras keeps one LSTM bias (Wb + Rb), so B comes back as
    [Wb + Rb, 0], which computes the same."""
    acts = dict(activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5])
    tpl, w = rnn_model(tmp_path / "m.onnx", "LSTM", direction="bidirectional", with_initial=False, extra_attrs=acts)
    ckptsurgeon.extract(str(tpl), str(tmp_path / "k.safetensors"), scope=["enc/rnn"], to="keras")
    out = tmp_path / "again.onnx"
    run_graft(tmp_path / "k.safetensors", "--into", tpl, "-o", out)
    after = ckptsurgeon.open(str(out))
    assert np.array_equal(after["rnn/W"].numpy(), w["W"]) and np.array_equal(after["rnn/R"].numpy(), w["R"])
    b = after["rnn/B"].numpy()
    np.testing.assert_allclose(b[:, :16], w["B"][:, :16] + w["B"][:, 16:], rtol=0, atol=1e-6)
    assert not np.any(b[:, 16:])
    x = (RNG.standard_normal((5, 2, 3)) * 3).astype(np.float32)
    np.testing.assert_allclose(ort_run(out, {"X": x})[0], ort_run(tpl, {"X": x})[0], rtol=1e-5, atol=1e-6)


def test_reset_before_source_into_reset_after_node_is_refused(tmp_path):
    src, _ = rnn_model(tmp_path / "src.onnx", "GRU", with_initial=False)  # linear_before_reset=0: reset-before
    ckptsurgeon.extract(str(src), str(tmp_path / "k.safetensors"), scope=["enc/rnn"], to="keras")
    tpl, _ = rnn_model(tmp_path / "tpl.onnx", "GRU", with_initial=False, extra_attrs=dict(linear_before_reset=1))
    text = refused(tmp_path / "k.safetensors", "--into", tpl, "-o", tmp_path / "o.onnx")
    assert "reset-before GRU cannot compute what the template's reset-after GRU computes" in text
    assert not (tmp_path / "o.onnx").exists()


# ------------------------------------------------------------------ refusals

def _torch_source(tmp_path, cls="LSTM", **kw):
    torch.manual_seed(9)
    m = getattr(torch.nn, cls)(3, 4, **kw)
    save_file({f"rnn.{k}": v.numpy() for k, v in m.state_dict().items()}, str(tmp_path / "src.safetensors"))
    return tmp_path / "src.safetensors"


@pytest.mark.parametrize("op,attrs,kw,why", [
    ("GRU", {}, {}, "a reset-after GRU cannot compute what the template's reset-before GRU computes"),
    ("LSTM", dict(activations=["HardSigmoid", "Tanh", "Tanh"]), {}, "pass --allow-approx"),
    ("LSTM", dict(clip=1.0), {}, "clip=1.0"),
    ("LSTM", dict(input_forget=1), {}, "input_forget=True"),
    ("LSTM", {}, dict(direction="reverse"), "go_backwards=True"),
])
def test_template_semantics_a_torch_source_cannot_compute_are_refused(tmp_path, op, attrs, kw, why):
    tpl, _ = rnn_model(tmp_path / "t.onnx", op, with_initial=False, extra_attrs=attrs, **kw)
    text = refused(_torch_source(tmp_path, op), "--into", tpl, "-o", tmp_path / "o.onnx")
    assert why in text
    assert not (tmp_path / "o.onnx").exists()


def test_allow_approx_into_a_hard_sigmoid_node_says_so(tmp_path):
    tpl, _ = rnn_model(tmp_path / "t.onnx", "LSTM", with_initial=False, extra_attrs=dict(
        activations=["HardSigmoid", "Tanh", "Tanh"]))
    text = run_graft(_torch_source(tmp_path), "--into", tpl, "--allow-approx", "-o", tmp_path / "o.onnx")
    assert "approximate: (sigmoid, tanh) replaced by (hard_sigmoid_keras2, tanh)" in text


def test_source_that_also_feeds_another_node_is_refused(tmp_path):
    """Writing W's source would change another node too: refused, with the reason, nothing written."""
    tpl, _ = rnn_model(tmp_path / "t.onnx", "LSTM", with_initial=False)
    m = onnx.load(str(tpl))
    m.graph.node.append(onnx.helper.make_node("Identity", ["rnn.W"], ["leak"]))
    m.graph.output.append(onnx.helper.make_tensor_value_info("leak", onnx.TensorProto.FLOAT, None))
    onnx.save(m, str(tpl))
    assert any("cannot be written back" in n for n in one_group(tpl).notes)
    text = refused(_torch_source(tmp_path), "--into", tpl, "-o", tmp_path / "o.onnx")
    assert "also feeds" in text and not (tmp_path / "o.onnx").exists()


def test_weights_fed_at_run_time_are_no_template_group(tmp_path):
    tpl, _ = rnn_model(tmp_path / "t.onnx", "LSTM", with_initial=False)
    m = onnx.load(str(tpl))
    w = next(t for t in m.graph.initializer if t.name == "rnn.W")
    m.graph.initializer.remove(w)
    m.graph.input.append(onnx.helper.make_tensor_value_info("rnn.W", onnx.TensorProto.FLOAT, list(w.dims)))
    onnx.save(m, str(tpl))
    assert ckptsurgeon.rnn.recognize(ckptsurgeon.open(str(tpl))) == []
    text = refused(_torch_source(tmp_path), "--into", tpl, "-o", tmp_path / "o.onnx")
    assert "nothing to replace" in text


def test_graft_api_reports_what_it_wrote(tmp_path):
    tpl, w = rnn_model(tmp_path / "t.onnx", "LSTM", direction="bidirectional", with_initial=False)
    src = _torch_source(tmp_path, bidirectional=True)
    report = graft(str(src), into=str(tpl), out=str(tmp_path / "o.onnx"))
    assert sorted(r.target for r in report.replaced) == ["rnn/B", "rnn/R", "rnn/W"]
    assert report.checks and report.checks[0].ok and report.checks[0].max_abs_diff < 1e-6
    assert report.groups == ["rnn (nn.LSTM) -> enc/rnn (ONNX LSTM node)"]
    with pytest.raises(CheckpointError, match="does not fit"):
        graft(str(_torch_source(tmp_path, num_layers=2)), into=str(tpl), out=str(tmp_path / "p.onnx"),
              map=["rnn=enc/rnn"])


def test_external_data_template_keeps_every_other_byte(tmp_path):
    """Every W/R/B/P of a helper-made model in one external file: only their byte ranges change, in a copy."""
    (tmp_path / "tpl").mkdir()
    (tmp_path / "out").mkdir()
    tpl, w = rnn_model(tmp_path / "tpl" / "m.onnx", "LSTM", direction="bidirectional", external=True, with_initial=False)
    index = ckptsurgeon.open(str(tpl))
    data = index.files[1]
    assert all(index[p].file == data for p in ("rnn/W", "rnn/R", "rnn/B"))
    src = _torch_source(tmp_path, bidirectional=True)
    out = tmp_path / "out" / "m.onnx"
    run_graft(src, "--into", tpl, "-o", out)
    assert tpl.read_bytes() == out.read_bytes()  # the model file itself: locations and all, unchanged
    with open(data, "rb") as f:
        before = f.read()
    after = (tmp_path / "out" / os.path.basename(data)).read_bytes()
    assert assert_bytes_only_changed_inside(before, after, spans(index, ["rnn/W", "rnn/R", "rnn/B"], data)) > 100
    torch.manual_seed(9)
    lstm = torch.nn.LSTM(3, 4, bidirectional=True)
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    for got in (ort_run(out, {"X": x})[0], ref_run(out, {"X": x})[0]):
        np.testing.assert_allclose(flat_y(got), lstm(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-5, atol=1e-5)
