"""Recurrent groups recognized from ONNX graphs: every fact from the node (or the operator's default), and
the numpy reference cells running each group compared with onnxruntime running the node itself
(onnx.reference ignores activations/clip/input_forget, so it is only used where its semantics apply)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from onnx_models import onnx, rnn_model
from onnx_rnn_helpers import flat_y, groups_of, one_group, ort_run, ref_run

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.rnn import refusals, run_stack
from ckptsurgeon.rnn.group import RecognizeOptions, origin
from ckptsurgeon.rnn.recognize import recognize
from onnx import helper

pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(11)


@pytest.fixture(autouse=True)
def _seeded(request, monkeypatch):
    """Each test's weights and inputs depend on its own name, not on which tests ran before it: a run of a subset
    (``-k``) sees the data the whole suite sees. (Some cases, LeakyRelu gates, let the state grow until float32
    onnxruntime and the float64 reference part by more than 1e-5 on some draws; fixed data keeps them comparable.)"""
    import zlib

    import onnx_models

    seed = zlib.crc32(request.node.nodeid.encode())
    monkeypatch.setattr(onnx_models, "RNG", np.random.default_rng(seed))
    monkeypatch.setattr(__import__(__name__), "RNG", np.random.default_rng(seed + 1), raising=False)


def check_against_ort(path, group, *, layout: int = 0, seq: int = 5, batch: int = 2, inp: int = 3, scale: float = 2.0,
                      of_largest: float = 0.0):
    """The group's reference cells compute what onnxruntime computes running the model (layout=1, which
    onnxruntime refuses to run: onnx.reference, for nodes with the semantics it implements)."""
    shape = (seq, batch, inp) if layout == 0 else (batch, seq, inp)
    x = (RNG.standard_normal(shape) * scale).astype(np.float32)
    y = flat_y((ort_run if layout == 0 else ref_run)(path, {"X": x})[0], layout)
    xs = x if layout == 0 else x.transpose(1, 0, 2)
    got = run_stack(group.cells(), xs)
    if group.go_backwards:
        got = got[::-1]  # Keras order (last step first) -> ONNX reverse's Y, aligned with X
    if of_largest:  # a tolerance relative to the largest output, for states that grow (see the caller)
        assert np.abs(got - y).max() <= of_largest * max(1.0, float(np.abs(y).max())), np.abs(got - y).max()
    else:
        np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)
    return np.abs(got - y).max()


def no_assumed(group) -> None:
    assert group.provenance and all(origin(s) in ("file", "version default") for s in group.provenance.values()), \
        group.provenance


# ------------------------------------------------------------------ activations, by formula, against onnxruntime

LSTM_ACTS = [
    (["HardSigmoid", "Tanh", "Tanh"], [0.2], [0.5], ("hard_sigmoid_keras2", "tanh"), "file"),
    (["HardSigmoid", "Tanh", "Tanh"], [], [], ("hard_sigmoid_keras2", "tanh"), "version default"),
    (["HardSigmoid", "Tanh", "Tanh"], [1 / 6], [0.5], ("hard_sigmoid_keras3", "tanh"), "file"),
    (["HardSigmoid", "Softsign", "Softsign"], [0.3], [0.4], ("HardSigmoid(alpha=0.3, beta=0.4)", "softsign"), "file"),
    (["Sigmoid", "Affine", "Affine"], [0.7, 0.7], [0.1, 0.1], ("sigmoid", "Affine(alpha=0.7, beta=0.1)"), "file"),
    (["Sigmoid", "Affine", "Affine"], [1.0, 1.0], [0.0, 0.0], ("sigmoid", "linear"), "file"),
    (["Sigmoid", "LeakyRelu", "LeakyRelu"], [0.1, 0.1], [], ("sigmoid", "LeakyRelu(alpha=0.1)"), "file"),
    (["Sigmoid", "LeakyRelu", "LeakyRelu"], [], [], ("sigmoid", "LeakyRelu(alpha=0.01)"), "version default"),
    (["Sigmoid", "ThresholdedRelu", "ThresholdedRelu"], [0.3, 0.3], [], ("sigmoid", "ThresholdedRelu(alpha=0.3)"), "file"),
    (["Sigmoid", "ScaledTanh", "ScaledTanh"], [1.7, 1.7], [0.6, 0.6], ("sigmoid", "ScaledTanh(alpha=1.7, beta=0.6)"), "file"),
    (["Sigmoid", "Elu", "Elu"], [], [], ("sigmoid", "Elu(alpha=1)"), "version default"),
    (["Sigmoid", "Elu", "Elu"], [0.5, 0.5], [], ("sigmoid", "Elu(alpha=0.5)"), "file"),
    (["Softsign", "Softplus", "Softplus"], [], [], ("softsign", "softplus"), "file"),
    (["Sigmoid", "Relu", "Relu"], [], [], ("sigmoid", "relu"), "file"),
    (["Tanh", "Tanh", "Tanh"], [], [], ("tanh", "tanh"), "file"),
]


@pytest.mark.parametrize("acts,alpha,beta,names,prov", LSTM_ACTS, ids=[f"{a[0][0]}-{a[0][1]}-{len(a[1])}" for a in LSTM_ACTS])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_activations_match_onnxruntime(tmp_path, acts, alpha, beta, names, prov, direction):
    d = 2 if direction == "bidirectional" else 1
    attrs = {"activations": acts * d}
    if alpha:
        attrs["activation_alpha"] = alpha * d
    if beta:
        attrs["activation_beta"] = beta * d
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", direction=direction, extra_attrs=attrs, with_initial=False)
    g = one_group(path)
    assert (g.recurrent_activation, g.activation) == names
    assert origin(g.provenance["activation"]) == prov
    no_assumed(g)
    assert refusals(g, "onnx") == [] and refusals(g, "gates") == []
    check_against_ort(path, g)


GRU_ACTS = [
    (["HardSigmoid", "Tanh"], [0.2], [0.5], ("hard_sigmoid_keras2", "tanh")),
    (["HardSigmoid", "Relu"], [1 / 6], [0.5], ("hard_sigmoid_keras3", "relu")),
    (["Sigmoid", "Elu"], [0.7], [], ("sigmoid", "Elu(alpha=0.7)")),
    (["LeakyRelu", "ScaledTanh"], [0.2, 1.5], [0.5], ("LeakyRelu(alpha=0.2)", "ScaledTanh(alpha=1.5, beta=0.5)")),
    (["Sigmoid", "Affine"], [0.5], [0.25], ("sigmoid", "Affine(alpha=0.5, beta=0.25)")),
    (["Softsign", "ThresholdedRelu"], [0.1], [], ("softsign", "ThresholdedRelu(alpha=0.1)")),
    (["Sigmoid", "Softplus"], [], [], ("sigmoid", "softplus")),
]


@pytest.mark.parametrize("acts,alpha,beta,names", GRU_ACTS, ids=["-".join(a[0]) for a in GRU_ACTS])
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_activations_match_onnxruntime(tmp_path, acts, alpha, beta, names, lbr):
    attrs = {"activations": acts, "linear_before_reset": lbr}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    path, _ = rnn_model(tmp_path / "g.onnx", "GRU", extra_attrs=attrs, with_initial=False)
    g = one_group(path)
    assert (g.recurrent_activation, g.activation) == names and g.reset_after is bool(lbr)
    assert g.provenance["reset_after"] == f"file: node enc/rnn states linear_before_reset={lbr}"
    no_assumed(g)
    # LeakyRelu gates are unbounded: the update gate passes 1, the state grows (to 1e5 in 5 steps on some draws) and
    # (1 - z) * h~ + z * h cancels, so float32 onnxruntime and the float64 reference part by up to 2e-5 of the largest
    # output (measured over 300 draws); a formula that differs is off by far more (a wrong alpha: 1e-1)
    check_against_ort(path, g, of_largest=1e-4 if acts[0] == "LeakyRelu" else 0.0)


# ------------------------------------------------------------------ clip, input_forget, peepholes, direction, layout

CONFIGS = [
    ("LSTM", dict(clip=0.6), {}),
    ("LSTM", dict(input_forget=1), {}),
    ("LSTM", dict(input_forget=1, clip=0.8), dict(peepholes=True)),
    ("LSTM", {}, dict(peepholes=True)),
    ("LSTM", dict(clip=0.5), dict(peepholes=True, direction="bidirectional")),
    ("LSTM", {}, dict(direction="reverse")),
    ("LSTM", {}, dict(layout=1, direction="bidirectional")),
    ("GRU", dict(clip=0.4, linear_before_reset=1), {}),
    ("GRU", dict(clip=0.4), dict(direction="reverse")),
    ("GRU", dict(linear_before_reset=1), dict(layout=1)),
    ("LSTM", dict(activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5],
                  clip=2.0, input_forget=1), dict(direction="bidirectional", peepholes=True)),
]


@pytest.mark.parametrize("op,attrs,kw", CONFIGS, ids=[f"{c[0]}-{'-'.join(c[1])}-{'-'.join(f'{k}{v}' for k, v in c[2].items())}"
                                                      for c in CONFIGS])
def test_node_semantics_match_onnxruntime(tmp_path, op, attrs, kw):
    path, w = rnn_model(tmp_path / "m.onnx", op, extra_attrs=attrs, with_initial=False, **kw)
    g = one_group(path)
    no_assumed(g)
    assert g.clip == (None if "clip" not in attrs else pytest.approx(attrs["clip"]))
    assert g.input_forget is bool(attrs.get("input_forget", 0))
    assert g.peepholes is bool(kw.get("peepholes"))
    assert g.go_backwards is (kw.get("direction") == "reverse")
    assert g.directions == (2 if kw.get("direction") == "bidirectional" else 1)
    assert g.members == [p for p in ("rnn/W", "rnn/R", "rnn/B", "rnn/P") if p[-1] in w]
    if kw.get("layout"):
        assert any("layout=1" in n for n in g.notes)
    if kw.get("direction") == "reverse":
        assert any("aligned with X" in n for n in g.notes)
    check_against_ort(path, g, layout=kw.get("layout", 0))
    # a default-activation node without clip/input_forget is also what onnx.reference computes
    if not attrs.get("clip") and not attrs.get("input_forget") and "activations" not in attrs and not kw.get("layout"):
        x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
        np.testing.assert_allclose(ref_run(path, {"X": x})[0], ort_run(path, {"X": x})[0], rtol=1e-5, atol=1e-6)


def test_clip_is_not_applied_to_the_cell_state(tmp_path):
    """onnxruntime clips the gates' pre-activations, not c before h(c): a cell clipping c too computes otherwise."""
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", extra_attrs=dict(clip=0.3), with_initial=False)
    g = one_group(path)
    check_against_ort(path, g, scale=4.0)
    x = (RNG.standard_normal((5, 2, 3)) * 4).astype(np.float32)
    stack = g.cells().map(lambda c: c.with_(clip=None))
    assert np.abs(run_stack(stack, x) - flat_y(ort_run(path, {"X": x})[0])).max() > 1e-2  # clip matters here


