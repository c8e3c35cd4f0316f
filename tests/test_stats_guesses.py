"""``stats`` per tensor: recurrent tensors judged in their group's context, optimizer state left out,
small tensors given every initializer that fits (issue 10, item 11). Weights come from real fresh torch
and Keras 3 layers, and from a torch LSTM really trained."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.check.initializers import guess_initializer
from ckptsurgeon.check.stats import checkpoint_stats
from ckptsurgeon.cli import cli
from conftest import FIXTURES

torch = pytest.importorskip("torch")
TORCH_DEFAULT = "PyTorch default U(+-1/sqrt(H))"


def _per_tensor(path, **kw):
    return {t["path"]: t for t in checkpoint_stats(ckptsurgeon.open(path), **kw)["tensors"]}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_fresh_torch_lstm_and_gru_every_tensor(tmp_path, seed, suffix):
    torch.manual_seed(seed)
    modules = {"lstm": torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True), "gru": torch.nn.GRU(6, 32),
               "cell": torch.nn.LSTMCell(5, 24)}
    state = {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
    path = tmp_path / f"fresh{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        ckptsurgeon.save({k: v.numpy() for k, v in state.items()}, path)
    tensors = _per_tensor(path)
    assert len(tensors) == len(state)
    assert {p: t["init"] for p, t in tensors.items()} == {p: TORCH_DEFAULT for p in tensors}


def test_fresh_keras_lstm_and_gru_every_tensor(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 8)), keras.layers.LSTM(16, return_sequences=True, name="enc"),
                              keras.layers.GRU(12, name="dec"), keras.layers.Dense(40, name="head")])
    model.save_weights(tmp_path / "k.weights.h5")
    got = {p: t["init"] for p, t in _per_tensor(tmp_path / "k.weights.h5").items()}
    assert got == {
        "enc/cell/kernel": "Glorot/Xavier uniform", "enc/cell/recurrent_kernel": "orthogonal (gain 1)",
        "enc/cell/bias": "constant blocks 0, 1",  # unit_forget_bias
        "dec/cell/kernel": "Glorot/Xavier uniform", "dec/cell/recurrent_kernel": "orthogonal (gain 1)", "dec/cell/bias": "zeros",
        "head/kernel": "Glorot/Xavier uniform", "head/bias": "zeros"}


def test_trained_torch_lstm_is_not_taken_for_its_initializer(tmp_path):
    """In the group's context the fresh default is a candidate; a trained LSTM must not be called that."""
    torch.manual_seed(4)
    lstm, head = torch.nn.LSTM(8, 16, batch_first=True), torch.nn.Linear(16, 1)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.02)
    x, y = torch.randn(32, 10, 8), torch.randn(32, 1)
    for _ in range(200):
        opt.zero_grad()
        ((head(lstm(x)[0][:, -1]) - y) ** 2).mean().backward()
        opt.step()
    torch.save({"rnn." + k: v for k, v in lstm.state_dict().items()} | {"optimizer": opt.state_dict()}, tmp_path / "t.pt")
    torch.save({"rnn." + k: v for k, v in before.items()}, tmp_path / "fresh.pt")
    trained, fresh = _per_tensor(tmp_path / "t.pt"), _per_tensor(tmp_path / "fresh.pt")
    assert {p: t["init"] for p, t in fresh.items()} == {p: TORCH_DEFAULT for p in fresh}
    assert set(trained) == set(fresh)  # the optimizer's moments are left out
    for path, t in trained.items():
        assert TORCH_DEFAULT not in t["init"] and TORCH_DEFAULT not in t["candidates"], path
    assert trained["rnn/bias_ih_l0"]["init"] == "not an initializer (trained)"


def test_optimizer_state_gets_no_guess_unless_asked(tmp_path):
    ckpt = FIXTURES / "torch" / "lightning.ckpt"
    index = ckptsurgeon.open(ckpt)
    n_opt = sum(r.optimizer for r in index.values())
    assert n_opt > 0
    result = checkpoint_stats(index)
    assert not any(t["optimizer"] for t in result["tensors"]) and result["left_out_optimizer"] == n_opt
    assert all(not t["path"].startswith("optimizer_states") for t in result["tensors"])
    with_opt = checkpoint_stats(index, include_optimizer=True)
    assert sum(t["optimizer"] for t in with_opt["tensors"]) == n_opt and with_opt["left_out_optimizer"] == 0
    res = CliRunner().invoke(cli, ["stats", str(FIXTURES / "tensorflow" / "tf1_lstmcell")])
    assert res.exit_code == 0 and "/Adam" not in res.output and "left out 26 optimizer tensors" in res.output
    res = CliRunner().invoke(cli, ["stats", str(FIXTURES / "tensorflow" / "tf1_lstmcell"), "--include-optimizer", "--json"])
    assert any(t["path"].endswith("/Adam") for t in json.loads(res.output)["tensors"])


def test_tiny_tensors_list_every_candidate_that_fits(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="head")])  # 24 values of Glorot uniform
    model.save_weights(tmp_path / "d.weights.h5")
    t = _per_tensor(tmp_path / "d.weights.h5")["head/kernel"]
    assert t["init"].startswith("one of: ") and "Glorot/Xavier uniform" in t["candidates"] and len(t["candidates"]) > 1
    assert "too few values to tell them apart" in t["evidence"]

    torch.manual_seed(0)
    torch.save({"small." + k: v for k, v in torch.nn.LSTM(2, 3).state_dict().items()}, tmp_path / "s.pt")
    for path, t in _per_tensor(tmp_path / "s.pt").items():  # 12 and 24 values
        assert t["candidates"][0] == TORCH_DEFAULT and len(t["candidates"]) > 1, path
    torch.save(torch.nn.LSTMCell(1, 1).state_dict(), tmp_path / "one.pt")  # 4 values per tensor
    for path, t in _per_tensor(tmp_path / "one.pt").items():
        assert TORCH_DEFAULT in t["candidates"] and len(t["candidates"]) > 1, path
    assert guess_initializer(np.array([3.0, -3.0, 2.0]), hidden=16, family="torch").name == "too few values to tell"
    # enough values single one out again
    w = torch.empty(64, 48)
    torch.nn.init.xavier_uniform_(w)
    assert guess_initializer(w.numpy(), fans=[(48, 64)]).name == "Glorot/Xavier uniform"


def test_a_very_tall_random_matrix_is_not_called_orthogonal():
    """Random columns are orthogonal to about 1/sqrt(rows): 1e-3 alone let a (10^6 x 4) uniform matrix pass."""
    rng = np.random.default_rng(5)
    tall = rng.uniform(-0.05, 0.05, (1_000_000, 4)).astype(np.float32)
    assert guess_initializer(tall, fans=[(4, 1_000_000)]).name == "uniform(+-0.05)"
    q = np.linalg.qr(rng.standard_normal((1_000_000, 4)))[0].astype(np.float32)
    assert guess_initializer(q).name.startswith("orthogonal")
