"""The recurrent conversion conformance suite (see cf_check's docstring for what each case checks).

CI runs a fixed, derandomized number of hypothesis examples per source kind plus every TF-made fixture;
``CONFORMANCE_EXAMPLES=5000 bash scripts/test.sh tests/conformance`` runs a campaign. A failing example
prints its ``Config(...)``, which rebuilds it; fixed regressions are pinned below with ``@example``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
pytest.importorskip("keras")
pytest.importorskip("onnxruntime")

from hypothesis import example, given  # noqa: E402

from cf_check import Mismatch, check_source  # noqa: E402
from cf_fw import live_targets  # noqa: E402
from cf_sources import (build, new_format_sources, tf1_grid_cases, tf1_grid_source, tfkeras_grid_cases,  # noqa: E402
                        tfkeras_source)
from cf_space import TARGETS, Config, cell_configs, keras_configs, suite_settings, torch_configs  # noqa: E402
from cf_tf1_targets import CASES as TF1_CASES  # noqa: E402
from cf_tf1_targets import FOLDER as TF1_FOLDER  # noqa: E402
from cf_tf1_targets import convert_case  # noqa: E402
from matrix import README, ROWS, readme_table, table  # noqa: E402

K = dict(source="keras", file="keras", input_size=3, hidden=4)
# Defects the suite found, each pinned where it was found (the campaign's Config, shrunk by hypothesis).
REGRESSIONS: dict[str, list[Config]] = {
    "torch": [],
    "torch-cell": [],
    "keras": [
        # nn.LSTM/GRU compute sigmoid gates and tanh: a layer with the two swapped (both names in the allowed set)
        # converted to torch silently; now refused, and --to tf1 keeps any activation= (TF1 cells take one).
        Config(kind="lstm", activation="sigmoid", recurrent_activation="tanh", **K),
        Config(kind="lstm", activation="relu", bias=False, input_size=1, hidden=1, source="keras", file="keras"),
        # Keras 3's legacy .h5 keeps an explicit backward_layer under its own name (bi0/lstm, not backward_...):
        # it was read as a separate forward layer whose go_backwards the file "did not set" (False): a silent
        # wrong result once its activations were declared. Now the config names the halves.
        Config(source="keras", kind="lstm", bidirectional=True, bias=False, input_size=1, hidden=1, backward="explicit",
               file="h5"),
        Config(source="keras", kind="gru", bidirectional=True, reset_after=False, input_size=3, hidden=2,
               backward="explicit_relu", merge_mode="sum", file="h5"),
        # user layer names that look like structure: a gates output of a group named layer_0 was read as layer 0 of
        # the root, a tf1 output of a Bidirectional named cell_0 as stack_bidirectional_dynamic_rnn's layer 0
        Config(source="keras", kind="lstm", bias=False, input_size=1, hidden=1, file="keras", names="layer_k"),
        Config(source="keras", kind="lstm", bidirectional=True, bias=False, input_size=1, hidden=1, file="keras",
               declare_family=False, via="cli", names="cell_k"),
        Config(source="keras", kind="gru", layers=2, input_size=3, hidden=2, file="h5", nest="functional",
               names="forward_lstm"),
    ],
}


def _pinned(kind: str):
    """Every regression and every matrix row of this source kind, as explicit examples (they run in CI too)."""
    rows = [how for _, _, how in ROWS if isinstance(how, Config) and how.source == kind]

    def deco(f):
        for cfg in rows + REGRESSIONS[kind]:
            f = example(cfg=cfg)(f)
        return f

    return deco


def _targets() -> tuple[str, ...]:
    """Every target; CONFORMANCE_TARGETS=flax,paddle runs a campaign on some of them (flax and paddle: in .fwvenv)."""
    only = [t for t in os.environ.get("CONFORMANCE_TARGETS", "").split(",") if t]
    return live_targets(tuple(t for t in TARGETS if not only or t in only))


def _check(cfg: Config) -> None:
    """One example; CONFORMANCE_LOG=FILE appends each case's outcome (a campaign's numbers) as a JSON line."""
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        try:
            outcomes = check_source(build(cfg, Path(tmp)), _targets(), Path(tmp))
        except Mismatch as exc:
            _log({"config": str(cfg), "failure": str(exc)})
            raise AssertionError(f"{cfg}\n{exc}") from None
    for o in outcomes:
        _log({"config": str(cfg), "scope": o.scope, "target": o.target, "status": o.status, "rules": o.rules,
              "max_diff": o.max_diff})


def _log(row: dict) -> None:
    if os.environ.get("CONFORMANCE_LOG"):
        import json

        with open(os.environ["CONFORMANCE_LOG"], "a") as fh:
            fh.write(json.dumps(row) + "\n")


@suite_settings(ci_examples=12)
@_pinned("torch")
@given(cfg=torch_configs())
def test_torch_modules(cfg):
    _check(cfg)


@suite_settings(ci_examples=6)
@_pinned("torch-cell")
@given(cfg=cell_configs())
def test_torch_cells(cfg):
    _check(cfg)


@suite_settings(ci_examples=10)
@_pinned("keras")
@given(cfg=keras_configs())
def test_keras3_layers(cfg):
    _check(cfg)


@pytest.mark.parametrize("name", tf1_grid_cases())
def test_tf1_grid(tmp_path, name):
    """Every TF1 checkpoint TensorFlow wrote, into every target, against TensorFlow's recorded outputs."""
    source = tf1_grid_source(name)
    check_source(source, _targets(), tmp_path)


