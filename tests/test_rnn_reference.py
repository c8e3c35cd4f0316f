"""The numpy reference cells, recognition and loading, checked against real frameworks' numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.rnn.recognize import recognize
from ckptsurgeon.rnn.reference import run_cell, run_stack
from conftest import FIXTURES
from rnn_helpers import TF, only_group, open_scope, tf_outputs

torch = pytest.importorskip("torch")

MODULES = {
    "lstm_2layer_bidir": lambda: torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True),
    "lstm_proj": lambda: torch.nn.LSTM(5, 4, num_layers=2, proj_size=2),
    "lstm_nobias": lambda: torch.nn.LSTM(5, 4, bias=False),
    "gru_bidir": lambda: torch.nn.GRU(5, 4, bidirectional=True),
    "gru_2layer": lambda: torch.nn.GRU(5, 3, num_layers=2),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_reference_cells_equal_torch(tmp_path, name):
    torch.manual_seed(0)
    module = MODULES[name]()
    path = tmp_path / f"{name}.pt"
    torch.save({"rnn." + k: v for k, v in module.state_dict().items()}, path)
    group = only_group(ckptsurgeon.open(path))
    assert group.scope == "rnn" and group.num_layers == module.num_layers
    assert group.directions == (2 if module.bidirectional else 1)
    x = torch.randn(6, 2, 5)
    want = module(x)[0].detach().numpy()
    np.testing.assert_allclose(run_stack(group.cells(), x.numpy()), want, atol=1e-5)


def test_torch_cells_are_recognized(tmp_path):
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(3, 5)
    path = tmp_path / "cell.pt"
    torch.save(cell.state_dict(), path)
    group = only_group(ckptsurgeon.open(path))
    assert group.layout == "torch-cell" and group.kind == "gru" and group.hidden_size == 5
    x = torch.randn(4, 2, 3)
    h = torch.zeros(2, 5)
    outs = []
    for t in range(4):
        h = cell(x[t], h)
        outs.append(h)
    np.testing.assert_allclose(run_cell(group.cells()[0][0], x.numpy())[0], torch.stack(outs).detach().numpy(), atol=1e-5)


def test_hand_built_lstmcell_reproduces_tf():
    out = tf_outputs("tf1_lstmcell")
    group = only_group(open_scope(TF / "tf1_lstmcell", "LSTMcell"))
    assert (group.kind, group.layout, group.input_size, group.hidden_size) == ("lstm", "per-gate", 3, 4)
    outs, _, c = run_cell(group.cells()[0][0], out["x"])
    np.testing.assert_allclose(outs, out["h"], atol=1e-5)
    np.testing.assert_allclose(c, out["c_final"], atol=1e-5)


@pytest.mark.parametrize("scope,key", [("bigru", "bigru"), ("bilstm", "bilstm")])
def test_tf1_bidirectional_reproduces_tf(scope, key):
    out = tf_outputs("tf1_cells")
    group = only_group(open_scope(TF / "tf1_cells", scope))
    assert group.directions == 2
    x = out["x"].transpose(1, 0, 2)  # TF ran batch-major
    fw, bw = group.cells()[0]
    np.testing.assert_allclose(run_cell(fw, x)[0].transpose(1, 0, 2), out[f"{key}_fw"], atol=1e-5)
    np.testing.assert_allclose(run_cell(bw, x, reverse=True)[0].transpose(1, 0, 2), out[f"{key}_bw"], atol=1e-5)


@pytest.mark.parametrize("scope", ["stack", "peephole"])
def test_tf1_multirnn_and_peephole_projection_reproduce_tf(scope):
    out = tf_outputs("tf1_cells")
    group = only_group(open_scope(TF / "tf1_cells", scope))
    x = out["x"].transpose(1, 0, 2)
    np.testing.assert_allclose(run_stack(group.cells(), x).transpose(1, 0, 2), out[scope], atol=1e-5)


def test_forget_bias_matters():
    """Leaving TF1's run-time forget_bias out breaks equivalence (declared 0 instead of 1)."""
    from ckptsurgeon.rnn.group import RecognizeOptions

    out = tf_outputs("tf1_cells")
    group = only_group(open_scope(TF / "tf1_cells", "bilstm"), options=RecognizeOptions(forget_bias=0.0))
    x = out["x"].transpose(1, 0, 2)
    diff = np.abs(run_cell(group.cells()[0][0], x)[0].transpose(1, 0, 2) - out["bilstm_fw"]).max()
    assert diff > 1e-2


def test_cudnn_layout_matches_tfkeras_own_conversion():
    ref = np.load(FIXTURES / "keras" / "tfkeras" / "cudnn_as_plain.reference.npz")
    groups = recognize(ckptsurgeon.open(FIXTURES / "keras" / "tfkeras" / "cudnn.h5"))
    assert [g.layout for g in groups] == ["keras-cudnn", "keras-cudnn"]
    lstm, gru = (g.cells()[0][0] for g in groups)
    x = ref["out/x"].transpose(1, 0, 2)
    y = run_cell(gru, run_cell(lstm, x)[0])[1]
    np.testing.assert_allclose(y, ref["out/y"], atol=1e-5)


