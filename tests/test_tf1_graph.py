"""TF1 run-time facts from the Saver's MetaGraph (``formats/tensorflow/graph_def.py``, ``rnn/tf1_graph.py``): the values
TensorFlow was built with, read back from MetaGraphs TensorFlow wrote (fixtures/tensorflow/tf1_grid/meta_*); a damaged,
linked or foreign MetaGraph never breaks reading and never lends a fact. TensorFlow is never imported."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptsurgeon
from ckptsurgeon.errors import FormatError
from ckptsurgeon.formats.tensorflow.graph_def import load_graph, parse
from ckptsurgeon.rnn import ConvertOptions, recognize
from conftest import FIXTURES

GRID = FIXTURES / "tensorflow" / "tf1_grid"
META_CASES = sorted(p.name for p in GRID.iterdir() if (p / "model.ckpt.meta").exists())


def _config(name: str) -> dict:
    return json.loads((GRID / name / "case.json").read_text())["layers"][0]["config"]


def _copy(tmp_path, name: str):
    folder = tmp_path / name
    shutil.copytree(GRID / name, folder)
    return folder


def test_the_grid_has_metagraphs_of_both_control_flows():
    flows = {json.loads((GRID / n / "case.json").read_text())["spec"]["meta_graph"] for n in META_CASES}
    assert len(META_CASES) >= 10 and flows == {"v1", "v2"}


@pytest.mark.parametrize("name", [n for n in META_CASES if n not in ("meta_multi2_lstm_fb_mixed", "meta_gru_relu6")])
def test_facts_are_the_arguments_tensorflow_was_built_with(name):
    config = _config(name)
    group = recognize(ckptsurgeon.open(GRID / name / "model.ckpt"))[0]
    assert group.activation == config.get("activation", "tanh")
    if group.kind == "lstm":
        assert group.forget_bias == pytest.approx(config.get("forget_bias", 1.0))
        assert group.cell_clip == config.get("cell_clip") and group.proj_clip == config.get("proj_clip")
        assert group.provenance["forget_bias"].startswith("file: MetaGraph model.ckpt.meta")


def test_without_its_metagraph_the_same_checkpoint_falls_back_to_version_defaults(tmp_path):
    folder = _copy(tmp_path, "meta_basic_lstm_fb0")
    os.remove(folder / "model.ckpt.meta")
    group = recognize(ckptsurgeon.open(folder / "model.ckpt"))[0]
    assert group.forget_bias == 1.0 and group.provenance["forget_bias"].startswith("version default")


def test_a_linked_metagraph_is_not_followed(tmp_path):
    folder = _copy(tmp_path, "meta_basic_lstm_fb0")
    os.rename(folder / "model.ckpt.meta", tmp_path / "elsewhere.meta")
    os.symlink(tmp_path / "elsewhere.meta", folder / "model.ckpt.meta")
    group = recognize(ckptsurgeon.open(folder / "model.ckpt"))[0]
    assert group.provenance["forget_bias"].startswith("version default")


def test_a_metagraph_of_other_variables_lends_no_fact(tmp_path):
    """The .meta of another model beside this bundle (a renamed Saver, a copied file): its cells are not these."""
    folder = _copy(tmp_path, "lstm_fb05")
    shutil.copy(GRID / "meta_basic_lstm_fb0" / "model.ckpt.meta", folder / "model.ckpt.meta")
    group = recognize(ckptsurgeon.open(folder / "model.ckpt"))[0]
    assert group.forget_bias == 1.0 and group.provenance["forget_bias"].startswith("version default")


def test_a_flag_against_the_graph_is_ignored_with_a_note():
    group = recognize(ckptsurgeon.open(GRID / "meta_basic_lstm_fb0" / "model.ckpt"),
                      ConvertOptions(forget_bias=1.0))[0]
    assert group.forget_bias == 0.0 and any("--forget-bias 1.0 ignored" in n for n in group.notes)


def test_a_flag_settles_what_the_graph_shows_but_cannot_read():
    """relu6 has no formula here: the activation is missing (every conversion refuses) until a flag declares one."""
    index = ckptsurgeon.open(GRID / "meta_gru_relu6" / "model.ckpt")
    assert recognize(index)[0].activation is None
    declared = recognize(index, ConvertOptions(activation="relu"))[0]
    assert declared.activation == "relu" and declared.provenance["activation"] == "flag: --activation relu"


def _damaged(data: bytes, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    blob = bytearray(data[: int(rng.integers(0, len(data)))] if seed % 3 == 0 else data)
    for _ in range(int(rng.integers(1, 8))):
        if blob:
            blob[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
    return bytes(blob)


@pytest.mark.parametrize("seed", range(60))
def test_a_damaged_metagraph_never_breaks_reading(tmp_path, seed):
    """Truncated or overwritten bytes: the graph is refused or read; a fact comes from it only in its exact shape."""
    name = META_CASES[seed % len(META_CASES)]
    folder = _copy(tmp_path, name)
    data = (GRID / name / "model.ckpt.meta").read_bytes()
    (folder / "model.ckpt.meta").write_bytes(_damaged(data, seed))
    for group in recognize(ckptsurgeon.open(folder / "model.ckpt")):
        assert all(isinstance(v, str) for v in group.provenance.values())
        group.describe()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_parse_takes_any_bytes(blob):
    try:
        graph = parse(blob)
    except FormatError:
        return
    for node in graph.nodes.values():  # every accessor answers or says None, whatever the attribute bytes hold
        node.scalar(), node.attr_float("forget_bias"), node.attr_int("num_split"), node.attr_func("body")


def test_load_graph_refuses_what_it_should_not_read(tmp_path):
    assert load_graph(str(tmp_path / "none.meta")) is None
    (tmp_path / "dir.meta").mkdir()
    assert load_graph(str(tmp_path / "dir.meta")) is None
    (tmp_path / "junk.meta").write_bytes(b"\xff" * 64)
    assert load_graph(str(tmp_path / "junk.meta")) is None
    graph = load_graph(str(GRID / "meta_lstm_relu_fb0" / "model.ckpt.meta"))
    assert graph is not None and graph.args  # control flow v2: the loop body is a function of the library


@pytest.mark.parametrize("flow", ["v1", "v2"])
def test_a_trained_graph_states_its_facts_and_tensorflow_agrees(tmp_path, flow):
    """A training graph, as users save them (gradients, Adam's slots, a global step, PREFIX-N.meta), of two
    stacked RNNs: the facts are read through it, and the reference cells compute TensorFlow's outputs."""
    from ckptsurgeon.rnn import run_stack
    from tfenv import run_tf

    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    nets = [{"scope": "enc", "kind": "basic_lstm", "hidden": 4, "forget_bias": 0.0, "activation": "softplus"},
            {"scope": "dec", "kind": "lstm", "hidden": 4, "forget_bias": 0.25, "cell_clip": 0.5}]
    want = run_tf("tf1", tmp_path, x=str(tmp_path / "x.npz"), nets=nets, train_steps=3, control_flow=flow,
                  random_biases=True, save_with_meta=str(tmp_path / "model.ckpt"))
    groups = {g.scope: g for g in recognize(ckptsurgeon.open(tmp_path / "model.ckpt"))}
    enc, dec = groups["enc"], groups["dec"]
    assert (enc.forget_bias, enc.activation, dec.forget_bias, dec.cell_clip) == (0.0, "softplus", 0.25, 0.5)
    assert all(g.provenance[f].startswith("file: MetaGraph") for g in (enc, dec) for f in ("forget_bias", "activation"))
    for scope, group in groups.items():
        got = run_stack(group.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2)
        np.testing.assert_allclose(got, want[scope], atol=1e-5, err_msg=scope)


# activation= as users wrote it -> what the graph must give (None: refused, with the op named)
ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "elu": "Elu(alpha=1)", "leaky_relu": "LeakyRelu(alpha=0.2)",
               "leaky_relu0": "LeakyRelu(alpha=0)", "softsign": "softsign", "softplus": "softplus", "sigmoid": "sigmoid",
               "identity": "linear", "python_identity": "linear", "relu6": None, "selu": None, "gelu": None,
               "swish": None, "x_sigmoid": None, "two_tanh": None}


