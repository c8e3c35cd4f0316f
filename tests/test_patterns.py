"""A plain string is one pattern wherever the public API takes a list of patterns (issue 10, item 13)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.scopes import as_patterns
from rnn_helpers import TF, tf_outputs

torch = pytest.importorskip("torch")


class Downstream(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.cell = torch.nn.LSTMCell(3, 4)
        self.head = torch.nn.Linear(4, 2)


def _run_cell(cell, xs):
    h = c = torch.zeros(xs.shape[1], 4)
    out = []
    for x in torch.tensor(xs):
        h, c = cell(x, (h, c))
        out.append(h)
    return torch.stack(out).detach().numpy()


def test_as_patterns():
    assert as_patterns("LSTMcell/*") == ("LSTMcell/*",)
    assert as_patterns(["a", "b"]) == ("a", "b") and as_patterns(None) == () and as_patterns(()) == ()
    with pytest.raises(ckptsurgeon.SelectionError, match="expected strings"):
        as_patterns([3])


def test_torch_load_into_with_string_scope_and_map():
    from ckptsurgeon.torch import load_into

    model = Downstream()
    report = load_into(model, TF / "tf1_lstmcell", scope="LSTMcell/*", map="LSTMcell/*=encoder/cell/*")
    assert sorted(report.loaded) == sorted(f"encoder.cell.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    ref = tf_outputs("tf1_lstmcell")
    np.testing.assert_allclose(_run_cell(model.encoder.cell, ref["x"]), ref["h"], atol=1e-5)


def test_graft_extract_select_and_map_with_strings(tmp_path):
    template = tmp_path / "init.pt"
    torch.save(Downstream().state_dict(), template)
    report = ckptsurgeon.graft(TF / "tf1_lstmcell", template, tmp_path / "out.pt", scope="LSTMcell",
                               map="LSTMcell/*=encoder/cell/*")
    assert len(report.replaced) == 4
    model = Downstream()
    model.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True))
    ref = tf_outputs("tf1_lstmcell")
    np.testing.assert_allclose(_run_cell(model.encoder.cell, ref["x"]), ref["h"], atol=1e-5)

    res = ckptsurgeon.extract(TF / "tf1_lstmcell", tmp_path / "e.safetensors", scope="LSTMcell/*",
                              exclude="LSTMcell/output_gate", map="LSTMcell/*=enc/*")
    assert len(res.written) == 9 and all(k.startswith("enc/") and "output_gate" not in k for k in res.written)

    index = ckptsurgeon.open(TF / "tf1_lstmcell")
    picked = index.select("LSTMcell", exclude="**/Adam*")
    assert len(picked) == 12 and not any("Adam" in p for p in picked)
    assert list(index.select(["LSTMcell/input_gate", "LSTMcell/forget_gate"])) == \
        list(index.select("LSTMcell/input_gate", "LSTMcell/forget_gate"))
    assert [r.target for r in ckptsurgeon.parse_map("a=b")] == ["b"]


def test_open_with_one_allow_global_string(tmp_path):
    class Config:
        pass

    Config.__module__, Config.__qualname__ = "myproj2.config", "Config"
    sys.modules.setdefault("myproj2", type(sys)("myproj2"))
    sys.modules["myproj2.config"] = mod = type(sys)("myproj2.config")
    mod.Config = Config
    path = tmp_path / "cfg.pt"
    torch.save({"w": torch.ones(2), "config": Config()}, path)
    index = ckptsurgeon.open(path, allow_globals="myproj2.config.Config")
    assert list(index) == ["w"]


def test_validate_allow_missing_string(tmp_path):
    from ckptsurgeon.check.layout import make_layout
    from ckptsurgeon.check.validate import validate

    full = ckptsurgeon.open(TF / "tf1_lstmcell").select("LSTMcell", include_optimizer=False)
    part = full.select("LSTMcell", exclude="LSTMcell/output_gate")
    findings = validate(part, make_layout(full), allow_missing="LSTMcell/output_gate")
    assert [f.kind for f in findings if f.kind == "missing"] == []
