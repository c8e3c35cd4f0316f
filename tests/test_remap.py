"""The remap engine: captures, every transform, collisions, required rules, dry-run and JSON plans."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon import PlanError, Remap, Rule, load_rules, parse_map
from ckptsurgeon.cli import cli
from ckptsurgeon.index import memory_index


def _index():
    rng = np.random.default_rng(0)
    rows = [("encoder/layer_0/kernel", rng.standard_normal((3, 8)).astype(np.float32)),
            ("encoder/layer_1/kernel", rng.standard_normal((2, 8)).astype(np.float32)),
            ("encoder/layer_0/bias", np.arange(8, dtype=np.float32)),
            ("head/w", np.arange(6, dtype=np.float64).reshape(2, 3)),
            ("optimizer/m", np.zeros(3, np.float32))]
    return memory_index(((p, p.replace("/", "."), a) for p, a in rows), format="test", file="mem"), dict(rows)


def test_named_captures_and_subtrees():
    index, _ = _index()
    plan = Remap([Rule(source="encoder/layer_{n}/kernel", target="rnn.weight_ih_l{n}", index=0),
                  Rule(source="optimizer/**", drop=True, index=1)]).plan(index)
    assert {r.source: r.target for r in plan.rows} == {
        "encoder/layer_0/kernel": "rnn.weight_ih_l0", "encoder/layer_1/kernel": "rnn.weight_ih_l1",
        "encoder/layer_0/bias": "encoder.layer_0.bias", "head/w": "head.w", "optimizer/m": None}
    plan = Remap(parse_map(["encoder/*=enc/*"])).plan(index)
    assert plan.rows[0].target == "enc/layer_0/kernel"


def test_regex_rules():
    index, _ = _index()
    plan = Remap([Rule(source=r"encoder/layer_(\d+)/(\w+)", target="l{1}.{2}", regex=True, index=0)],
                 keep_unmatched=False).plan(index)
    assert [r.target for r in plan.rows] == ["l0.kernel", "l1.kernel", "l0.bias"]


@pytest.mark.parametrize("spec,check", [
    ({"op": "transpose"}, lambda a: a.T),
    ({"op": "permute", "axes": [1, 0]}, lambda a: a.T),
    ({"op": "reshape", "shape": [4, -1]}, lambda a: a.reshape(4, 6)),
    ({"op": "cast", "dtype": "float16"}, lambda a: a.astype(np.float16)),
    ({"op": "slice", "axis": 1, "start": 2, "stop": 6}, lambda a: a[:, 2:6]),
    ({"op": "split", "axis": 1, "parts": 4, "index": 2}, lambda a: a[:, 4:6]),
    ({"op": "gates", "kind": "lstm", "from": "tf1", "to": "torch", "axis": 1},
     lambda a: np.concatenate([a[:, 0:2], a[:, 4:6], a[:, 2:4], a[:, 6:8]], 1)),
    ({"op": "scale", "by": 2.0}, lambda a: a * 2),
    ({"op": "offset", "by": 1.0}, lambda a: a + 1),
])
def test_each_transform(tmp_path, spec, check):
    index, arrays = _index()
    src = arrays["encoder/layer_0/kernel"]
    rules = tmp_path / "r.toml"
    body = ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec.items())
    rules.write_text(f'[[rule]]\nsource = "encoder/layer_0/kernel"\ntarget = "out"\ntransforms = [{{{body}}}]\n')
    plan = Remap(load_rules(rules), keep_unmatched=False).plan(index)
    want = check(src)
    assert plan.rows[0].shape == want.shape and plan.rows[0].dtype == want.dtype.name  # planned before reading
    got = plan.apply()["out"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_concat_transform():
    index, arrays = _index()
    rule = Rule(source="encoder/layer_0/kernel", target="both",
                transforms=[__import__("ckptsurgeon").remap.parse_transform({"op": "concat", "axis": 0, "with": ["encoder/layer_1/kernel"]}, "t")],
                index=0)
    plan = Remap([rule], keep_unmatched=False).plan(index)
    assert plan.rows[0].shape == (5, 8) and plan.rows[0].others == ["encoder/layer_1/kernel"]
    np.testing.assert_array_equal(plan.apply()["both"], np.concatenate([arrays["encoder/layer_0/kernel"], arrays["encoder/layer_1/kernel"]]))


def test_collisions_required_and_misfits_list_every_row():
    index, _ = _index()
    with pytest.raises(PlanError) as err:
        Remap([Rule(source="encoder/*/kernel", target="same", index=0),
               Rule(source="nothing/here", target="x", required=True, index=1),
               Rule(source="head/w", target="h", index=2,
                    transforms=[__import__("ckptsurgeon").remap.parse_transform({"op": "reshape", "shape": [5]}, "t")])]
              ).plan(index)
    problems = err.value.problems
    assert len(problems) == 3
    assert any("both map to 'same'" in p for p in problems)
    assert any("required rule 2" in p for p in problems)
    assert any("cannot reshape" in p for p in problems)


def test_bad_rules_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nsource = "a"\n')
    with pytest.raises(ckptsurgeon.SelectionError, match="needs a target or drop"):
        load_rules(bad)
    bad.write_text('[[rule]]\nsource = "a"\ntarget = "b"\ntransforms = [{op = "frobnicate"}]\n')
    with pytest.raises(ckptsurgeon.SelectionError, match="op = one of"):
        load_rules(bad)


def test_remap_cli_dry_run_json_and_write(tmp_path):
    from conftest import FIXTURES

    src = str(FIXTURES / "tensorflow" / "tf1_lstmcell")
    res = CliRunner().invoke(cli, ["remap", src, "-s", "LSTMcell", "--exclude", "**/Adam*", "--map", "LSTMcell/*=enc/*", "--dry-run"])
    assert res.exit_code == 0 and re.search(r"LSTMcell/input_gate/wx\s+enc/input_gate/wx\s+3x4", res.output)
    res = CliRunner().invoke(cli, ["remap", src, "-s", "LSTMcell", "--exclude", "**/Adam*", "--map", "LSTMcell/*=enc/*", "--dry-run", "--json"])
    rows = json.loads(res.output)
    assert len(rows) == 12 and rows[0]["action"] == "map" and rows[0]["src_shape"] == [1, 4]
    out = tmp_path / "r.safetensors"
    res = CliRunner().invoke(cli, ["remap", src, "-s", "LSTMcell", "--exclude", "**/Adam*", "--map", "LSTMcell/*=enc/*", "-o", str(out)])
    assert res.exit_code == 0
    assert sorted(ckptsurgeon.open(out))[0] == "enc/forget_gate/bi"
    res = CliRunner().invoke(cli, ["remap", src, "--map", "LSTMcell/*=same", "-o", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 1 and "both map to 'same/" in res.output and not (tmp_path / "x.safetensors").exists()
