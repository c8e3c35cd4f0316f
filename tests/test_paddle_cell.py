"""``--to paddle-cell``: one cell as ``paddle.nn.LSTMCell``/``GRUCell`` holds it (PyTorch's cell names, biases always).
Real paddle (the framework venv) loads what we write from a torch cell, with no skipped or unexpected key, and computes
torch's outputs step by step; stacks and two directions are refused (a cell holds one)."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli
from fwenv import fw_python

torch = pytest.importorskip("torch")

_PADDLE = """
import json, sys, warnings
import numpy as np, paddle
kind, path, xs, res = sys.argv[1:5]
cell = (paddle.nn.LSTMCell if kind == "lstm" else paddle.nn.GRUCell)(4, 6)
state = paddle.load(path)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    missing, unexpected = cell.set_state_dict(state)
x = paddle.to_tensor(np.load(xs))
h, ys = None, []
for t in range(x.shape[1]):
    y, h = cell(x[:, t], h)
    ys.append(y.numpy())
np.save(res, np.stack(ys, 1))
print(json.dumps({"missing": list(missing), "unexpected": list(unexpected),
                  "warnings": [str(w.message) for w in caught if "Skip" in str(w.message)]}))
"""


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_torch_cell_runs_in_paddle_as_in_torch(tmp_path, kind, bias):
    torch.manual_seed(0)
    cell = (torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell)(4, 6, bias=bias)
    torch.save({"cell." + k: v for k, v in cell.state_dict().items()}, tmp_path / "c.pt")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "c.pt"), "--to", "paddle-cell", "--rename", "cell/=",
                                   "-o", str(tmp_path / "c.pdparams")])
    assert res.exit_code == 0, res.output
    x = torch.randn(2, 5, 4)
    np.save(tmp_path / "x.npy", x.numpy())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    proc = subprocess.run([fw_python("paddle"), "-c", _PADDLE, kind, str(tmp_path / "c.pdparams"), str(tmp_path / "x.npy"),
                           str(tmp_path / "y.npy")], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"missing": [], "unexpected": [], "warnings": []}
    h, want = None, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            h = cell(x[:, t], h)
            want.append((h[0] if kind == "lstm" else h).numpy())
    assert float(np.abs(np.load(tmp_path / "y.npy") - np.stack(want, 1)).max()) <= 1e-5


def test_a_stack_is_refused_naming_the_layer_target(tmp_path):
    torch.save(torch.nn.LSTM(4, 6, num_layers=2).state_dict(), tmp_path / "m.pt")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "m.pt"), "--to", "paddle-cell", "-o", str(tmp_path / "o.pdparams")])
    assert res.exit_code == 1 and "holds one; use --to paddle" in res.output, res.output