def test_thresholded_relu_default_differs_between_spec_and_onnxruntime(tmp_path):
    """Why ThresholdedRelu without alpha is refused: the spec's ThresholdedRelu default is 1.0, onnxruntime uses 0."""
    path, _ = rnn_model(tmp_path / "t.onnx", "GRU", extra_attrs=dict(activations=["Sigmoid", "ThresholdedRelu"]),
                        with_initial=False)
    g = one_group(path)
    assert g.activation is None and origin(g.provenance["activation"]) == "missing"
    assert "no default" in refusals(g, "onnx")[0]
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    y = flat_y(ort_run(path, {"X": x})[0])
    from ckptsurgeon.rnn.cell import Stack

    for alpha, same in (("0", True), ("1", False)):
        stack = Stack(g.load()).map(lambda c: c.with_(recurrent_activation="sigmoid", reset_after=False,
                                                      activation=f"ThresholdedRelu(alpha={alpha})"))
        assert np.allclose(run_stack(stack, x), y, atol=1e-5) is same


@pytest.mark.parametrize("attrs,why", [
    (dict(activations=["Sigmoid", "Tanh", "Relu"]), "differs from its output activation"),
    (dict(activations=["Sigmoid", "Affine", "Affine"]), "no default"),
    (dict(activations=["Sigmoid", "ScaledTanh", "ScaledTanh"], activation_alpha=[1.0, 1.0]), "no default"),
    (dict(activations=["Sigmoid", "Tanh", "Tanh"], activation_alpha=[0.5]), "no activation takes"),
    (dict(activations=["Sigmoid", "Tanh"]), "lists 2 activations"),
    (dict(activations=["Swish", "Tanh", "Tanh"]), "does not define"),
])
def test_activations_nothing_computes_are_missing(tmp_path, attrs, why):
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", extra_attrs=attrs, with_initial=False)
    g = one_group(path)
    assert origin(g.provenance["activation"]) == "missing" and why in g.provenance["activation"]
    for target in ("torch", "keras", "onnx", "gates"):
        assert any(why in r for r in refusals(g, target)), target


