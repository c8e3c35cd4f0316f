"""Graft into downstream templates: the real framework loads the result strictly and computes what
the source computed; everything else stays byte-identical to the template."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from conftest import FIXTURES
from rnn_helpers import TF, tf_outputs

torch = pytest.importorskip("torch")


class Downstream(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 3)
        self.encoder = torch.nn.Module()
        self.encoder.cell = torch.nn.LSTMCell(3, 4)
        self.head = torch.nn.Linear(4, 2)


def _untouched_bytes_equal(template, out, replaced):
    a, b = ckptsurgeon.open(template), ckptsurgeon.open(out)
    assert list(a) == list(b) and [r.dtype for r in a.values()] == [r.dtype for r in b.values()]
    for path in a:
        if path not in replaced:
            assert a[path].numpy().tobytes() == b[path].numpy().tobytes(), path


def test_tf1_lstmcell_into_torch_template(tmp_path):
    torch.manual_seed(0)
    template = tmp_path / "init.pt"
    torch.save(Downstream().state_dict(), template)
    out = tmp_path / "grafted.pt"
    res = CliRunner().invoke(cli, ["graft", str(TF / "tf1_lstmcell" / "model.ckpt"), "--into", str(template),
                                   "-o", str(out), "--map", "LSTMcell/*=encoder/cell/*"])
    assert res.exit_code == 0, res.output
    assert "matched LSTMcell (hand-built per-gate LSTM) -> encoder/cell (nn.LSTMCell)" in res.output
    model = Downstream()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ref = tf_outputs("tf1_lstmcell")
    h = c = torch.zeros(2, 4)
    hs = []
    for x in torch.tensor(ref["x"]):
        h, c = model.encoder.cell(x, (h, c))
        hs.append(h)
    np.testing.assert_allclose(torch.stack(hs).detach().numpy(), ref["h"], atol=1e-5)
    _untouched_bytes_equal(template, out, {f"encoder/cell/{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})


def test_lightning_and_safetensors_templates(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = Downstream()
    ckpt = tmp_path / "init.ckpt"
    torch.save({"state_dict": model.state_dict(), "epoch": 0, "optimizer_states": []}, ckpt)
    st = tmp_path / "init.safetensors"
    save_file(model.state_dict(), str(st), metadata={"note": "kept"})
    for template, suffix in ((ckpt, ".ckpt"), (st, ".safetensors")):
        out = tmp_path / f"out{suffix}"
        report = ckptsurgeon.graft(TF / "tf1_lstmcell", template, out, scope=["LSTMcell"])
        assert len(report.replaced) == 4 and report.unused == []
        _untouched_bytes_equal(template, out, {r.target for r in report.replaced})
    assert ckptsurgeon.open(tmp_path / "out.ckpt").metadata["epoch"] == 0
    assert ckptsurgeon.open(tmp_path / "out.safetensors").metadata["__metadata__"] == {"note": "kept"}


keras = pytest.importorskip("keras")


def _keras_template(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6, 5)), keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="bi"),
                              keras.layers.Dense(2, name="head")])
    model.save_weights(tmp_path / "tpl.weights.h5")
    model.save(tmp_path / "tpl.keras")
    return model


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_torch_bidirectional_lstm_into_keras_templates(tmp_path, suffix):
    template_model = _keras_template(tmp_path)
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(5, 4, bidirectional=True, batch_first=True)
    src = tmp_path / "lstm.pt"
    torch.save({"rnn." + k: v for k, v in lstm.state_dict().items()}, src)
    out = tmp_path / f"out{suffix}"
    report = ckptsurgeon.graft(src, tmp_path / f"tpl{suffix}", out, map=["rnn=bi"], strict=False)
    assert report.groups == ["rnn (nn.LSTM) -> bi (Bidirectional(Keras LSTM))"]
    assert len(report.replaced) == 6 and all(p.startswith("head/") for p in report.untouched)
    model = keras.models.clone_model(template_model) if suffix == ".weights.h5" else None
    if suffix == ".keras":
        model = keras.saving.load_model(out)
    else:
        model.load_weights(out)
    x = np.random.default_rng(0).standard_normal((2, 6, 5)).astype(np.float32)
    got = keras.ops.convert_to_numpy(model.get_layer("bi")(x))
    np.testing.assert_allclose(got, lstm(torch.tensor(x))[0].detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(model.get_layer("head").get_weights()[0], template_model.get_layer("head").get_weights()[0])



def _tfkeras_bi_layer_output(x):
    """The tf.keras file's 'bi' GRU layer evaluated by Keras 3 after loading the legacy .h5."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("models", FIXTURES / "keras" / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    model = models.build(keras)
    model.load_weights(FIXTURES / "keras" / "tfkeras" / "model.h5")
    return keras.ops.convert_to_numpy(model.get_layer("bi")(x))


