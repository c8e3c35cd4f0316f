"""One ``nn.LSTMCell`` used by two ONNX LSTM nodes: torch exports a scripted cell called in both branches of an
``if`` (silero-vad's ``.onnx`` files: a branch with the state passed in, one with zeros) as an ``If`` holding an
LSTM node in each branch, both fed from the same state-dict tensors through their own Slice/Concat chains.

Rewriting those tensors rewrites both nodes: it is what the user asks (their cell, fine-tuned), and exact when
both nodes compute with the same facts and, folded again, get the values written. Anything else that would
change with the tensors (another consumer of a source, of a chain's intermediate value or of its result) is
still refused. The updated model is checked in onnxruntime against the torch module, in both branches."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from onnx_models import onnx, rnn_model
from onnx_rnn_helpers import input_names, one_group, ort_run, ref_run

import ckptsurgeon
from ckptsurgeon.cli import cli

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _module(seed: int):
    class TwoCalls(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(3, 4)

        def forward(self, x, h, c, fresh: bool):
            if fresh:
                h, c = self.cell(x)
            else:
                h, c = self.cell(x, (h, c))
            return h, c

    torch.manual_seed(seed)
    return TwoCalls()


def _export(path):
    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.tensor(False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(_module(0)), args, str(path), dynamo=False, opset_version=16)
    return path


def _graft(*args, code: int = 0) -> str:
    res = CliRunner().invoke(cli, ["graft", *map(str, args)])
    assert res.exit_code == code and "Traceback" not in res.output, res.output
    return res.output


def _lstm_nodes(model) -> list:
    out = []
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out += [n for n in attr.g.node if n.op_type == "LSTM"]
    return out


def test_both_nodes_are_one_group(tmp_path):
    tpl = _export(tmp_path / "two.onnx")
    assert len(_lstm_nodes(onnx.load(str(tpl)))) == 2
    group = one_group(tpl)
    assert group.scope == "If/then_branch/cell/LSTM"
    assert set(group.members) == {"cell/weight_ih", "cell/weight_hh", "cell/bias_ih", "cell/bias_hh"}
    assert any("If/else_branch/cell_1/LSTM computes with the same tensors" in n for n in group.notes)
    assert not any("cannot be written back" in n for n in group.notes)


def test_fine_tuned_cell_grafted_into_both_branches(tmp_path):
    """The issue-14 scenario on silero-vad's structure: weights to torch, 'fine-tuned', back into the .onnx."""
    tpl = _export(tmp_path / "two.onnx")
    ckptsurgeon.extract(str(tpl), str(tmp_path / "cell.safetensors"), scope=["If/then_branch/cell/LSTM"],
                        to="torch-cell", rename=[("If/then_branch/cell/LSTM/", "")])
    from safetensors.torch import load_file

    new = _module(0)
    new.cell.load_state_dict(load_file(str(tmp_path / "cell.safetensors")), strict=True)
    with torch.no_grad():
        for p in new.cell.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    torch.save(new.cell.state_dict(), tmp_path / "tuned.pt")
    out = tmp_path / "tuned.onnx"
    text = _graft(tmp_path / "tuned.pt", "--into", tpl, "-o", out)
    assert "verified / -> If/then_branch/cell/LSTM: max abs diff 0" in text

    after = ckptsurgeon.open(str(out))
    for name, value in new.cell.state_dict().items():
        assert np.array_equal(after[f"cell/{name}"].numpy(), value.numpy()), name
    names = input_names(tpl)
    for fresh in (True, False):  # each branch: its own LSTM node
        args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.tensor(fresh))
        feeds = {n: a.numpy() for n, a in zip(names, args) if n in names}
        want = [t.detach().numpy() for t in new(*args)]
        for got in (ort_run(out, feeds), ref_run(out, feeds)):
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        assert np.abs(ort_run(tpl, feeds)[0] - want[0]).max() > 1e-3  # the template computed something else


