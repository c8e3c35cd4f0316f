"""remap: every transform writes exactly the shape and dtype its plan states; concat takes only its own
tensors; gates with a TF1 GRU is defined (or refused with the reason); a plan with a gates transform is
verified before anything is written (issue 10, item 7). Sources are torch.save files and TF-written
fixtures; results are read back from the written files and checked with the real frameworks."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon import PlanError, Remap, load_rules
from ckptsurgeon.cli import cli
from rnn_helpers import TF, tf_meta, tf_outputs

torch = pytest.importorskip("torch")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    tensors = {"a": torch.randn(3, 8), "b": torch.randn(2, 8), "c": torch.randn(4, 8), "d": torch.randn(5, 8, dtype=torch.float64),
               "i": torch.arange(8, dtype=torch.int32), "k3": torch.randn(2, 3, 4), "g": torch.randn(12, 5)}
    path = tmp_path_factory.mktemp("remap") / "src.pt"
    torch.save(tensors, path)
    return path, {k: v.numpy() for k, v in tensors.items()}


def _tf1_lstm_to_torch(a):  # TF1 i, j, f, o -> PyTorch i, f, g, o along axis 1
    i, j, f, o = np.split(a, 4, axis=1)
    return np.concatenate([i, f, j, o], axis=1)


CASES = {
    "transpose": ("a", [{"op": "transpose"}], lambda t: t["a"].T),
    "permute": ("k3", [{"op": "permute", "axes": [2, 0, 1]}], lambda t: t["k3"].transpose(2, 0, 1)),
    "reshape": ("a", [{"op": "reshape", "shape": [4, -1]}], lambda t: t["a"].reshape(4, 6)),
    "cast float16": ("a", [{"op": "cast", "dtype": "float16"}], lambda t: t["a"].astype(np.float16)),
    "cast bfloat16": ("a", [{"op": "cast", "dtype": "bfloat16"}], lambda t: t["a"].astype(ml_dtypes.bfloat16)),
    "cast int64": ("i", [{"op": "cast", "dtype": "int64"}], lambda t: t["i"].astype(np.int64)),
    "slice with step": ("a", [{"op": "slice", "axis": 1, "start": 1, "stop": 7, "step": 2}], lambda t: t["a"][:, 1:7:2]),
    "split": ("a", [{"op": "split", "axis": -1, "parts": 4, "index": 3}], lambda t: t["a"][:, 6:8]),
    "concat": ("a", [{"op": "concat", "axis": 0, "with": ["b"]}], lambda t: np.concatenate([t["a"], t["b"]])),
    "two concats": ("a", [{"op": "concat", "with": ["b"]}, {"op": "concat", "with": ["c"]}],
                    lambda t: np.concatenate([t["a"], t["b"], t["c"]])),
    "concat, slice, concat": ("a", [{"op": "concat", "with": ["b"]}, {"op": "slice", "stop": 3},
                                    {"op": "concat", "with": ["c", "b"]}],
                              lambda t: np.concatenate([t["a"], t["c"], t["b"]])),
    "concat promotes the dtype": ("a", [{"op": "concat", "with": ["d"]}], lambda t: np.concatenate([t["a"], t["d"]])),
    "gates lstm tf1 -> torch": ("a", [{"op": "gates", "kind": "lstm", "from": "tf1", "to": "torch", "axis": 1}],
                                lambda t: _tf1_lstm_to_torch(t["a"])),
    "gates gru torch -> keras": ("g", [{"op": "gates", "kind": "gru", "from": "torch", "to": "keras", "hidden": 4}],
                                 lambda t: np.concatenate([t["g"][4:8], t["g"][0:4], t["g"][8:12]])),
    "gates gru tf1 -> keras": ("a", [{"op": "gates", "kind": "gru", "from": "tf1", "to": "keras", "axis": 1, "hidden": 4}],
                               lambda t: np.concatenate([t["a"][:, 4:8], t["a"][:, 0:4]], 1)),
    "gates gru torch gates -> tf1": ("a", [{"op": "gates", "kind": "gru", "from": "torch", "to": "tf1", "axis": 1, "hidden": 4}],
                                     lambda t: t["a"]),
    "scale by an array": ("a", [{"op": "scale", "by": [[1.0], [2.0], [3.0]]}], lambda t: t["a"] * np.array([[1.0], [2.0], [3.0]], np.float32)),
    "offset int": ("i", [{"op": "offset", "by": 3}], lambda t: t["i"] + 3),
}


def _rules(tmp_path, name, transforms):
    body = ", ".join("{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec.items()) + "}" for spec in transforms)
    path = tmp_path / "rules.toml"
    path.write_text(f'[[rule]]\nsource = "{name}"\ntarget = "out"\ntransforms = [{body}]\n')
    return path


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5", ".pt"])
def test_every_transform_writes_what_its_plan_states(tmp_path, source, case, suffix):
    path, arrays = source
    name, transforms, want_fn = CASES[case]
    want = want_fn(arrays)
    rules = _rules(tmp_path, name, transforms)
    if suffix in (".npz", ".h5") and want.dtype == ml_dtypes.bfloat16:  # numpy and HDF5 cannot name it: refused
        res = run("remap", path, "--rules", rules, "--drop-unmatched", "-o", tmp_path / f"out{suffix}", "--no-verify")
        assert res.exit_code == 1 and "bfloat16" in res.output and not (tmp_path / f"out{suffix}").exists()
        return
    plan = Remap(load_rules(rules), keep_unmatched=False).plan(ckptsurgeon.open(path))
    (row,) = plan.rows
    assert row.shape == want.shape and row.dtype == want.dtype.name, (row.shape, row.dtype)  # the plan, before reading
    out = tmp_path / f"out{suffix}"
    res = run("remap", path, "--rules", rules, "--drop-unmatched", "-o", out, "--no-verify")
    assert res.exit_code == 0, res.output
    written = ckptsurgeon.open(out)
    assert list(written) == ["out"]
    got = written["out"]
    assert (got.shape, got.dtype_name) == (row.shape, row.dtype)  # what is written is what the plan said
    assert got.numpy().tobytes() == np.ascontiguousarray(want).tobytes()


def test_two_concats_each_take_only_their_own_tensors(source):
    path, arrays = source
    rule = ckptsurgeon.Rule(source="a", target="out", index=0, transforms=[
        ckptsurgeon.remap.parse_transform({"op": "concat", "with": ["b"]}, "t"),
        ckptsurgeon.remap.parse_transform({"op": "concat", "with": ["c"]}, "t")])
    plan = Remap([rule], keep_unmatched=False).plan(ckptsurgeon.open(path))
    assert plan.rows[0].shape == (9, 8) and plan.apply()["out"].shape == (9, 8)  # not (15, 8)


def test_gates_gru_with_tf1_needs_hidden_and_says_why(tmp_path):
    with pytest.raises(ckptsurgeon.SelectionError, match="needs hidden = H: TF1's GRUCell keeps only the reset and update gates"):
        load_rules(_rules(tmp_path, "a", [{"op": "gates", "kind": "gru", "from": "tf1", "to": "torch"}]))


@pytest.mark.parametrize("name,transforms,match", [
    ("g", [{"op": "gates", "kind": "gru", "from": "torch", "to": "tf1", "hidden": 4}], "holds the candidate block too"),
    ("g", [{"op": "gates", "kind": "gru", "from": "tf1", "to": "keras", "hidden": 4}], "holds the candidate block too"),
    ("a", [{"op": "gates", "kind": "gru", "from": "tf1", "to": "keras", "axis": 1, "hidden": 3}], "should hold 2 gates of hidden 3"),
    ("i", [{"op": "scale", "by": 0.5}], "not exact in the tensor's dtype int32"),
    ("i", [{"op": "scale", "by": [[1], [2]]}], "does not broadcast"),
    ("a", [{"op": "concat", "axis": 2, "with": ["b"]}], "axis 2 out of range"),
])
def test_misfits_are_refused_and_nothing_is_written(tmp_path, source, name, transforms, match):
    path, _ = source
    rules = _rules(tmp_path, name, transforms)
    with pytest.raises(PlanError, match=match):
        Remap(load_rules(rules)).plan(ckptsurgeon.open(path))
    res = run("remap", path, "--rules", rules, "-o", tmp_path / "x.safetensors")
    assert res.exit_code == 1 and not (tmp_path / "x.safetensors").exists()


def test_tf1_gru_gates_bias_into_a_keras_reset_before_gru_reproduces_tf(tmp_path):
    """TF1 GRUCell's [r, u] gates bias -> Keras (z, r), then the separate candidate bias concatenated last."""
    keras = pytest.importorskip("keras")
    fw = "bigru/bidirectional_rnn/fw/gru_cell"
    rules = tmp_path / "bias.toml"
    rules.write_text(f'[[rule]]\nsource = "{fw}/gates/bias"\ntarget = "bias"\ntransforms = ['
                     '{op = "gates", kind = "gru", from = "tf1", to = "keras", hidden = 4}, '
                     f'{{op = "concat", with = ["{fw}/candidate/bias"]}}]\n')
    out = tmp_path / "bias.safetensors"
    res = run("remap", TF / "tf1_cells", "-s", fw, "--rules", rules, "--drop-unmatched", "-o", out)
    assert res.exit_code == 0, res.output
    bias = ckptsurgeon.open(out)["bias"].numpy()
    meta, npz = tf_meta("tf1_cells"), np.load(TF / "tf1_cells" / "reference.npz")
    tf = {}  # what TensorFlow's get_tensor returned, kept as raw bytes
    for k in ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"):
        entry = meta["tensors"][f"{fw}/{k}"]
        tf[k] = npz[entry["npz"]].view(np.float32).reshape(entry["shape"])
    np.testing.assert_array_equal(bias, np.concatenate([np.split(tf["gates/bias"], 2)[1], np.split(tf["gates/bias"], 2)[0],
                                                        tf["candidate/bias"]]))
    r, u = np.split(tf["gates/kernel"], 2, axis=1)
    kernel = np.concatenate([u, r, tf["candidate/kernel"]], 1)  # Keras z, r, h; z is TF's u
    layer = keras.layers.GRU(4, reset_after=False, return_sequences=True)
    layer.build((2, 5, 3))
    layer.set_weights([kernel[:3], kernel[3:], bias])
    ref = tf_outputs("tf1_cells")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(ref["x"])), ref["bigru_fw"], atol=1e-5)