@pytest.mark.parametrize("name", sorted(new_format_sources()))
def test_new_format_files(tmp_path, name):
    """Files flax, paddle and the TFLite converter wrote, every group into every target, against each framework's
    own recorded forward pass (exact in the real target framework, or refused as the rule table says)."""
    check_source(new_format_sources()[name](), _targets(), tmp_path)


@pytest.mark.parametrize("file", ["model.h5", "weights.h5", "ckpt"])
@pytest.mark.parametrize("name", tfkeras_grid_cases())
def test_tfkeras_grid(tmp_path, name, file):
    """Every tf.keras 2 model, in its three files, into every target, against tf.keras's recorded outputs."""
    source = tfkeras_source(name, file)
    if not source.layers:
        pytest.skip(source.notes[0])
    check_source(source, _targets(), tmp_path)


@pytest.mark.parametrize("name", sorted(TF1_CASES))
def test_tf1_target_in_real_tensorflow(tmp_path, name):
    """The tf1 target, run by TensorFlow (recorded by make_tf1_targets.py): the same bytes, the source's outputs."""
    import json

    import numpy as np

    import ckptsurgeon
    from cf_check import ATOL, _as_source_returns, _close
    from cf_frameworks import read_output
    from ckptsurgeon.rnn import recognize, run_stack

    folder = TF1_FOLDER / name
    meta = json.loads((folder / "case.json").read_text())
    cfg = TF1_CASES[name]
    now, default = cfg.as_dict(), Config(cfg.source, cfg.kind).as_dict()
    later = {k: v for k, v in now.items() if k not in meta["config"]}  # fields added to Config since the recording
    assert meta["config"] == {k: v for k, v in now.items() if k in meta["config"]} and all(
        v == default[k] for k, v in later.items()), "the case changed since TensorFlow ran it: run make_tf1_targets.py"
    source, out, _ = convert_case(cfg, tmp_path)
    got, _ = read_output(out)
    given, _ = read_output(folder / "converted.npz")
    assert sorted(got) == sorted(given) == sorted(meta["tensorflow"]["variables"])
    for key in given:  # byte-identical to what TensorFlow loaded, so its recorded outputs are these tensors' outputs
        assert (got[key].dtype, got[key].shape, got[key].tobytes()) == (given[key].dtype, given[key].shape,
                                                                        given[key].tobytes()), key
    layer = source.layers[0]
    assert np.array_equal(layer.x, np.load(folder / "x.npy"))
    tf_out = np.load(folder / "tf_outputs.npz")["outputs"]
    err = _close(_as_source_returns(tf_out, layer, "tf1"), layer.want, ATOL)
    assert err <= ATOL, f"{cfg}: TensorFlow computes {err:.3g} away from the source framework"
    back = recognize(ckptsurgeon.open(out))[0]  # and ckptsurgeon's reading of its own tf1 output agrees with TF
    assert _close(run_stack(back.cells(), layer.x), tf_out, ATOL) <= ATOL