def test_rnn_cli_describes_every_fixture():
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    def groups(path):
        res = CliRunner().invoke(cli, ["rnn", str(path), "--json"])
        assert res.exit_code == 0, res.output
        return {g["scope"]: g for g in json.loads(res.output)}

    tf1 = groups(TF / "tf1_cells")
    assert {s: (g["kind"], g["num_layers"], g["directions"], g["family"]) for s, g in tf1.items()} == {
        "bigru": ("gru", 1, 2, "reset-before"),
        "bilstm": ("lstm", 1, 2, None),
        "stack": ("lstm", 2, 1, None),
        "peephole": ("lstm", 1, 1, None),
    }
    assert tf1["peephole"]["peepholes"] and tf1["peephole"]["proj_size"] == 2
    assert tf1["bilstm"]["forget_bias"] == 1.0
    assert groups(TF / "tf1_lstmcell")["LSTMcell"]["layout"] == "per-gate"
    k = groups(FIXTURES / "keras" / "tfkeras" / "model.h5")
    assert k["bi"]["family"] == "reset-after" and k["gru_reset_before"]["family"] == "reset-before"
    assert k["encoder_lstm"]["provenance"]["recurrent_activation"].startswith("file") and k["bi"]["directions"] == 2
    t = groups(FIXTURES / "torch" / "model.pt")
    assert (t["encoder/rnn"]["num_layers"], t["encoder/rnn"]["directions"], t["decoder"]["kind"]) == (2, 2, "gru")
    assert groups(TF / "tf2_checkpoint")["model/layer_with_weights-0"]["hidden_size"] == 4