class GruDownstream(torch.nn.Module):
    def __init__(self, hidden: int, reset_before: bool = False) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(16, hidden, bidirectional=not reset_before, batch_first=True)
        self.out = torch.nn.Linear(hidden, 1)


def test_tfkeras_reset_after_gru_into_torch_template(tmp_path):
    template = tmp_path / "gru.pt"
    torch.save(GruDownstream(8).state_dict(), template)
    out = tmp_path / "out.pt"
    res = CliRunner().invoke(cli, ["graft", str(FIXTURES / "keras" / "tfkeras" / "model.h5"), "--into", str(template),
                                   "-o", str(out), "--scope", "bi"])
    assert res.exit_code == 0, res.output
    model = GruDownstream(8)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(model.gru(torch.tensor(x))[0].detach().numpy(), _tfkeras_bi_layer_output(x), atol=1e-5)


def test_reset_before_gru_into_torch_template_is_refused(tmp_path):
    template = tmp_path / "gru.pt"
    torch.save(GruDownstream(6, reset_before=True).state_dict(), template)
    res = CliRunner().invoke(cli, ["graft", str(FIXTURES / "keras" / "tfkeras" / "model.h5"), "--into", str(template),
                                   "-o", str(tmp_path / "o.pt"), "--scope", "gru_reset_before"])
    assert res.exit_code == 1 and "reset-before" in res.output and not (tmp_path / "o.pt").exists()


