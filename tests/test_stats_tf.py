"""How were these weights initialized? Fresh variables TensorFlow itself made (run in .tfvenv): the question's own
truncated_normal_initializer(mean=-0.1, stddev=0.01), a shifted random_normal, and a fresh TF1 GRUCell, whose
gates and candidate kernels are two variables, each Glorot uniform over its own shape."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ckptsurgeon.cli import cli
from click.testing import CliRunner
from tfenv import run_tf, save_x


def _stats(path: Path) -> dict:
    result = CliRunner().invoke(cli, ["stats", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_hand_set_tf_initializers_are_named(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    variables = [{"name": "w", "shape": [64, 128], "initializer": "truncated_normal_initializer",
                  "kwargs": {"mean": -0.1, "stddev": 0.01}},
                 {"name": "u", "shape": [32, 96], "initializer": "random_normal_initializer",
                  "kwargs": {"mean": 0.5, "stddev": 0.2}},
                 {"name": "small", "shape": [4, 4], "initializer": "truncated_normal_initializer",
                  "kwargs": {"mean": 0.0, "stddev": 0.1}}]
    run_tf("init", tmp_path, prefix=str(tmp_path / "m" / "model.ckpt"), variables=variables)
    guesses = {t["path"]: t["init"] for t in _stats(tmp_path / "m")["tensors"]}
    assert guesses["w"] == "truncated normal (mean -0.1, stddev 0.01)"
    assert guesses["u"] == "normal (mean 0.5, stddev 0.2)"
    assert "truncated normal (mean 0, stddev 0.1)" in guesses["small"]  # 16 values: listed among those that fit


def test_fresh_tf1_gru_cell_is_glorot_uniform_per_variable(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    x = save_x(tmp_path, np.zeros((2, 5, 30), np.float32))
    run_tf("tf1", tmp_path, x=x, nets=[{"scope": "enc", "kind": "gru", "hidden": 40}],
           save_template=str(tmp_path / "g" / "model.ckpt"))
    report = _stats(tmp_path / "g")
    guesses = {t["path"]: t["init"] for t in report["tensors"]}
    assert guesses["enc/rnn/gru_cell/gates/kernel"] == guesses["enc/rnn/gru_cell/candidate/kernel"] == "Glorot/Xavier uniform"
    kernels = [r for g in report["groups"] for r in g["gates"] if "kernel" in r["part"]]
    assert len(kernels) == 6 and all(r["init"] == "Glorot/Xavier uniform" for r in kernels), kernels
