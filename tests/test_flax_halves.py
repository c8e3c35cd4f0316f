"""The backward half of a flax ``nn.Bidirectional`` (``nn.RNN(reverse=True, keep_order=True)``) is not a forward
layer: alone (selected alone, or beside a forward half of another size) it is refused, never converted as if it ran
forwards. The files are written by real flax (the framework venv)."""
from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli
from fwenv import fw_python

_MAKE = """
import sys
import numpy as np, jax, flax.linen as nn
from flax import serialization
x = np.zeros((2, 5, 3), np.float32)
for name, m in [("diff", nn.Bidirectional(nn.RNN(nn.LSTMCell(4)), nn.RNN(nn.LSTMCell(3)))),
                ("same", nn.Bidirectional(nn.RNN(nn.LSTMCell(4)), nn.RNN(nn.LSTMCell(4))))]:
    params = m.init(jax.random.PRNGKey(1), x)["params"]
    open(f"{sys.argv[1]}/{name}.msgpack", "wb").write(serialization.to_bytes(params))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("flax_bi")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    proc = subprocess.run([fw_python("flax"), "-c", _MAKE, str(out)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("name, args, why", [
    ("diff", [], "its halves differ"),
    ("same", ["-s", "backward_rnn/**"], "convert the whole Bidirectional"),
])
def test_a_lone_backward_half_is_refused(files, tmp_path, name, args, why):
    out = tmp_path / "o.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(files / f"{name}.msgpack"), *args, "--to", "torch", "-o", str(out)])
    assert res.exit_code == 1 and "the backward half of a flax Bidirectional" in res.output and why in res.output, res.output
    assert not out.exists()


def test_the_whole_bidirectional_still_converts(files, tmp_path):
    res = CliRunner().invoke(cli, ["extract", str(files / "same.msgpack"), "--to", "torch", "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 0 and "flax Bidirectional" in res.output, res.output
