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
