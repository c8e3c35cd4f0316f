"""Recurrent nodes described from the ONNX graph: attributes exactly, W/R/B/P folded and compared with what
onnx.reference computes for those node inputs when it runs the whole model (or the whole If branch)."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_rnn_helpers import lstmcell_module
from onnx_models import chain_model, onnx, rnn_model, torch_export

from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats.onnx.graph import describe_recurrent
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

WEIGHTS = ("W", "R", "B", "P")


def _feeds(graph, rng=np.random.default_rng(3)) -> dict[str, np.ndarray]:
    inits = {t.name for t in graph.initializer}
    feeds = {}
    for vi in graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value or 2 for d in tt.shape.dim]
        dt = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = np.array(True) if dt == np.bool_ else rng.standard_normal(dims).astype(dt)
    return feeds


def _branch_model(model, if_name: str, branch: str):
    """The If node's branch as a model of its own: outer initializers + branch nodes, outer inputs as inputs."""
    node = next(n for n in model.graph.node if n.op_type == "If" and n.name == if_name)
    g = next(a.g for a in node.attribute if a.name == branch)
    graph = helper.make_graph(list(g.node), "branch", list(model.graph.input), list(g.output),
                              list(model.graph.initializer) + list(g.initializer))
    m = helper.make_model(graph, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


def reference_inputs(model, names: list[str], branch: tuple[str, str] | None = None) -> list[np.ndarray]:
    """What onnx.reference computes for ``names`` running the whole model (or the whole If branch)."""
    m = _branch_model(model, *branch) if branch else model
    return ReferenceEvaluator(m).run(names, _feeds(m.graph))


def check_nodes(path, branch=None, expect_ops=None) -> list:
    model = onnx.load(str(path))
    nodes = describe_recurrent(str(path))
    assert nodes
    protos = {}

    def walk(g):
        for n in g.node:
            if n.op_type in ("LSTM", "GRU", "RNN"):
                protos[n.output[0]] = n
            for a in n.attribute:
                if a.type == a.GRAPH:
                    walk(a.g)
    walk(model.graph)
    assert len(protos) == len(nodes)
    for node in nodes:
        proto = protos[node.outputs[0]]
        assert node.op_type == proto.op_type and list(node.outputs) == list(proto.output)
        want = {}
        for a in proto.attribute:
            v = helper.get_attribute_value(a)
            want[a.name] = v.decode() if isinstance(v, bytes) else tuple(x.decode() if isinstance(x, bytes) else x for x in v) \
                if isinstance(v, list) else v
        assert node.attributes == want and node.stated == set(want)  # exactly: float32 bits decoded alike
        names = [node.inputs[r].name for r in WEIGHTS if r in node.inputs and node.inputs[r].origin in ("initializer", "constant", "folded")]
        assert [r for r in ("W", "R") if node.inputs[r].origin in ("initializer", "constant", "folded")] == ["W", "R"]
        refs = reference_inputs(model, names, branch)
        for name, ref in zip(names, refs):
            inp = next(i for i in node.inputs.values() if i.name == name)
            got = inp.value()
            assert got.dtype == ref.dtype and got.shape == ref.shape and got.tobytes() == ref.tobytes(), (node.scope, inp.role)
            if expect_ops is not None and inp.origin == "folded":
                assert set(inp.ops) <= expect_ops
    return nodes


# ------------------------------------------------------------------ torch.onnx.export

@pytest.fixture(scope="module")
def torch_mod():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("folding", [True, False])
def test_torchscript_export_stacked_bidirectional(tmp_path, torch_mod, cls, folding):
    torch = torch_mod
    torch.manual_seed(0)
    m = getattr(torch.nn, cls)(3, 4, num_layers=2, bidirectional=True)
    path = torch_export(m, (torch.randn(5, 2, 3),), tmp_path / "m.onnx", dynamo=False, do_constant_folding=folding)
    nodes = check_nodes(path, expect_ops={"Slice", "Concat", "Unsqueeze", "Gather"})
    assert [n.op_type for n in nodes] == [cls] * 2
    for n in nodes:
        assert n.direction == "bidirectional" and n.hidden_size == 4 and n.num_directions == 2
        if cls == "GRU":
            assert n.linear_before_reset == 1 and "linear_before_reset" in n.stated
        w = n.inputs["W"]
        if folding:
            assert w.origin == "initializer" and w.writable
        else:  # W = Unsqueeze(Concat(Slice(weight_ih_l0)...)), both directions: the state-dict tensors are its sources
            assert w.origin == "folded" and w.writable and w.ops[0] == "Slice"
            layer = n.scope[-1] if n.scope[-1].isdigit() else "0"
            assert {s.path for s in w.sources} == {f"weight_ih_l{layer}", f"weight_ih_l{layer}_reverse"}
            assert n.inputs["initial_h"].origin == "computed"


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_dynamo_export_stacked_bidirectional(tmp_path, torch_mod, cls):
    pytest.importorskip("onnxscript")
    torch = torch_mod
    torch.manual_seed(0)
    m = getattr(torch.nn, cls)(3, 4, num_layers=2, bidirectional=True)
    path = torch_export(m, (torch.randn(5, 2, 3),), tmp_path / "m.onnx", dynamo=True)
    nodes = check_nodes(path)
    assert [n.op_type for n in nodes] == [cls] * 2
    assert all(n.inputs["W"].origin == "initializer" for n in nodes)
    # the exporter shares one zero initial state between the layers: not writable through one node
    h0 = nodes[0].inputs["initial_h"]
    assert h0.origin == "initializer" and not h0.writable and "also feeds" in h0.reason


def test_scripted_lstmcell_inside_if(tmp_path, torch_mod):
    torch = torch_mod

    torch.manual_seed(0)
    path = torch_export(torch.jit.script(lstmcell_module(torch)), (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.tensor(True)),
                        tmp_path / "cell.onnx", dynamo=False)
    model = onnx.load(str(path))
    if_name = next(n.name for n in model.graph.node if n.op_type == "If")
    (node,) = check_nodes(path, branch=(if_name, "then_branch"), expect_ops={"Slice", "Concat", "Unsqueeze"})
    assert node.scope.startswith(if_name.strip("/") + "/then_branch/") and node.graph_scope.endswith("then_branch")
    w, b = node.inputs["W"], node.inputs["B"]
    assert w.origin == "folded" and [s.path for s in w.sources] == ["cell/weight_ih"] and w.writable
    assert {s.path for s in b.sources} == {"cell/bias_ih", "cell/bias_hh"}
    assert all(p.path.startswith(node.graph_scope) for p in w.params)  # Slice starts/ends from Constants in the branch
    # the folded W is the PyTorch weight with gates reordered i,f,g,o -> i,o,f,c
    w_ih = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "cell.weight_ih"))
    H = 4
    assert np.array_equal(w.value()[0], w_ih[np.r_[0:H, 3 * H:4 * H, H:2 * H, 2 * H:3 * H]])


