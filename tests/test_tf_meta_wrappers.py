"""A TF1 cell wrapper stores no variable: ``ResidualWrapper(LSTMCell)`` saves exactly LSTMCell's. The Saver's
MetaGraph (``PREFIX.meta``) names it (issue 20 #4); a wrapper that changes the computation is refused, one that
does not (DropoutWrapper at keep_prob 1) converts and computes TensorFlow's own outputs."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli
from tfenv import run_tf

torch = pytest.importorskip("torch")


def _record(tmp_path, wrapper):
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    net = {"scope": "enc", "kind": "lstm", "hidden": 4, "layers": 2, "per_layer": [{}, {"wrapper": wrapper}]}
    out = run_tf("tf1", tmp_path, x=str(tmp_path / "x.npz"), nets=[net], random_biases=True,
                 save_with_meta=str(tmp_path / "model.ckpt"))
    return x, out["enc"]


def test_a_residual_wrapper_the_metagraph_shows_is_refused(tmp_path):
    _record(tmp_path, "residual")
    assert (tmp_path / "model.ckpt.meta").exists()
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "model.ckpt"), "--to", "torch", "-o", str(tmp_path / "o.pt")])
    assert res.exit_code == 1 and "ResidualWrapper" in res.output and "MetaGraph model.ckpt.meta" in res.output, res.output
    assert not (tmp_path / "o.pt").exists()


def test_a_dropout_wrapper_at_keep_prob_1_converts_to_tensorflows_outputs(tmp_path):
    x, want = _record(tmp_path, "dropout")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "model.ckpt"), "--to", "torch", "-o", str(tmp_path / "o.pt")])
    assert res.exit_code == 0, res.output
    state = torch.load(tmp_path / "o.pt", weights_only=True)
    lstm = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    lstm.load_state_dict({k.rsplit(".", 1)[-1]: v for k, v in state.items()}, strict=True)
    with torch.no_grad():
        got = lstm(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