def test_nodes_with_other_facts_are_not_written_together(tmp_path):
    """The same tensors in a node with another fact (a clip): one cell no more; writing them back is refused."""
    tpl = _export(tmp_path / "two.onnx")
    m = onnx.load(str(tpl))
    _lstm_nodes(m)[1].attribute.append(onnx.helper.make_attribute("clip", 0.5))
    onnx.save(m, str(tmp_path / "clip.onnx"))
    torch.save(_module(3).cell.state_dict(), tmp_path / "cell.pt")
    text = _graft(tmp_path / "cell.pt", "--into", tmp_path / "clip.onnx", "--map", "/=If/then_branch/cell/LSTM",
                  "-o", tmp_path / "o.onnx", code=1)
    assert "cannot be written back" in text and "also feeds" in text and not (tmp_path / "o.onnx").exists()


def test_a_consumer_of_a_chain_value_blocks_the_write_back(tmp_path):
    """W = Identity(src): a node reading the Identity's output would change with src too (refused; it was
    written before without a word)."""
    tpl, w = rnn_model(tmp_path / "t.onnx", "LSTM", with_initial=False)
    m = onnx.load(str(tpl))
    node = m.graph.node[0]
    node.input[1] = "W_moved"
    m.graph.node.insert(0, onnx.helper.make_node("Identity", ["rnn.W"], ["W_moved"], name="move"))
    m.graph.node.append(onnx.helper.make_node("Neg", ["W_moved"], ["other"], name="other_use"))
    m.graph.output.append(onnx.helper.make_tensor_value_info("other", onnx.TensorProto.FLOAT, None))
    onnx.save(m, str(tpl))
    group = one_group(tpl)
    assert any("W cannot be written back" in n and "other_use" in n for n in group.notes), group.notes
    lstm = torch.nn.LSTM(3, 4)
    torch.save({f"rnn.{k}": v for k, v in lstm.state_dict().items()}, tmp_path / "src.pt")
    text = _graft(tmp_path / "src.pt", "--into", tpl, "-o", tmp_path / "o.onnx", code=1)
    assert "also feeds other_use" in text and not (tmp_path / "o.onnx").exists()


def test_either_node_scope_selects_the_cell(tmp_path):
    tpl = _export(tmp_path / "two.onnx")
    assert one_group(tpl).uses == ["If/else_branch/cell_1/LSTM"]
    for scope in ("If/then_branch/cell/LSTM", "If/else_branch/cell_1/LSTM"):
        res = ckptsurgeon.extract(str(tpl), str(tmp_path / "c.safetensors"), scope=[scope], to="torch-cell",
                                  rename=[("If/then_branch/cell/LSTM/", "")], force=True)
        assert sorted(res.written) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]


def test_a_source_group_at_the_root_is_named_slash(tmp_path):
    """``torch.save(cell.state_dict())`` holds its group at the root scope: messages call it '/', and
    ``--map '/=DST'`` pairs it when the template has several groups."""
    torch.manual_seed(4)
    a, b, src = torch.nn.LSTMCell(3, 4), torch.nn.LSTMCell(3, 4), torch.nn.LSTMCell(3, 4)
    torch.save({**{f"a.{k}": v for k, v in a.state_dict().items()}, **{f"b.{k}": v for k, v in b.state_dict().items()}},
               tmp_path / "two.pt")
    torch.save(src.state_dict(), tmp_path / "cell.pt")
    text = _graft(tmp_path / "cell.pt", "--into", tmp_path / "two.pt", "-o", tmp_path / "o.pt", code=1)
    assert "source groups: ['/']" in text and "--map '/=DST'" in text
    text = _graft(tmp_path / "cell.pt", "--into", tmp_path / "two.pt", "--map", "/=b", "-o", tmp_path / "o.pt")
    assert "replace b/weight_ih <- / (weight_ih)" in text
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    for k, v in src.state_dict().items():
        assert torch.equal(out[f"b.{k}"], v) and torch.equal(out[f"a.{k}"], a.state_dict()[k]), k