def test_directions_with_different_activations_are_missing(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "GRU", direction="bidirectional", with_initial=False,
                        extra_attrs=dict(activations=["Sigmoid", "Tanh", "HardSigmoid", "Tanh"]))
    g = one_group(path)
    assert "different activations" in g.provenance["recurrent_activation"]
    assert refusals(g, "gates")


# ------------------------------------------------------------------ torch exports: stacks, chains, names

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("export", ["torchscript", "torchscript-unfolded", "dynamo"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_torch_exports_are_one_stacked_group(tmp_path, torch, cls, export, bidirectional):
    if export == "dynamo":
        pytest.importorskip("onnxscript")
    from onnx_rnn_helpers import Wrapper, torch_export

    torch.manual_seed(0)
    m = Wrapper.make(torch, cls, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(5, 2, 3)
    kw = dict(dynamo=True) if export == "dynamo" else dict(dynamo=False, do_constant_folding=export == "torchscript")
    path = torch_export(m, (x,), tmp_path / "m.onnx", **kw)
    groups = groups_of(path)
    assert len(groups) == 1, [(g.scope, g.variant) for g in groups]  # no name-based double claim either
    g = groups[0]
    assert (g.kind, g.num_layers, g.directions, g.input_size, g.hidden_size) == (cls.lower(), 2, 1 + bidirectional, 3, 4)
    assert g.layout == "onnx" and g.variant == f"ONNX {cls} nodes x2 layers"
    no_assumed(g)
    if cls == "GRU":
        assert g.reset_after is True and origin(g.provenance["reset_after"]) == "file"
    assert origin(g.provenance["topology"]) == "file"
    if export == "torchscript-unfolded":  # W/R/B folded from the state-dict tensors: those are the members
        assert set(g.members) == {k.replace(".", "/") for k in m.state_dict()}
        assert any("folded from" in n for n in g.notes)
    y = ort_run(path, {next(iter(i.name for i in onnx.load(str(path)).graph.input)): x.numpy()})[0]
    np.testing.assert_allclose(run_stack(g.cells(), x.numpy()), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, m(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_lstmcell_inside_if_is_found_at_the_node_scope(tmp_path, torch):
    from onnx_rnn_helpers import export_lstmcell

    module, args = export_lstmcell(torch, tmp_path / "cell.onnx")
    g = one_group(tmp_path / "cell.onnx")
    assert g.scope == "If/then_branch/cell/LSTM" and g.variant == "ONNX LSTM node"
    assert g.members == ["cell/weight_ih", "cell/weight_hh", "cell/bias_hh", "cell/bias_ih"] or \
        set(g.members) == {"cell/weight_ih", "cell/weight_hh", "cell/bias_ih", "cell/bias_hh"}
    no_assumed(g)
    # the folded group is the torch cell's weights, exactly
    (cell,) = g.cells()[0]
    sd = module.cell.state_dict()
    for name, arr in (("weight_ih", cell.w_ih), ("weight_hh", cell.w_hh), ("bias_ih", cell.b_ih), ("bias_hh", cell.b_hh)):
        assert np.array_equal(arr, sd[name].numpy()), name
    # extract --scope on the source tensors selects the group
    assert len(groups_of(tmp_path / "cell.onnx", scope=["cell"])) == 1
    assert groups_of(tmp_path / "cell.onnx", scope=["cell/weight_ih"]) == []


# ------------------------------------------------------------------ stacking: only exact Y -> X links

def _two_nodes(path, between: list, y_name: str = "Y0", direction: str = "forward"):
    """Two LSTM nodes; ``between`` are nodes turning Y0 into X1 (plus their constant initializers)."""
    D, H = (2 if direction == "bidirectional" else 1), 4
    inits = []
    for k, inp in enumerate((3, D * H)):
        inits += [onnx.numpy_helper.from_array(RNG.standard_normal(s).astype(np.float32) * 0.4, f"l{k}.{n}")
                  for n, s in (("W", (D, 16, inp)), ("R", (D, 16, H)), ("B", (D, 32)))]
    nodes = [helper.make_node("LSTM", ["X", "l0.W", "l0.R", "l0.B"], [y_name], name="l0", hidden_size=H, direction=direction)]
    extra = []
    for n in between:
        if isinstance(n, onnx.TensorProto):
            extra.append(n)
        else:
            nodes.append(n)
    nodes.append(helper.make_node("LSTM", ["X1", "l1.W", "l1.R", "l1.B"], ["Y"], name="l1", hidden_size=H, direction=direction))
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [5, 2, 3])],
                              [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)], inits + extra)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def _const(name, values):
    return onnx.numpy_helper.from_array(np.array(values, np.int64), name)


@pytest.mark.parametrize("between,stacked", [
    ([_const("ax", [1]), helper.make_node("Squeeze", ["Y0", "ax"], ["X1"])], True),
    ([helper.make_node("Transpose", ["Y0"], ["t"], perm=[0, 2, 1, 3]), _const("s", [0, 0, -1]),
      helper.make_node("Reshape", ["t", "s"], ["X1"])], True),
    ([helper.make_node("Transpose", ["Y0"], ["t"], perm=[0, 2, 1, 3]), _const("s", [5, 2, 4]),
      helper.make_node("Reshape", ["t", "s"], ["X1"])], True),
    ([_const("ax", [1]), helper.make_node("Squeeze", ["Y0", "ax"], ["q"]), helper.make_node("Relu", ["q"], ["X1"])], False),
    ([_const("s", [2, 5, -1]), helper.make_node("Reshape", ["Y0", "s"], ["X1"])], False),  # time and batch mixed up
])
def test_only_exact_stacking_links_layers(tmp_path, between, stacked):
    path = _two_nodes(tmp_path / "two.onnx", between)
    groups = groups_of(path)
    assert len(groups) == (1 if stacked else 2), [g.scope for g in groups]
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    if stacked:
        np.testing.assert_allclose(run_stack(groups[0].cells(), x), flat_y(ort_run(path, {"X": x})[0]), rtol=1e-5, atol=1e-5)


def test_reshape_without_transpose_is_no_link_for_two_directions(tmp_path):
    """[T, 2, B, H] reshaped straight to [T, B, 2H] interleaves batch and directions: not a stack."""
    path = _two_nodes(tmp_path / "two.onnx", [_const("s", [0, 0, -1]), helper.make_node("Reshape", ["Y0", "s"], ["X1"])],
                      direction="bidirectional")
    assert len(groups_of(path)) == 2


def test_reverse_nodes_are_not_stacked(tmp_path):
    path = _two_nodes(tmp_path / "two.onnx", [_const("ax", [1]), helper.make_node("Squeeze", ["Y0", "ax"], ["X1"])],
                      direction="reverse")
    groups = groups_of(path)
    assert len(groups) == 2 and all(g.go_backwards for g in groups)


# ------------------------------------------------------------------ names, flags, RNN nodes, CLI

def test_name_based_recognition_does_not_claim_real_onnx_files(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "GRU", with_initial=False)
    groups = groups_of(path)
    assert [(g.scope, g.variant) for g in groups] == [("enc/rnn", "ONNX GRU node")]
    # ... while W/R/B in another file (an --to onnx output) are still read by name
    from ckptsurgeon.index import memory_index
    from ckptsurgeon.rnn import onnx_layout

    index = ckptsurgeon.open(str(path))
    mem = memory_index([(p, p, index[p].numpy()) for p in index], format="npz", file="<npz>")
    assert [g.layout for g in onnx_layout.recognize(mem, RecognizeOptions())] == ["onnx"]
    assert onnx_layout.recognize(index, RecognizeOptions()) == []


def test_flags_do_not_override_what_an_onnx_node_runs(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "GRU", with_initial=False)
    (g,) = recognize(ckptsurgeon.open(str(path)), RecognizeOptions(recurrent_activation="hard_sigmoid_keras2",
                                                                    reset_after=True))
    assert g.recurrent_activation == "sigmoid" and g.reset_after is False
    assert any("--recurrent-activation" in n and "ignored" in n for n in g.notes)


def test_rnn_nodes_are_listed_and_refused(tmp_path):
    path, _ = rnn_model(tmp_path / "r.onnx", "RNN", with_initial=False)
    assert groups_of(path) == []
    res = CliRunner().invoke(cli, ["rnn", str(path)])
    assert res.exit_code == 0 and "enc/rnn: RNN [ONNX RNN node]" in res.output and "ungated" in res.output
    res = CliRunner().invoke(cli, ["extract", str(path), "--to", "torch", "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and "ungated" in res.output and "--exclude" in res.output
    assert not (tmp_path / "o.safetensors").exists()


def test_rnn_command_shows_every_fact_with_its_source(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", direction="bidirectional", with_initial=False, extra_attrs=dict(
        activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5], clip=3.0))
    res = CliRunner().invoke(cli, ["rnn", str(path)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "enc/rnn: LSTM [ONNX LSTM node] input 3, hidden 4; bidirectional, bias: two" in out
    assert "recurrent_activation: hard_sigmoid_keras2 = clip(0.2 * x + 0.5, 0, 1)  (file: node enc/rnn states " \
           "activations=['HardSigmoid', 'Tanh', 'Tanh', 'HardSigmoid', 'Tanh', 'Tanh']" in out
    assert "clip: 3  (file: node enc/rnn states clip=3.0)" in out
    assert "input_forget: False  (version default: ONNX opset 13 default input_forget=0" in out
    assert "go_backwards: False  (file: node enc/rnn states direction='bidirectional')" in out
    res = CliRunner().invoke(cli, ["rnn", str(path), "--json"])
    import json

    (desc,) = json.loads(res.output)
    assert desc["clip"] == 3.0 and desc["members"] == ["rnn/W", "rnn/R", "rnn/B"]
    res = CliRunner().invoke(cli, ["ls", str(path)])
    assert res.exit_code == 0 and "rnn/W" in res.output and "2x16x3" in res.output


def test_external_data_group(tmp_path):
    (tmp_path / "m").mkdir()
    path, w = rnn_model(tmp_path / "m" / "e.onnx", "LSTM", direction="bidirectional", external=True, peepholes=True,
                        with_initial=False)
    g = one_group(path)
    assert ckptsurgeon.open(str(path)).files[1:] and g.peepholes
    check_against_ort(path, g)


def test_nodes_with_run_time_weights_are_listed_not_grouped(tmp_path):
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", with_initial=False)
    m = onnx.load(str(path))
    b = next(t for t in m.graph.initializer if t.name == "rnn.B")
    m.graph.initializer.remove(b)
    m.graph.input.append(helper.make_tensor_value_info("rnn.B", onnx.TensorProto.FLOAT, list(b.dims)))
    onnx.save(m, str(path))
    assert groups_of(path) == []
    res = CliRunner().invoke(cli, ["rnn", str(path)])
    assert res.exit_code == 0 and "enc/rnn: LSTM [ONNX LSTM node] (rnn/W, rnn/R): not converted: its weights are not in " \
                                   "the file: B 'rnn.B' is fed at run time" in res.output, res.output


def test_dynamic_quantized_lstm_is_named_not_blamed_on_naming(tmp_path):
    """onnxruntime's quantize_dynamic turns an LSTM node into com.microsoft DynamicQuantizeLSTM (int8 W and R with
    scales and zero points): rnn names it and why it is not converted; ls/extract take its tensors exactly."""
    import onnx
    import torch
    from click.testing import CliRunner
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ckptsurgeon.cli import cli

    torch.onnx.export(torch.nn.LSTM(8, 16), (torch.randn(5, 2, 8),), tmp_path / "lstm.onnx", dynamo=False, opset_version=14)
    quantize_dynamic(str(tmp_path / "lstm.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    assert "DynamicQuantizeLSTM" in [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    out = CliRunner().invoke(cli, ["rnn", str(tmp_path / "q.onnx")])
    assert out.exit_code == 0 and "DynamicQuantizeLSTM" in out.output and "quantized LSTM (int8" in out.output
    assert "renamed into one" not in out.output  # not blamed on naming
    model = onnx.load(tmp_path / "q.onnx")
    quantized = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_quantized")}
    index = ckptsurgeon.open(tmp_path / "q.onnx")
    by_key = {ref.key: ref for ref in index.values()}
    assert quantized and all(np.array_equal(by_key[k].numpy(), v) and by_key[k].dtype == np.int8 for k, v in quantized.items())
