"""A graft template's facts its file does not state, declared (``--template-fact``, ``template_facts=``): a TF1
Saver checkpoint of ``LSTMCell(forget_bias=0.0)`` stores no forget_bias (found by an independent review: grafting
assumed 1.0, verified, and TensorFlow computed 0.14 away). With the Saver's MetaGraph beside it (``PREFIX.meta``, what
a Saver writes by default) the file does state it, and nothing needs declaring. TensorFlow restores the result and is
the judge."""
from __future__ import annotations

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.errors import SelectionError
from tfenv import run_tf

torch = pytest.importorskip("torch")
NET = {"scope": "enc", "kind": "lstm", "hidden": 4, "forget_bias": 0.0}


@pytest.fixture
def case(tmp_path):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-0.8, 0.8)
    torch.save({f"rnn.{k}": v for k, v in lstm.state_dict().items()}, tmp_path / "src.pt")
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    run_tf("tf1", tmp_path, x=str(tmp_path / "x.npz"), nets=[NET], save_template=str(tmp_path / "tpl" / "model.ckpt"),
           save_with_meta=str(tmp_path / "tplmeta" / "model.ckpt"))
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    return tmp_path, want


def _tf_output(tmp_path, prefix):
    return run_tf("tf1", tmp_path, x=str(tmp_path / "x.npz"), nets=[NET], restore="saver", prefix=str(prefix))["enc"]


@pytest.mark.parametrize("declared", [{"forget_bias": 0.0}, ["forget_bias=0"], "forget_bias=0", None])
def test_declared_template_forget_bias_reaches_tensorflows_outputs(case, declared):
    tmp_path, want = case
    out = tmp_path / "out" / "model.ckpt"
    out.parent.mkdir()
    ckptsurgeon.graft(tmp_path / "src.pt", tmp_path / "tpl" / "model.ckpt", str(out), template_facts=declared)
    err = float(np.max(np.abs(_tf_output(tmp_path, out) - want)))
    if declared is None:  # what the file cannot say, assumed 1.0: TensorFlow computes something else
        assert err > 1e-2
    else:
        assert err < 1e-5


def test_a_template_metagraph_states_forget_bias(case):
    """The same template saved with its MetaGraph: forget_bias 0 is read from the graph, TensorFlow computes torch's
    outputs without a declaration, and a declaration against the graph is refused."""
    tmp_path, want = case
    template = tmp_path / "tplmeta" / "model.ckpt"
    group = ckptsurgeon.rnn(template).groups[0]
    assert group.to_dict()["forget_bias"] == 0.0 and group.provenance["forget_bias"].startswith("file: MetaGraph model.ckpt.meta")
    out = tmp_path / "out" / "model.ckpt"
    out.parent.mkdir()
    ckptsurgeon.graft(tmp_path / "src.pt", template, str(out))
    assert float(np.max(np.abs(_tf_output(tmp_path, out) - want))) < 1e-5
    with pytest.raises(SelectionError, match="the file states forget_bias"):
        ckptsurgeon.graft(tmp_path / "src.pt", template, str(tmp_path / "o" / "model.ckpt"), template_facts=["forget_bias=1"])


def test_a_declared_fact_never_overrides_what_the_template_states(tmp_path):
    torch.save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "src.pt")
    torch.save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "tpl.pt")  # PyTorch's layout states tanh
    with pytest.raises(SelectionError, match="the file states activation='tanh'"):
        ckptsurgeon.graft(tmp_path / "src.pt", tmp_path / "tpl.pt", str(tmp_path / "o.pt"), template_facts=["activation=relu"])
    with pytest.raises(SelectionError, match="not a fact a template can be given"):
        ckptsurgeon.graft(tmp_path / "src.pt", tmp_path / "tpl.pt", str(tmp_path / "o.pt"), template_facts=["colour=red"])


def test_the_cli_declares_template_facts_and_refusals_say_how(case):
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    tmp_path, want = case
    out = tmp_path / "cli" / "model.ckpt"
    out.parent.mkdir()
    args = ["graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "tpl" / "model.ckpt"), "-o", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "--template-fact NAME=VALUE" in res.output, res.output  # the note says how
    res = CliRunner().invoke(cli, args + ["--force", "--template-fact", "forget_bias=0"])
    assert res.exit_code == 0, res.output
    assert float(np.max(np.abs(_tf_output(tmp_path, out) - want))) < 1e-5


def test_a_source_without_bias_zeroes_the_template_groups_bias(tmp_path):
    """nn.LSTM(bias=False) into a Keras template that has one (was refused as 0.113 away): the bias becomes zeros,
    and Keras computes what torch computes."""
    keras = pytest.importorskip("keras")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, bias=False, batch_first=True)
    torch.save(lstm.state_dict(), tmp_path / "nb.pt")
    inp = keras.Input((5, 3))
    model = keras.Model(inp, keras.layers.LSTM(4, return_sequences=True)(inp))
    for w in model.weights:
        w.assign(np.random.default_rng(0).uniform(-0.5, 0.5, w.shape).astype("float32"))
    model.save(tmp_path / "tpl.keras")
    report = ckptsurgeon.graft(tmp_path / "nb.pt", tmp_path / "tpl.keras", str(tmp_path / "out.keras"))
    assert any("written as zeros" in n for n in report.notes)
    model.load_weights(tmp_path / "out.keras")
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype("float32")
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), want, atol=1e-5)