# ------------------------------------------------------------------ onnx.helper models

def test_lstm_peepholes_bidirectional(tmp_path):
    path, w = rnn_model(tmp_path / "p.onnx", "LSTM", direction="bidirectional", peepholes=True)
    (n,) = check_nodes(path)
    assert n.inputs["P"].origin == "initializer" and n.inputs["P"].path == "rnn/P"
    assert np.array_equal(n.inputs["P"].value(), w["P"])
    assert n.activations == ("Sigmoid", "Tanh", "Tanh") * 2 and "activations" not in n.stated
    assert n.scope == "enc/rnn"


def test_hardsigmoid_activations_exact(tmp_path):
    acts = ["HardSigmoid", "Tanh", "Tanh", "HardSigmoid", "Tanh", "Tanh"]
    path, _ = rnn_model(tmp_path / "h.onnx", "LSTM", direction="bidirectional",
                        extra_attrs=dict(activations=acts, activation_alpha=[0.2, 0.2], activation_beta=[0.5, 0.5],
                                         clip=3.0, input_forget=1))
    (n,) = check_nodes(path)
    assert n.activations == tuple(acts)
    assert n.activation_alpha == (np.float32(0.2),) * 2 and n.activation_beta == (0.5, 0.5)
    assert n.clip == 3.0 and n.input_forget == 1
    assert n.stated == {"hidden_size", "direction", "activations", "activation_alpha", "activation_beta", "clip", "input_forget"}


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(tmp_path, lbr):
    path, w = rnn_model(tmp_path / "g.onnx", "GRU", extra_attrs=dict(linear_before_reset=lbr))
    (n,) = check_nodes(path)
    assert n.linear_before_reset == lbr and "linear_before_reset" in n.stated
    assert np.array_equal(n.inputs["B"].value(), w["B"])


