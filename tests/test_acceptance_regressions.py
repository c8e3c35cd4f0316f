"""Regressions found by trying ckptsurgeon on third-party checkpoints (see fixtures/third_party/README.md),
each reproduced here with the real framework on a small file of the same structure."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli

torch = pytest.importorskip("torch")


def _cli(*args, code: int = 0) -> str:
    res = CliRunner().invoke(cli, [*map(str, args)])
    assert res.exit_code == code and "Traceback" not in res.output, res.output
    return res.output


@pytest.mark.parametrize("name", ["optimizer_state", "opt", "adam"])
@pytest.mark.parametrize("legacy", [False, True])
def test_optimizer_state_is_found_by_structure(tmp_path, name, legacy):
    """Resemblyzer's pretrained.pt: {"step", "model_state", "optimizer_state"} (Adam). Any top-level entry
    holding a torch.optim state dict ({"state", "param_groups"}) is optimizer state, whatever its name."""
    torch.manual_seed(0)
    model = torch.nn.LSTM(3, 4)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 3))[0].sum().backward()
    opt.step()
    torch.save({"step": 1, "model_state": model.state_dict(), name: opt.state_dict()}, tmp_path / "ck.pt",
               _use_new_zipfile_serialization=not legacy)
    index = ckptsurgeon.open(str(tmp_path / "ck.pt"))
    marked = {p for p, r in index.items() if r.optimizer}
    assert marked and all(p.startswith(f"{name}/state/") for p in marked)
    assert len(marked) == 3 * 4  # exp_avg, exp_avg_sq (+ step, a tensor since torch 1.12) per parameter
    text = _cli("extract", tmp_path / "ck.pt", "-o", tmp_path / "out.safetensors")
    assert "left out 12 optimizer tensors" in text
    from safetensors.numpy import load_file

    assert sorted(load_file(str(tmp_path / "out.safetensors"))) == sorted(f"model_state.{k}" for k in model.state_dict())


def test_plain_npz_outputs_hold_only_the_tensors(tmp_path):
    """g2p_en's checkpoint20.npz renamed to PyTorch names (``--map``) for ``rnn``: the npz must hold only
    its arrays (code that iterates ``numpy.load(f).files`` sees no extra member); conversions still get one."""
    rng = np.random.default_rng(0)
    arrays = {f"enc_{k}": rng.standard_normal(s).astype(np.float32)
              for k, s in (("w_ih", (12, 3)), ("w_hh", (12, 4)), ("b_ih", (12,)), ("b_hh", (12,)))}
    np.savez(tmp_path / "g2p.npz", **arrays)
    maps = ("--map", "{m}_w_{x}={m}/weight_{x}", "--map", "{m}_b_{x}={m}/bias_{x}")
    _cli("extract", tmp_path / "g2p.npz", *maps, "-o", tmp_path / "e.npz")
    _cli("remap", tmp_path / "g2p.npz", *maps, "-o", tmp_path / "r.npz")
    for name in ("e.npz", "r.npz"):
        with np.load(tmp_path / name) as z:
            assert sorted(z.files) == ["enc/bias_hh", "enc/bias_ih", "enc/weight_hh", "enc/weight_ih"], name
            assert np.array_equal(z["enc/weight_ih"], arrays["enc_w_ih"])
    assert "enc: GRU [nn.GRUCell] input 3, hidden 4" in _cli("rnn", tmp_path / "e.npz")
    _cli("extract", tmp_path / "e.npz", "--to", "keras", "-o", tmp_path / "k.npz")
    with np.load(tmp_path / "k.npz") as z:
        assert "__metadata__" in z.files  # a conversion describes itself (README: rnn:<scope>)


def test_a_trained_scalar_is_not_called_a_constant_initializer(tmp_path):
    """Resemblyzer's similarity_weight/bias: nn.Parameter([10.]) and ([-5.]) at init, 70.89 and -4.18 trained.
    One value is 'constant' whatever it is; only a round one says 'constant initializer'."""
    torch.save({"w": torch.tensor([10.0]), "b": torch.tensor([-5.0])}, tmp_path / "init.pt")
    torch.save({"w": torch.tensor([70.89286]), "b": torch.tensor([-4.180728])}, tmp_path / "trained.pt")
    init, trained = _cli("stats", tmp_path / "init.pt"), _cli("stats", tmp_path / "trained.pt")
    assert "-> constant 10" in init and "-> constant -5" in init
    assert trained.count("-> too few values to tell") == 2 and "constant" not in trained


def test_two_source_groups_fitting_one_template_group_are_not_guessed(tmp_path):
    """silero_vad.onnx holds the 16 kHz and the 8 kHz model, each with an LSTM of the same sizes; grafted into
    a checkpoint with one cell, neither is chosen by kind and sizes: the error lists both (was: four 'both map to
    template' problems in one 1,300-character line)."""
    torch.manual_seed(0)
    a, b, c = (torch.nn.LSTMCell(3, 4) for _ in range(3))
    torch.save({**{f"k16.{k}": v for k, v in a.state_dict().items()}, **{f"k8.{k}": v for k, v in b.state_dict().items()}},
               tmp_path / "two.pt")
    torch.save({f"lstm_cell.{k}": v for k, v in c.state_dict().items()}, tmp_path / "one.pt")
    text = _cli("graft", tmp_path / "two.pt", "--into", tmp_path / "one.pt", "-o", tmp_path / "o.pt", code=1)
    assert "source groups: ['k16', 'k8'], template groups: ['lstm_cell']" in text and "both map" not in text
    assert not (tmp_path / "o.pt").exists()
    _cli("graft", tmp_path / "two.pt", "--into", tmp_path / "one.pt", "--map", "k8=lstm_cell", "-o", tmp_path / "o.pt")
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert all(torch.equal(out[f"lstm_cell.{k}"], v) for k, v in b.state_dict().items())


class _BatchFirst(torch.nn.Module):
    """Resemblyzer's speaker encoder: a batch-first 3-layer nn.LSTM, then a projection."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 6, 3, batch_first=True)
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.linear(h[-1])


@pytest.mark.parametrize("dynamo", [False, True])
def test_pretrained_batch_first_lstm_into_its_onnx_export(tmp_path, dynamo):
    """torch.onnx.export of a batch-first model: the first layer's X is Transpose(input); the dynamo exporter
    links the layers with Reshape([T, B, D*H]) hard-coding the sizes declared for that input, so the sizes are
    followed through the Transpose (was: three 1-layer groups, and a 3-layer source fitting none). ``--map``
    onto the module's scope ('lstm') names the export's node group inside it ('lstm/LSTM')."""
    if dynamo:
        pytest.importorskip("onnxscript")
    import warnings

    from onnx_rnn_helpers import input_names, one_group, ort_run

    torch.manual_seed(0)
    x = torch.randn(2, 7, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_BatchFirst(), (x,), str(tmp_path / "enc.onnx"), dynamo=dynamo)
    group = one_group(tmp_path / "enc.onnx")
    assert group.num_layers == 3 and group.input_size == 5 and group.hidden_size == 6
    torch.manual_seed(1)
    pretrained = _BatchFirst()
    torch.save({"step": 3, "model_state": pretrained.state_dict()}, tmp_path / "pretrained.pt")
    maps = ("--map", "model_state/lstm=lstm") if not dynamo else ()
    (tmp_path / "out").mkdir()  # the dynamo exporter writes external data: the output goes to another folder
    text = _cli("graft", tmp_path / "pretrained.pt", "--into", tmp_path / "enc.onnx", *maps, "-o", tmp_path / "out" / "o.onnx")
    assert f"matched model_state/lstm (nn.LSTM) -> {group.scope} (ONNX LSTM nodes x3 layers)" in text
    template = ckptsurgeon.open(str(tmp_path / "enc.onnx"))
    with torch.no_grad():  # the expectation: the pretrained LSTM with the template's own projection
        pretrained.linear.weight.copy_(torch.from_numpy(template["linear/weight"].numpy()))
        pretrained.linear.bias.copy_(torch.from_numpy(template["linear/bias"].numpy()))
        want = pretrained(x).numpy()
    got = ort_run(tmp_path / "out" / "o.onnx", {input_names(tmp_path / "enc.onnx")[0]: x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_damaged_tflite_model_is_named_as_one(tmp_path):
    """basic-pitch ships nmp.tflite beside its SavedModel: a flatbuffer whose file identifier 'TFL3' follows the
    4-byte root offset (flatbuffers' layout). TFLite is read now (tests/test_tflite.py); a damaged one is said
    plainly instead of 'unrecognized ... first bytes'."""
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    res = CliRunner().invoke(cli, ["ls", str(tmp_path / "m.tflite")])
    assert res.exit_code == 1 and "a TensorFlow Lite flatbuffer (.tflite) that cannot be read" in res.output, res.output


def test_a_cell_exported_as_elementary_ops_is_recognized_by_names_with_a_note(tmp_path):
    """silero_vad_op18_ifless.onnx: torch's dynamo exporter writes nn.LSTMCell as Gemm/Sigmoid/Tanh on the
    state-dict initializers. Recognized by their names (a note says the ops are not checked); grafting through
    those names gives what the torch cell with the new weights computes (onnxruntime)."""
    pytest.importorskip("onnxscript")
    import warnings

    from onnx_rnn_helpers import input_names, one_group, ort_run

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(3, 4)

        def forward(self, x, h, c):
            return self.cell(x, (h, c))

    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4))
    (tmp_path / "t").mkdir()
    (tmp_path / "o").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(M(), args, str(tmp_path / "t" / "m.onnx"), dynamo=True)
    group = one_group(tmp_path / "t" / "m.onnx")
    assert group.scope == "cell" and group.variant == "nn.LSTMCell"
    assert any("no LSTM/GRU node of the graph uses them" in n for n in group.notes)
    new = M()
    torch.save(new.cell.state_dict(), tmp_path / "cell.pt")
    _cli("graft", tmp_path / "cell.pt", "--into", tmp_path / "t" / "m.onnx", "-o", tmp_path / "o" / "m.onnx")
    feeds = dict(zip(input_names(tmp_path / "t" / "m.onnx"), (a.numpy() for a in args)))
    with torch.no_grad():
        want = [t.numpy() for t in new(*args)]
    for got, w in zip(ort_run(tmp_path / "o" / "m.onnx", feeds), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