def test_readme_matrix_is_generated():
    """README's conversion matrix is exactly what tests/conformance/matrix.py makes (python .../matrix.py --write)."""
    assert readme_table(README.read_text()) == table()


def test_keras3_h5_explicit_backward_layer_without_config_is_refused(tmp_path):
    """Without the config, nothing tells whether bi0/lstm is the Bidirectional's backward half (it runs backwards) or a
    layer of its own: refused, never converted as a forward layer."""
    import h5py

    import ckptsurgeon
    from ckptsurgeon.rnn import recognize, refusals

    source = build(Config(source="keras", kind="lstm", bidirectional=True, backward="explicit", file="h5"), tmp_path)
    whole = recognize(ckptsurgeon.open(source.path))
    assert [(g.scope, g.directions, g.unsettled()) for g in whole] == [("bi0", 2, {})]
    with h5py.File(source.path, "r+") as f:
        del f.attrs["model_config"]
    halves = recognize(ckptsurgeon.open(source.path))
    assert len(halves) == 2 and all("bidirectional" in g.unsettled() for g in halves)
    assert all(any("may be the explicit backward layer" in r for r in refusals(g, "torch")) for g in halves)


@pytest.mark.parametrize("target", ["flax", "paddle"])
def test_the_real_framework_side_can_fail(tmp_path, target):
    """cf_fw_side.py's checks bite: the written file runs in real flax/paddle and computes the source's outputs;
    the same file with a parameter dropped (flax) or an alias out of step with its twin (paddle) is rejected there."""
    import pickle

    import numpy as np

    import ckptsurgeon
    from cf_check import ATOL, TARGET_FORMATS, _close, run_target
    from cf_fw import fw_python

    if not live_targets((target,)):
        pytest.skip(f"no framework venv for {target}")
    assert fw_python() is not None
    source = build(Config("torch", "lstm", layers=2, bidirectional=True), tmp_path)
    layer = source.layers[0]
    fmt, suffix = TARGET_FORMATS[target]
    out = tmp_path / f"out{suffix}"
    stated = ckptsurgeon.extract(source.path, out, to=target, format=fmt).converted[0]["output"]
    y, _ = run_target(target, out, "rnn", layer.x, stated)
    assert _close(y, layer.want, ATOL) <= ATOL
    bad = tmp_path / f"bad{suffix}"
    if target == "paddle":
        with open(out, "rb") as fh:
            state = pickle.load(fh)
        state["rnn.0.cell_fw.bias_hh"] = state["rnn.0.cell_fw.bias_hh"] + np.float32(0.5)
        with open(bad, "wb") as fh:
            pickle.dump(state, fh, protocol=4)
        want = "set_state_dict did not load the file's values"
    else:
        # the same msgpack without one parameter (its self-description kept), written by our own flax writer
        index = ckptsurgeon.open(out)
        kept = {p: index[p].numpy() for p in index if "/layer_1/backward_rnn/cell/hf/" not in p}
        assert len(kept) == len(index) - 2  # hf/kernel and hf/bias
        ckptsurgeon.save(kept, bad, format="flax", metadata=index.metadata.get("__metadata__") or {})
        want = "are not the model's: missing"
    with pytest.raises(AssertionError, match=want):
        run_target(target, bad, "rnn", layer.x, stated)