def test_square_hand_built_cell_needs_orientation(tmp_path):
    """input size == hidden size: the shapes cannot tell x @ W from W @ x; refused until --orientation says."""
    from ckptsurgeon.rnn.convert import ConversionError, convert_group
    from ckptsurgeon.rnn.group import RecognizeOptions

    rng = np.random.default_rng(0)
    tensors = {f"cell/{g}/{v}": rng.standard_normal((4, 4) if v != "bi" else (1, 4)).astype(np.float32)
               for g in ("input_gate", "forget_gate", "memory_cell", "output_gate") for v in ("wx", "wt", "bi")}
    path = tmp_path / "square.safetensors"
    ckptsurgeon.save(tensors, path)
    group = only_group(ckptsurgeon.open(path))
    assert group.provenance["orientation"].startswith("missing") and "--orientation" in group.provenance["orientation"]
    with pytest.raises(ConversionError, match="--orientation"):
        convert_group(group, "torch-cell")
    for orient in ("xw", "wx"):
        declared = only_group(ckptsurgeon.open(path), options=RecognizeOptions(orientation=orient))
        assert declared.provenance["orientation"] == f"flag: --orientation {orient}"
        w = declared.cells()[0][0].w_ih[:4]
        np.testing.assert_array_equal(w, tensors["cell/input_gate/wx"].T if orient == "xw" else tensors["cell/input_gate/wx"])
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    res = CliRunner().invoke(cli, ["extract", str(path), "--to", "torch-cell", "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and "--orientation" in res.output and not (tmp_path / "o.safetensors").exists()
    res = CliRunner().invoke(cli, ["rnn", str(path)])
    assert "orientation: unknown  (missing:" in res.output


def test_custom_gate_names(tmp_path):
    from ckptsurgeon.rnn.group import RecognizeOptions

    rng = np.random.default_rng(0)
    tensors = {f"cell/{g}/{v}": rng.standard_normal({"kx": (3, 4), "kh": (4, 4), "kb": (4,)}[v]).astype(np.float32)
               for g in ("gi", "gf", "gc", "go") for v in ("kx", "kh", "kb")}
    path = tmp_path / "custom.safetensors"
    ckptsurgeon.save(tensors, path)
    assert recognize(ckptsurgeon.open(path)) == []
    opts = RecognizeOptions(gate_names={"i": ("gi",), "f": ("gf",), "g": ("gc",), "o": ("go",)},
                            var_names={"x": ("kx",), "h": ("kh",), "b": ("kb",)})
    assert only_group(ckptsurgeon.open(path), options=opts).input_size == 3


@pytest.mark.parametrize("cell,names,forget_bias", [
    ("BasicLSTMCell", ("Linear/Matrix", "Linear/Bias"), 1.0),  # TF 0.x
    ("lstm_fused_cell", ("kernel", "bias"), 1.0),  # LSTMBlockFusedCell
    ("cudnn_compatible_lstm_cell", ("kernel", "bias"), 0.0),  # CudnnCompatibleLSTMCell: no run-time forget bias
])
def test_other_tf1_lstm_names(tmp_path, cell, names, forget_bias):
    """The same fused TF1 kernel under the other cell names TF wrote (hand-made: these need old TF)."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3 + 4, 16)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    path = tmp_path / "old.safetensors"
    ckptsurgeon.save({f"enc/rnn/{cell}/{names[0]}": kernel, f"enc/rnn/{cell}/{names[1]}": bias}, path)
    group = only_group(ckptsurgeon.open(path))
    assert (group.scope, group.kind, group.input_size, group.hidden_size, group.forget_bias) == ("enc", "lstm", 3, 4, forget_bias)
    lstm_cell = only_group(open_scope(TF / "tf1_cells", "bilstm"))  # the real TF1 layout, same math
    assert lstm_cell.layout == group.layout == "tf1"
    c = group.cells()[0][0]
    np.testing.assert_array_equal(c.w_ih[0:4], kernel[:3, 0:4].T)  # gate i first in both orders
    np.testing.assert_allclose(c.b_ih[4:8], bias[8:12] + forget_bias)  # TF1 f is the third block (i, j, f, o)


def test_tf0_gru_names(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"m/GRUCell/Gates/Linear/Matrix": rng.standard_normal((5, 4)), "m/GRUCell/Gates/Linear/Bias": np.ones(4),
              "m/GRUCell/Candidate/Linear/Matrix": rng.standard_normal((5, 2)), "m/GRUCell/Candidate/Linear/Bias": np.zeros(2)}
    path = tmp_path / "gru0.safetensors"
    ckptsurgeon.save({k: v.astype(np.float32) for k, v in arrays.items()}, path)
    group = only_group(ckptsurgeon.open(path))
    assert (group.kind, group.reset_after, group.input_size, group.hidden_size) == ("gru", False, 3, 2)


def test_a_large_cell_in_either_memory_order_computes_what_torch_computes():
    """Weights above the block size (256K elements) are multiplied a float64 block at a time, in C order (PyTorch's)
    or read back transposed (Fortran order: Keras's and TF1's kernels); both compute what torch.nn.LSTM does."""
    from ckptsurgeon.rnn.cell import Cell

    torch.manual_seed(4)
    module = torch.nn.LSTM(300, 300)  # w_ih, w_hh: 1200 x 300 = 360K elements each
    x = np.random.default_rng(4).standard_normal((4, 2, 300))
    want = module(torch.tensor(x, dtype=torch.float32))[0].detach().numpy()
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    c_cell = Cell("lstm", sd["weight_ih_l0"], sd["weight_hh_l0"], sd["bias_ih_l0"], sd["bias_hh_l0"])
    f_cell = c_cell.with_(w_ih=np.asfortranarray(c_cell.w_ih), w_hh=np.asfortranarray(c_cell.w_hh))
    assert c_cell.w_ih.size > 1 << 18 and f_cell.w_hh.flags.f_contiguous
    yc, yf = run_cell(c_cell, x)[0], run_cell(f_cell, x)[0]
    np.testing.assert_allclose(yc, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(yf, yc, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [5, 300])  # 300: the blocked products
@pytest.mark.parametrize("poison", [None, np.inf, -np.inf, np.nan, 3e38])
def test_the_first_step_from_zero_is_exact(size, poison):
    """From h = 0 the first step's recurrent product is 0 wherever w_hh is finite: it is skipped, and the second step's
    product (not finite when any weight is not) decides it: a weight that is inf or nan runs every step again. The
    outputs are those of the cell run from an explicit zero state, bit for bit."""
    from ckptsurgeon.rnn.cell import Cell

    rng = np.random.default_rng(size)
    w_ih = rng.standard_normal((4 * size, size)).astype(np.float32) * np.float32(0.1)
    w_hh = rng.standard_normal((4 * size, size)).astype(np.float32) * np.float32(0.1)
    if poison is not None and not np.isfinite(poison):
        w_hh[size + 2, 3] = poison
    elif poison is not None:
        w_hh[:, :] = np.float32(poison)  # every weight the largest float32s: huge, finite products
    cell = Cell("lstm", w_ih, w_hh, rng.standard_normal(4 * size).astype(np.float32),
                rng.standard_normal(4 * size).astype(np.float32))
    x = rng.standard_normal((3, 2, size))
    zero = (np.zeros((2, size)), np.zeros((2, size)))
    with np.errstate(over="ignore", invalid="ignore"):
        for reverse in (False, True):
            got, honest = run_cell(cell, x, reverse=reverse), run_cell(cell, x, *zero, reverse=reverse)
            for a, b in zip(got, honest):
                np.testing.assert_array_equal(a, b)
    assert np.isfinite(got[0]).all() == (poison is None or bool(np.isfinite(poison)))