def test_shape_misfit_strict_and_nothing_replaced(tmp_path):
    class Wrong(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(3, 5)

    template = tmp_path / "wrong.pt"
    torch.save(Wrong().state_dict(), template)
    res = CliRunner().invoke(cli, ["graft", str(TF / "tf1_lstmcell"), "--into", str(template), "-o", str(tmp_path / "o.pt"), "-s", "LSTMcell"])
    assert res.exit_code == 1 and "does not fit template group" in res.output
    good = tmp_path / "good.pt"
    torch.save(Downstream().state_dict(), good)
    res = CliRunner().invoke(cli, ["graft", str(TF / "tf1_lstmcell"), "--into", str(good), "-o", str(tmp_path / "s.pt"),
                                   "-s", "LSTMcell", "--strict"])
    assert res.exit_code == 1 and "--strict: 3 template tensor(s) untouched" in res.output
    res = CliRunner().invoke(cli, ["graft", str(FIXTURES / "torch" / "model.pt"), "--into", str(good), "-o", str(tmp_path / "n.pt"),
                                   "-s", "head"])
    assert res.exit_code == 1 and "nothing to replace" in res.output
    res = CliRunner().invoke(cli, ["graft", str(TF / "tf1_lstmcell"), "--into", str(good), "-s", "LSTMcell", "--dry-run", "--json"])
    data = json.loads(res.output)
    assert data["dry_run"] and len(data["replaced"]) == 4 and not (tmp_path / "s.pt").exists()


def test_load_into_reports_per_key(tmp_path):
    from ckptsurgeon.torch import load_into

    model = Downstream()
    before = model.head.weight.detach().clone()
    report = load_into(model, TF / "tf1_lstmcell", scope=["LSTMcell"], map=["LSTMcell/*=encoder/cell/*"])
    assert sorted(report.loaded) == sorted(f"encoder.cell.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    assert report.missing == ["embed.weight", "head.weight", "head.bias"] and report.mismatched == []
    assert torch.equal(model.head.weight, before)
    ref = tf_outputs("tf1_lstmcell")
    h, c = model.encoder.cell(torch.tensor(ref["x"][0]))
    np.testing.assert_allclose(h.detach().numpy(), ref["h"][0], atol=1e-5)
    small = torch.nn.Module()
    small.cell = torch.nn.LSTMCell(3, 5)
    report = load_into(small, TF / "tf1_lstmcell", scope=["LSTMcell"])
    assert report.loaded == [] and report.mismatched and "does not fit" in report.mismatched[0]


def test_torch_lstm_into_tfkeras_h5_template(tmp_path):
    """A tf.keras 2 full-model .h5 as the template; Keras 3 loads the result (legacy .h5 loading)."""
    import importlib.util

    torch.manual_seed(6)
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    src = tmp_path / "enc.pt"
    torch.save({"enc." + k: v for k, v in lstm.state_dict().items()}, src)
    out = tmp_path / "out.h5"
    report = ckptsurgeon.graft(src, FIXTURES / "keras" / "tfkeras" / "model.h5", out, map=["enc=encoder_lstm"])
    assert report.groups == ["enc (nn.LSTM) -> encoder_lstm (Keras LSTM)"]
    _untouched_bytes_equal(FIXTURES / "keras" / "tfkeras" / "model.h5", out, {r.target for r in report.replaced})
    spec = importlib.util.spec_from_file_location("models", FIXTURES / "keras" / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    model = models.build(keras)
    model.load_weights(out)
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    got = keras.ops.convert_to_numpy(model.get_layer("encoder_lstm")(x))
    np.testing.assert_allclose(got, lstm(torch.tensor(x))[0].detach().numpy(), atol=1e-5)


def test_npz_template(tmp_path):
    torch.manual_seed(7)
    model = Downstream()
    template = tmp_path / "init.npz"
    ckptsurgeon.save({k: v.numpy() for k, v in model.state_dict().items()}, template)
    out = tmp_path / "out.npz"
    report = ckptsurgeon.graft(TF / "tf1_lstmcell", template, out, scope=["LSTMcell"])
    assert len(report.replaced) == 4
    with np.load(out) as z:  # numpy's own reader checks the member CRCs we rewrote
        assert list(z.files) == list(model.state_dict())
        np.testing.assert_array_equal(z["head.weight"], model.state_dict()["head.weight"].numpy())
        assert not np.array_equal(z["encoder.cell.weight_ih"], model.state_dict()["encoder.cell.weight_ih"].numpy())
    _untouched_bytes_equal(template, out, {r.target for r in report.replaced})


def test_keras_load_into(tmp_path):
    from ckptsurgeon.keras import load_into

    model = _keras_template(tmp_path)
    head = model.get_layer("head").get_weights()[0].copy()
    torch.manual_seed(8)
    lstm = torch.nn.LSTM(5, 4, bidirectional=True, batch_first=True)
    src = tmp_path / "lstm.pt"
    torch.save({"rnn." + k: v for k, v in lstm.state_dict().items()}, src)
    report = load_into(model, src, map=["rnn=bi"])
    assert len(report.replaced) == 6
    x = np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("bi")(x)), lstm(torch.tensor(x))[0].detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(model.get_layer("head").get_weights()[0], head)
    small = keras.Sequential([keras.Input((6, 5)), keras.layers.Bidirectional(keras.layers.LSTM(3), name="bi")])
    before = [w.copy() for w in small.get_weights()]
    with pytest.raises(ckptsurgeon.PlanError, match="does not fit"):
        load_into(small, src, map=["rnn=bi"])
    assert all(np.array_equal(a, b) for a, b in zip(before, small.get_weights()))