GRU_RULES = """
[[rule]]
source = "gru/weight_ih_l0"
target = "gru/cell/kernel"
transforms = [{op = "transpose"}, {op = "gates", kind = "gru", from = "torch", to = "keras", axis = 1}]
[[rule]]
source = "gru/weight_hh_l0"
target = "gru/cell/recurrent_kernel"
transforms = [{op = "transpose"}%s]
[[rule]]
source = "gru/bias_ih_l0"
target = "gru/cell/bias"
transforms = [{op = "concat", with = ["gru/bias_hh_l0"]}, {op = "reshape", shape = [2, -1]},
              {op = "gates", kind = "gru", from = "torch", to = "keras", axis = 1}]
[[rule]]
source = "gru/bias_hh_l0"
drop = true
"""


@pytest.fixture()
def torch_gru(tmp_path):
    torch.manual_seed(3)
    gru = torch.nn.GRU(3, 4, batch_first=True)
    path = tmp_path / "gru.pt"
    torch.save({"gru." + k: v for k, v in gru.state_dict().items()}, path)
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GRU_RULES % ', {op = "gates", kind = "gru", from = "torch", to = "keras", axis = 1}')
    bad.write_text(GRU_RULES % "")  # the recurrent kernel keeps PyTorch's gate order
    return gru, path, good, bad