def test_gru_default_linear_before_reset_is_stated_as_default(tmp_path):
    path, _ = rnn_model(tmp_path / "g.onnx", "GRU")
    (n,) = check_nodes(path)
    assert n.linear_before_reset == 0 and "linear_before_reset" not in n.stated


def test_layout_1_and_rnn(tmp_path):
    path, _ = rnn_model(tmp_path / "l.onnx", "LSTM", layout=1)
    (n,) = check_nodes(path)
    assert n.layout == 1 and "layout" in n.stated
    path, _ = rnn_model(tmp_path / "r.onnx", "RNN", direction="reverse")
    (n,) = check_nodes(path)
    assert n.op_type == "RNN" and n.direction == "reverse" and n.gates == 1


def test_external_data(tmp_path):
    path, w = rnn_model(tmp_path / "e.onnx", "GRU", direction="bidirectional", external=True)
    (n,) = check_nodes(path)
    assert n.inputs["W"].origin == "initializer" and n.inputs["W"].writable


def test_chains_of_every_supported_op(tmp_path):
    path, src = chain_model(tmp_path / "c.onnx")
    (n,) = check_nodes(path)
    w, r, b = n.inputs["W"], n.inputs["R"], n.inputs["B"]
    assert w.origin == r.origin == b.origin == "folded"
    assert set(w.ops) == {"Transpose", "Slice", "Concat", "Unsqueeze"} and [s.path for s in w.sources] == ["src/wt"]
    assert {p.path for p in w.params} == {"s0", "e0", "s1", "e1", "s2", "e2", "ax0"}
    assert set(r.ops) == {"Cast", "Identity", "Reshape"} and [s.kind for s in r.sources] == ["constant"]
    assert set(b.ops) == {"Gather", "Split", "Concat"} and [s.path for s in b.sources] == ["src/b"]
    assert {p.path for p in b.params} == {"g0", "split"}


# ------------------------------------------------------------------ write-back

def _apply(model, updates: dict[str, np.ndarray]):
    """The model with tensors (initializers or Constant values, by name) replaced, through onnx's own API."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in updates:
            t.CopyFrom(numpy_helper.from_array(updates[t.name], t.name))
    for node in m.graph.node:
        if node.op_type == "Constant" and node.output[0] in updates:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(updates[node.output[0]]))
    return m


def test_write_back_through_chains(tmp_path):
    path, _ = chain_model(tmp_path / "c.onnx")
    (n,) = describe_recurrent(str(path))
    model = onnx.load(str(path))
    rng = np.random.default_rng(5)
    updates = {}
    names = {}
    for role in ("W", "R", "B"):
        inp = n.inputs[role]
        new = rng.standard_normal(inp.value().shape).astype(np.float32)
        if role == "R":  # the source is float16: only values a float16 holds go back exactly
            new = new.astype(np.float16).astype(np.float32)
        out = inp.write_back(new)
        names[role] = new
        for p, arr in out.items():
            src = next(s for s in inp.sources if s.path == p)
            updates[src.name] = arr
    got = ReferenceEvaluator(_apply(model, updates)).run([n.inputs[r].name for r in ("W", "R", "B")], _feeds(model.graph))
    for role, g in zip(("W", "R", "B"), got):
        assert np.array_equal(g, names[role]), role


def test_write_back_refusals(tmp_path):
    path, _ = chain_model(tmp_path / "c.onnx")
    (n,) = describe_recurrent(str(path))
    r = n.inputs["R"]
    with pytest.raises(OutputError, match="does not reproduce it exactly"):
        r.write_back(np.full(r.value().shape, 0.1, np.float32))  # 0.1 is no float16
    with pytest.raises(OutputError, match="shape"):
        n.inputs["W"].write_back(np.zeros((2, 2), np.float32))
    # B's source feeds both a Gather and a Split of the chain: writing must keep both uses consistent
    b = n.inputs["B"]
    assert b.writable
    with pytest.raises(OutputError, match="graph_input|cannot be written back"):
        n.inputs["X"].write_back(np.zeros(3))