@pytest.mark.parametrize("flow", ["v1", "v2"])
def test_every_activation_is_read_or_refused_never_guessed(tmp_path, flow):
    """One BasicLSTMCell and one GRUCell per activation (an independent review found swish read as linear, tf.identity
    crash the reading and leaky_relu(alpha=0) read as alpha 0.2): what is read computes TensorFlow's outputs, what
    is composed of several ops (swish, 2 * tanh) or has no formula (relu6) is refused."""
    from ckptsurgeon.rnn import refusals, run_stack
    from tfenv import run_tf

    x = np.random.default_rng(4).standard_normal((2, 5, 3)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    nets = [{"scope": f"{kind}_{name}", "kind": kind, "hidden": 4, "forget_bias": 0.0, "activation": name}
            for name in ACTIVATIONS for kind in ("basic_lstm", "gru")]
    want = run_tf("tf1", tmp_path, x=str(tmp_path / "x.npz"), nets=nets, control_flow=flow, random_biases=True,
                  save_with_meta=str(tmp_path / "model.ckpt"))
    groups = {g.scope: g for g in recognize(ckptsurgeon.open(tmp_path / "model.ckpt"))}
    for net in nets:
        group, expected = groups[net["scope"]], ACTIVATIONS[net["activation"]]
        if expected is None:
            assert group.activation is None and group.provenance["activation"].startswith("missing"), net
            assert refusals(group, "gates") and refusals(group, "keras"), net
            continue
        assert group.activation == expected and group.provenance["activation"].startswith("file: MetaGraph"), net
        got = run_stack(group.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2)
        np.testing.assert_allclose(got, want[net["scope"]], atol=1e-5, err_msg=net["scope"])


def _saved(tmp_path, nets, **spec):
    from tfenv import run_tf

    x = np.random.default_rng(5).standard_normal((2, 5, 3)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    want = run_tf("tf1", tmp_path, x=str(tmp_path / "x.npz"), nets=nets, random_biases=True,
                  save_with_meta=str(tmp_path / "model.ckpt"), **spec)
    return x, want, {g.scope: g for g in recognize(ckptsurgeon.open(tmp_path / "model.ckpt"))}


def _computes(group, x, want) -> None:
    from ckptsurgeon.rnn import run_stack

    got = run_stack(group.cells(), x.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_saver_that_renames_its_variables_is_followed_to_the_graph(tmp_path):
    """Saver(var_list={"renamed/" + name: variable}): the checkpoint's names are not the graph's; the Saver's SaveV2 op
    maps one to the other (found by an independent review: the graph was ignored and 1.0 assumed, 0.33 off)."""
    x, want, groups = _saved(tmp_path, [{"scope": "enc", "kind": "lstm", "hidden": 4, "forget_bias": 0.0}],
                             saved_prefix="renamed/")
    group = groups["renamed/enc"]
    assert group.forget_bias == 0.0 and group.provenance["forget_bias"].startswith("file: MetaGraph")
    _computes(group, x, want["enc"])


def test_a_getter_between_variable_and_cell_leaves_the_facts_missing(tmp_path):
    """A custom getter (here ``var * 1.0``; fp16 training casts) hides the cell's step from the shape read here:
    the facts are missing, not the version defaults (found by the review: 1.0 assumed for a forget_bias 0, 0.27 off)."""
    _, _, groups = _saved(tmp_path, [{"scope": "enc", "kind": "lstm", "hidden": 4, "forget_bias": 0.0,
                                      "getter": "scaled"}])
    group = groups["enc"]
    assert group.provenance["forget_bias"].startswith("missing: the MetaGraph model.ckpt.meta holds the cells' variables")
    assert "its value goes first to Mul (" in group.provenance["forget_bias"]  # the getter's op, named
    assert any("--forget-bias" in r for r in ckptsurgeon.rnn.refusals(group, "torch"))


def test_a_kernel_cast_to_half_is_named_as_mixed_precision(tmp_path):
    """A getter casting the variables to float16 (mixed precision's shape): the refusal names the Cast and its type,
    so the user learns why, not only that the cell was not read."""
    _, _, groups = _saved(tmp_path, [{"scope": "enc", "kind": "lstm", "hidden": 4, "forget_bias": 0.0,
                                      "getter": "half"}])
    said = groups["enc"].provenance["forget_bias"]
    assert said.startswith("missing:") and "goes first to Cast to float16 (" in said and "mixed precision" in said


def test_one_cell_object_for_every_layer_is_refused(tmp_path):
    """MultiRNNCell([cell] * 2) (old PTB code): one layer's variables, run as two stacked layers. The variables look like
    one layer; the graph shows the second step reading the first one's output (found by the review: 0.81 off)."""
    _, _, groups = _saved(tmp_path, [{"scope": "enc", "kind": "lstm", "hidden": 3, "forget_bias": 0.0, "layers": 2,
                                      "shared_layers": True}])
    group = groups["enc"]
    assert group.num_layers == 1 and group.provenance["shared_layers"].startswith("missing")
    assert all(any("sharing one layer's weights" in r for r in ckptsurgeon.rnn.refusals(group, t)) for t in ("torch", "tf1"))


@pytest.mark.parametrize("flow,name,static", [("v1", "tower_0/gradients", False), ("v2", "grads", False),
                                              ("v1", "grads", True), ("v1", "tower_0/gradients", True)])
def test_gradients_under_any_name_do_not_hide_the_cells(tmp_path, flow, name, static):
    """A tower's gradients (``tower_0/gradients/...``) or tf.gradients(..., name="grads") (TF 1.x loops take only
    names that start with "gradients"): the backward ops read the forward values under a scope of their own (found by
    the review: refused as "Tanh is not read by the step's product alone" once those ops were no longer skipped)."""
    nets = [{"scope": "enc", "kind": "lstm", "hidden": 4, "forget_bias": 0.0, "cell_clip": 0.5, "static": static}]
    x, want, groups = _saved(tmp_path, nets, train_steps=2, gradients_name=name, control_flow=flow)
    group = groups["enc"]
    assert (group.forget_bias, group.activation, group.cell_clip) == (0.0, "tanh", 0.5)
    _computes(group, x, want["enc"])


def test_into_tf1_the_output_names_the_forget_bias_it_was_written_for(tmp_path):
    """The source's cells added 0 at run time; the output is written for TF1's default 1.0, and says so (a user
    rebuilding the source's forget_bias=0.0 cell would be 0.39 off)."""
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    res = CliRunner().invoke(cli, ["extract", str(GRID / "meta_basic_lstm_fb0" / "model.ckpt"), "--to", "tf1",
                                   "-o", str(tmp_path / "model.ckpt")])
    assert res.exit_code == 0 and "written for TF1 cells with forget_bias=1 " in res.output, res.output
    assert "written for TF1 cells" not in CliRunner().invoke(cli, ["extract", str(GRID / "lstm" / "model.ckpt"), "--to", "tf1",
                                                           "-o", str(tmp_path / "b.ckpt")]).output


def test_a_tensor_map_between_groups_that_compute_otherwise_is_refused(tmp_path):
    """graft --map on tensor names between two recurrent groups: copied as they are, the source's forget_bias 0 bias
    would run in a cell that adds 1 (the review: 0.22 off under TensorFlow); mapping the scopes converts instead."""
    src, tpl = GRID / "meta_basic_lstm_fb0" / "model.ckpt", GRID / "lstm" / "model.ckpt"
    pairs = ["rnn/basic_lstm_cell/kernel=rnn/lstm_cell/kernel", "rnn/basic_lstm_cell/bias=rnn/lstm_cell/bias"]
    from ckptsurgeon.remap import PlanError

    with pytest.raises(PlanError, match=r"computes otherwise \(forget_bias 0.0 -> 1.0\)"):
        ckptsurgeon.graft(src, tpl, str(tmp_path / "a" / "model.ckpt"), map=pairs)
    (tmp_path / "b").mkdir()
    report = ckptsurgeon.graft(src, tpl, str(tmp_path / "b" / "model.ckpt"), map=["/=/"])
    assert report.checks and all(c.ok for c in report.checks)
    (tmp_path / "c").mkdir()  # groups alike: the tensors are theirs as they are
    ckptsurgeon.graft(tpl, tpl, str(tmp_path / "c" / "model.ckpt"), map=["rnn/lstm_cell/kernel=rnn/lstm_cell/kernel"])
