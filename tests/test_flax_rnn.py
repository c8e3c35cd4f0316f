"""Flax recurrent cells (linen and NNX): ``rnn`` finds them in files written by the real flax, and ``extract --to
torch|torch-cell|keras`` gives weights that real PyTorch and Keras 3 layers load and that compute flax's own recorded
forward pass (fixtures/flax/*.forward.npz, recorded by make_flax_fixtures.py with flax 0.12.8 / jax 0.10.2)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.index import memory_index
from ckptsurgeon.rnn.convert import refusals
from ckptsurgeon.rnn.group import origin
from ckptsurgeon.rnn.recognize import recognize

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flax"

# fixture -> {group scope: (variant, kind, directions, input size, hidden, recorded output key, its input key)}
GROUPS = {
    "lstm": {  # cells built inline in a compact module: named at their parent; gru reads lstm's output
        "params/LSTMCell_0": ("flax.linen LSTMCell/OptimizedLSTMCell", "lstm", 1, 2, 2, "lstm", "x"),
        "params/GRUCell_0": ("flax.linen GRUCell", "gru", 1, 2, 2, "gru", "lstm"),
    },
    "rnn_linen": {
        "params/bilstm": ("flax Bidirectional(flax.linen LSTMCell/OptimizedLSTMCell)", "lstm", 2, 2, 3, "bilstm", "x"),
        "params/gru": ("flax.linen GRUCell", "gru", 1, 2, 3, "gru", "x"),
        "params/olstm": ("flax.linen LSTMCell/OptimizedLSTMCell", "lstm", 1, 2, 3, "olstm", "x"),
        "params/bigru": ("flax Bidirectional(flax.linen GRUCell)", "gru", 2, 2, 3, "bigru", "x"),
    },
    "rnn_nnx": {
        "lstm": ("flax.nnx LSTMCell", "lstm", 1, 2, 3, "lstm", "x"),
        "olstm": ("flax.nnx OptimizedLSTMCell", "lstm", 1, 2, 3, "olstm", "x"),
        "gru": ("flax.nnx GRUCell", "gru", 1, 2, 3, "gru", "x"),
        "bigru": ("flax Bidirectional(flax.nnx GRUCell)", "gru", 2, 2, 3, "bigru", "x"),
    },
}
CASES = [(name, scope) for name, groups in GROUPS.items() for scope in groups]


@pytest.mark.parametrize("name", GROUPS)
def test_rnn_finds_every_flax_cell_and_explains_every_tensor(name):
    index = ckptsurgeon.open(str(FIXTURES / f"{name}.msgpack"))
    groups = {g.scope: g for g in recognize(index)}
    assert set(groups) == set(GROUPS[name])
    claimed = {m for g in groups.values() for m in g.members}
    # every tensor of the file is a cell's, but for the Dense head of ``lstm``
    assert sorted(set(index) - claimed) == (["params/head/bias", "params/head/kernel"] if name == "lstm" else [])
    for scope, (variant, kind, dirs, n_in, hidden, *_) in GROUPS[name].items():
        g = groups[scope]
        assert (g.variant, g.kind, g.directions, g.input_size, g.hidden_size) == (variant, kind, dirs, n_in, hidden)
        assert g.unsettled() == {}
        # constructor arguments are not in a params file: documented defaults, never "file"
        for fact in ("activation", "recurrent_activation"):
            assert origin(g.provenance[fact]) == "version default"
            assert "gate_fn=sigmoid, activation_fn=tanh" in g.provenance[fact]
        if dirs == 2:
            assert g.merge_mode == "concat" and origin(g.provenance["merge_mode"]) == "version default"
        if kind == "gru":
            assert g.reset_after is True and origin(g.provenance["reset_after"]) == "file"


def _extract(tmp_path: Path, name: str, scope: str, to: str) -> dict[str, np.ndarray]:
    out = tmp_path / f"{to}.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / f"{name}.msgpack"), "-s", scope, "--to", to,
                                   "--rename", f"{scope}/=", "-o", str(out)])
    assert res.exit_code == 0, res.output
    index = ckptsurgeon.open(str(out))
    return {p: index[p].numpy() for p in index}


def _recorded(name: str, out_key: str, in_key: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURES / f"{name}.forward.npz") as z:
        return z[in_key], z[out_key]


@pytest.mark.parametrize("name,scope", CASES)
def test_to_torch_computes_flax_recorded_forward(tmp_path, name, scope):
    torch = pytest.importorskip("torch")
    _, kind, dirs, n_in, hidden, out_key, in_key = GROUPS[name][scope]
    sd = _extract(tmp_path, name, scope, "torch")
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    module = cls(n_in, hidden, batch_first=True, bidirectional=dirs == 2)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x, want = _recorded(name, out_key, in_key)
    with torch.no_grad():
        got = module(torch.from_numpy(x))[0].numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,scope", [c for c in CASES if GROUPS[c[0]][c[1]][2] == 1])
def test_to_torch_cell_steps_like_flax(tmp_path, name, scope):
    torch = pytest.importorskip("torch")
    _, kind, _, n_in, hidden, out_key, in_key = GROUPS[name][scope]
    sd = _extract(tmp_path, name, scope, "torch-cell")
    cell = (torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell)(n_in, hidden)
    cell.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x, want = _recorded(name, out_key, in_key)
    h = torch.zeros(x.shape[0], hidden)
    state = (h, torch.zeros_like(h)) if kind == "lstm" else h
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            state = cell(torch.from_numpy(x[:, t]), state)
            outs.append((state[0] if kind == "lstm" else state).numpy())
    np.testing.assert_allclose(np.stack(outs, 1), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,scope", CASES)
def test_to_keras_computes_flax_recorded_forward(tmp_path, name, scope):
    if os.environ.get("KERAS_BACKEND") != "torch":
        pytest.skip("Keras 3 runs here on the torch backend")
    keras = pytest.importorskip("keras")
    _, kind, dirs, n_in, hidden, out_key, in_key = GROUPS[name][scope]
    sd = _extract(tmp_path, name, scope, "keras")
    x, want = _recorded(name, out_key, in_key)

    def layer():
        if kind == "lstm":
            return keras.layers.LSTM(hidden, return_sequences=True)
        return keras.layers.GRU(hidden, return_sequences=True, reset_after=True)

    rnn = keras.layers.Bidirectional(layer(), merge_mode="concat") if dirs == 2 else layer()
    rnn.build((None, x.shape[1], n_in))
    names = ["kernel", "recurrent_kernel", "bias"]
    if dirs == 2:
        weights = [sd[f"{d}_layer/cell/{n}"] for d in ("forward", "backward") for n in names]
    else:
        weights = [sd[f"cell/{n}"] for n in names]
    rnn.set_weights(weights)
    got = keras.ops.convert_to_numpy(rnn(x))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _linen_gru_rows(extra: dict[str, np.ndarray] | None = None, drop: str | None = None):
    index = ckptsurgeon.open(str(FIXTURES / "rnn_linen.msgpack"))
    rows = [(p, p, index[p].numpy()) for p in index if p.startswith("params/gru/") and p != drop]
    rows += [(p, p, a) for p, a in (extra or {}).items()]
    return memory_index(rows, format="safetensors", file="mem", key_sep="/")


def test_a_cell_with_tensors_flax_does_not_have_is_not_converted():
    """A LayerNorm'd GRU holds GRUCell's names and more: listed, every conversion refused, the extra named."""
    index = _linen_gru_rows({"params/gru/cell/ln/scale": np.ones(3, np.float32)})
    (group,) = recognize(index)
    assert "params/gru/cell/ln/scale" in group.provenance["tensors"]
    assert any("params/gru/cell/ln/scale" in why for why in refusals(group, "torch"))
    assert refusals(recognize(_linen_gru_rows())[0], "torch") == []


def test_a_cell_missing_a_tensor_is_not_converted():
    index = _linen_gru_rows(drop="params/gru/cell/hn/bias")
    (group,) = recognize(index)
    assert "params/gru/cell/hn/bias is absent" in group.provenance["shapes"]
    assert refusals(group, "torch")


def test_flags_declare_what_the_file_cannot_state(tmp_path):
    """gate_fn/activation_fn are constructor arguments: a flag declares another, and the group says so."""
    from ckptsurgeon.rnn.group import RecognizeOptions

    index = ckptsurgeon.open(str(FIXTURES / "rnn_linen.msgpack"))
    (group,) = [g for g in recognize(index, RecognizeOptions(activation="relu")) if g.scope == "params/gru"]
    assert group.activation == "relu" and group.provenance["activation"] == "flag: --activation relu"
