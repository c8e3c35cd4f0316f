"""Scope paths and glob selection."""
from __future__ import annotations

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.index import CheckpointIndex, TensorRef
from ckptsurgeon.scopes import compile_glob, matches

PATHS = ["LSTMcell/input_gate/wx", "LSTMcell/input_gate/bi", "LSTMcell/forget_gate/wx",
         "encoder/rnn/weight_ih_l0", "encoder/rnn/weight_hh_l0", "head/bias", "LSTMcellX/w"]


def _index() -> CheckpointIndex:
    refs = [TensorRef(p, p.replace("/", "."), np.dtype("float32"), (1,), "mem", loader=lambda: np.zeros(1, np.float32))
            for p in PATHS]
    return CheckpointIndex(refs, format="test", files=["mem"])


@pytest.mark.parametrize("pattern,expected", [
    ("LSTMcell", PATHS[:3]),
    ("LSTMcell/*", PATHS[:3]),
    ("LSTMcell/*/wx", ["LSTMcell/input_gate/wx", "LSTMcell/forget_gate/wx"]),
    ("**/wx", ["LSTMcell/input_gate/wx", "LSTMcell/forget_gate/wx"]),
    ("encoder/**/weight_?h_l0", ["encoder/rnn/weight_ih_l0", "encoder/rnn/weight_hh_l0"]),
    ("encoder/rnn/weight_[i]h_l0", ["encoder/rnn/weight_ih_l0"]),
    ("LSTMcell/[!i]*", ["LSTMcell/forget_gate/wx"]),
    ("**", PATHS),
])
def test_glob_selection(pattern, expected):
    assert list(_index().select(pattern)) == expected


def test_union_exclude_and_regex():
    idx = _index()
    assert list(idx.select("head", "encoder/rnn/weight_ih_l0")) == ["encoder/rnn/weight_ih_l0", "head/bias"]
    assert list(idx.select("LSTMcell", exclude=["**/bi"])) == ["LSTMcell/input_gate/wx", "LSTMcell/forget_gate/wx"]
    assert list(idx.select(r"encoder/rnn/weight_(ih|hh)_l\d", regex=True)) == PATHS[3:5]


def test_no_match_lists_closest_scopes():
    with pytest.raises(ckptsurgeon.SelectionError, match="closest scopes: LSTMcell"):
        _index().select("LSTMcel/*")


def test_rename_prefix_and_collision():
    idx = _index().select("LSTMcell").renamed([("LSTMcell/", "encoder/lstm/")])
    assert list(idx) == ["encoder/lstm/input_gate/wx", "encoder/lstm/input_gate/bi", "encoder/lstm/forget_gate/wx"]
    assert idx["encoder/lstm/input_gate/wx"].key == "encoder.lstm.input_gate.wx"
    with pytest.raises(ckptsurgeon.FormatError, match="both normalize"):
        _index().renamed([("LSTMcell/input_gate/", "LSTMcell/forget_gate/")])


def test_segment_star_does_not_cross_slash():
    assert not matches(compile_glob("LSTMcell*wx"), "LSTMcell/input_gate/wx")


def test_root_group_scope_is_selectable(tmp_path):
    """A TF1 cell made directly under rnn/ is the group '/' (JSON scope ''): both select it, in the API and
    the CLI, and the conversion then sees the whole group (it fails if the root scope selects nothing)."""
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    rng = np.random.default_rng(0)
    tensors = {"rnn/lstm_cell/kernel": rng.standard_normal((7, 16)).astype(np.float32),
               "rnn/lstm_cell/bias": rng.standard_normal(16).astype(np.float32)}
    src = tmp_path / "m.safetensors"
    ckptsurgeon.save(tensors, src)
    groups = ckptsurgeon.open(src)
    for scope in ("/", ""):
        assert list(groups.select(scope)) == list(groups)
    res = ckptsurgeon.extract(src, tmp_path / "a.safetensors", scope=["/"], to="torch")
    assert [c["scope"] for c in res.converted] == [""] and len(res.written) == 4
    out = CliRunner().invoke(cli, ["extract", str(src), "--scope", "", "--to", "keras", "-o", str(tmp_path / "b.safetensors")])
    assert out.exit_code == 0 and "verified /" in out.output, out.output


def test_a_rename_that_matches_nothing_is_refused_and_slash_is_the_root(tmp_path):
    """Found by an independent review: --rename '/=x/' and renames with a typo were silently ignored."""
    from ckptsurgeon.errors import SelectionError

    from pathlib import Path

    model = Path(__file__).resolve().parent.parent / "fixtures" / "torch" / "model.pt"
    with pytest.raises(SelectionError, match="rename nope/=x/ matches no path"):
        ckptsurgeon.extract(model, tmp_path / "a.npz", scope="encoder", rename="nope/=x/")
    assert not (tmp_path / "a.npz").exists()
    result = ckptsurgeon.extract(model, tmp_path / "b.npz", scope="encoder", rename=[("/", "x/")])
    assert result.written and all(p.startswith("x/encoder/") for p in ckptsurgeon.open(tmp_path / "b.npz"))