def test_remap_with_gates_is_verified_by_default(tmp_path, torch_gru):
    keras = pytest.importorskip("keras")
    gru, path, good, bad = torch_gru
    out = tmp_path / "k.safetensors"
    res = run("remap", path, "--rules", good, "-o", out)
    assert res.exit_code == 0, res.output
    assert "verified gru -> gru (paired by scope): max abs diff 0" in res.output
    w = ckptsurgeon.open(out)
    layer = keras.layers.GRU(4, return_sequences=True)  # Keras's own GRU computes what torch computed
    layer.build((2, 5, 3))
    layer.set_weights([w[f"gru/cell/{n}"].numpy() for n in ("kernel", "recurrent_kernel", "bias")])
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), gru(torch.tensor(x))[0].detach().numpy(), atol=1e-5)

    wrong = tmp_path / "wrong.safetensors"
    res = run("remap", path, "--rules", bad, "-o", wrong)
    assert res.exit_code == 1 and "gru -> gru: outputs differ by" in res.output and "nothing written" in res.output
    assert not wrong.exists() and not list(tmp_path.glob(".wrong*"))  # no temporary file left either
    layer.set_weights([w["gru/cell/kernel"].numpy(), gru.weight_hh_l0.detach().numpy().T, w["gru/cell/bias"].numpy()])
    assert np.max(np.abs(keras.ops.convert_to_numpy(layer(x)) - gru(torch.tensor(x))[0].detach().numpy())) > 1e-3

    res = run("remap", path, "--rules", bad, "-o", wrong, "--no-verify")
    assert res.exit_code == 0 and "verified" not in res.output and wrong.exists()


def test_unpaired_groups_are_reported_not_passed_over(tmp_path, torch_gru):
    _, path, _, _ = torch_gru
    res = run("remap", path, "--map", "gru/weight_ih_l0=x", "--map", "gru/weight_hh_l0=y", "--rules", _rules(
        tmp_path, "gru/bias_ih_l0", [{"op": "gates", "kind": "gru", "from": "torch", "to": "keras"}]), "-o", tmp_path / "o.safetensors")
    assert res.exit_code == 0, res.output
    assert "not verified: source group 'gru' (nn.GRU) pairs with no recurrent group of the result" in res.output
    assert "nothing verified" in res.output
