"""The `.pdparams` writer and `--to paddle`: what ckptsurgeon writes, real paddle loads (`paddle.load` +
`set_state_dict`, no missing or unexpected key) and runs, computing what the source framework computed.

Recorded once by fixtures/paddle/make_paddle_writer_fixtures.py in a paddle venv (fixtures/paddle/writer: our files,
paddle's outputs on the sources' own recorded inputs); here, each recorded paddle output is compared with the
source framework's (TensorFlow's and tf.keras's recorded outputs, torch live), and today's writer is checked to
write the recorded tensors. In the framework venv (.fwvenv, scripts/fwenv.sh; a failure in CI if missing),
paddle itself loads and runs the files today's code writes.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats import writer_for
from ckptsurgeon.formats.paddle.pdparams import NAME_TABLE
from conftest import FIXTURES, ROOT
from fwenv import fw_python

WRITER = FIXTURES / "paddle" / "writer"
SCRIPT = FIXTURES / "paddle" / "make_paddle_writer_fixtures.py"
MANIFEST = json.loads((WRITER / "manifest.json").read_text())
CASES = {c["name"]: c for c in MANIFEST["cases"]}
RNN_CASES = [n for n, c in CASES.items() if c["groups"]]


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _torch_want(source: str, group: dict, x: np.ndarray) -> np.ndarray:
    """torch's own module, loaded with the source's weights (the torch file, or nn.GRU's names in numpy), on ``x``."""
    torch = pytest.importorskip("torch")
    if source.endswith(".pt"):
        state = torch.load(ROOT / source, weights_only=True)
    else:
        state = {k: torch.from_numpy(v) for k, v in _npz(ROOT / source).items()}
    cls = getattr(torch.nn, group["kind"])
    module = cls(group["input_size"], group["hidden_size"], num_layers=group["num_layers"], batch_first=True,
                 bidirectional=group["direction"] == "bidirect")
    p = group["prefix"] + "."
    module.load_state_dict({k[len(p):]: v for k, v in state.items() if k.startswith(p)}, strict=True)
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


def _want(case: dict, group: dict, x: np.ndarray) -> np.ndarray:
    """What the source framework computed for ``group`` on ``x`` (batch-first), and a check that ``x`` is its input."""
    kind, *where = group["input"]
    if kind == "random":
        assert x.shape == tuple(where[1])
        return _torch_want(case["source"], group, x)
    ref = _npz(ROOT / where[0])
    assert np.array_equal(ref[where[1]], x), (case["name"], "the recorded input is not the source's own")
    if case["name"].startswith("tf1_"):  # TF1 grid: outputs [batch, time, units], fw and bw apart or together
        meta = json.loads((ROOT / where[0]).with_name("case.json").read_text())
        outs = meta["outputs"]
        assert meta["inputs"]["x"]["layout"].startswith("[batch") and all(
            o["layout"].startswith("[batch") for k, o in outs.items() if k.startswith("outputs"))
        if "outputs" in outs:
            return ref[outs["outputs"]["npz"]]
        return np.concatenate([ref[outs["outputs/fw"]["npz"]], ref[outs["outputs/bw"]["npz"]]], -1)
    return ref[f"out/layers/{group['prefix']}"]  # tf.keras: the layer's output (a Bidirectional's concat)


def _check_case(name: str, outputs: dict[str, np.ndarray], inputs: dict[str, np.ndarray], report: dict) -> int:
    """paddle's outputs of every group of case ``name`` against the source framework's; returns groups checked."""
    case = CASES[name]
    keys = report["keys"]
    for group, row in zip(case["groups"], report["groups"]):
        assert row["prefix"] == group["prefix"] and row["missing"] == [] and row["unexpected"] == [], (name, row)
        p = f"{group['prefix']}." if group["prefix"] else ""
        assert [k[len(p):] for k in keys if k.startswith(p) and k[len(p):] in row["module_keys"]] == row["module_keys"], (
            name, "the file's keys are not the module's state_dict keys in its order")
        at = f"{name}/{group['prefix']}"
        got, want = outputs[at], _want(case, group, inputs[at])
        assert got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=name)
    return len(case["groups"])


@pytest.mark.parametrize("name", RNN_CASES)
def test_recorded_paddle_forward_is_the_source_frameworks(name):
    outputs, inputs = _npz(WRITER / "forward.npz"), _npz(WRITER / "inputs.npz")
    assert _check_case(name, outputs, inputs, CASES[name]["paddle"]) >= 1


def _write(case: dict, out: Path) -> str:
    res = CliRunner().invoke(cli, ["extract", str(ROOT / case["source"]), *case["args"], "-o", str(out)])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("name", sorted(CASES))
def test_todays_writer_writes_what_paddle_loaded(tmp_path, name):
    """The recorded files are what the current code writes: same keys in the same order, same bytes, same names."""
    case = CASES[name]
    out = tmp_path / f"{name}.pdparams"
    text = _write(case, out)
    if case["groups"]:
        assert text.count("verified") == len(case["groups"]), text
    with open(out, "rb") as fh, open(WRITER / f"{name}.pdparams", "rb") as rec:
        now, then = pickle.load(fh), pickle.load(rec)  # both are plain pickles of numpy arrays
    assert list(now) == list(then) == case["paddle"]["keys"] + [NAME_TABLE]
    for key, arr in then.items():
        if key != NAME_TABLE:
            assert now[key].dtype == arr.dtype and now[key].shape == arr.shape and now[key].tobytes() == arr.tobytes()
    assert now[NAME_TABLE] == then[NAME_TABLE]


def test_plain_tensors_are_what_paddle_load_returned():
    """Without --to: every tensor of the torch file and of a numpy file of every dtype (Fortran order, big-endian, 0-d,
    empty) comes out of paddle.load with its dtype, shape and values."""
    torch = pytest.importorskip("torch")
    outputs = _npz(WRITER / "forward.npz")
    state = torch.load(FIXTURES / "torch" / "model.pt", weights_only=True)
    got = {k.split("/@/")[1]: v for k, v in outputs.items() if k.startswith("torch_plain/@/")}
    assert list(got) == list(state)
    for key, tensor in state.items():
        assert got[key].dtype == tensor.numpy().dtype and got[key].tobytes() == tensor.numpy().tobytes(), key
    source = _npz(WRITER / "dtypes.npz")
    got = {k.split("/@/")[1]: v for k, v in outputs.items() if k.startswith("dtypes/@/")}
    assert list(got) == list(source) and len(got) == 12
    for key, arr in source.items():
        assert got[key].dtype == arr.dtype.newbyteorder("=") and got[key].shape == arr.shape, key
        assert np.array_equal(got[key], arr), key
    model = {k.split("/@/")[1]: v for k, v in outputs.items() if k.startswith("torch_model/@/")}
    assert sorted(model) == ["embed.weight", "head.bias", "head.weight"]  # passed through a conversion untouched
    assert all(model[k].tobytes() == state[k].numpy().tobytes() for k in model)


def test_live_paddle_loads_and_runs_what_todays_code_writes(tmp_path):
    python = fw_python("paddle")
    for name in ("manifest.json", "inputs.npz"):
        shutil.copy(WRITER / name, tmp_path / name)
    for name in RNN_CASES:
        _write(CASES[name], tmp_path / f"{name}.pdparams")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    proc = subprocess.run([python, str(SCRIPT), "--load", str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "paddle.json").read_text())
    outputs, inputs = _npz(tmp_path / "forward.npz"), _npz(tmp_path / "inputs.npz")
    assert sorted(report) == sorted(RNN_CASES)
    assert sum(_check_case(name, outputs, inputs, report[name]) for name in RNN_CASES) == 15


# --- refusals: what paddle.nn.LSTM/GRU cannot compute ------------------------------------------------------------

TF1 = FIXTURES / "tensorflow" / "tf1_grid"
KERAS = FIXTURES / "keras" / "tfkeras_grid"


@pytest.mark.parametrize("source,why", [
    (TF1 / "gru" / "model.ckpt", "reset-before GRU (the reset gate multiplies h before the recurrent matrix) and "
                                 "paddle.nn.GRU cells are reset-after"),
    (KERAS / "gru_reset_before" / "model.h5", "paddle.nn.GRU cells are reset-after"),
    (TF1 / "lstm_peep" / "model.ckpt", "peephole connections, which paddle LSTMs do not have"),
    (TF1 / "lstm_proj" / "model.ckpt", "paddle.nn.LSTM(proj_size=...)'s state dict names its weight_*_l<k> entries out "
                                       "of step"),
    (TF1 / "bi_multi2_lstm" / "model.ckpt", "two independent stacks"),
    (KERAS / "lstm_relu" / "model.h5", "its activations differ from what paddle computes"),
    (KERAS / "lstm_hard_sigmoid" / "model.h5", "hard_sigmoid"),
    (KERAS / "bi_lstm_sum" / "model.h5", "merge_mode='sum'"),
    (KERAS / "lstm_go_backwards" / "model.h5", "go_backwards=True"),
])
def test_what_paddle_cannot_compute_is_refused_with_the_reason(tmp_path, source, why):
    out = tmp_path / "x.pdparams"
    res = CliRunner().invoke(cli, ["extract", str(source), "--to", "paddle", "-o", str(out)])
    assert res.exit_code == 1 and why in " ".join(res.output.split()), res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_paddle_go_backwards_refusal_names_the_targets_that_can():
    """paddle.nn.RNN(cell, is_reverse=True) exists, but nn.LSTM/GRU (what this writes) has no such argument."""
    from ckptsurgeon.rnn import recognize, refusals

    group = recognize(ckptsurgeon.open(KERAS / "lstm_go_backwards" / "model.h5"))[0]
    assert refusals(group, "paddle") and not refusals(group, "keras")


# --- the file itself ---------------------------------------------------------------------------------------------

def test_suffix_and_reader_round_trip(tmp_path):
    assert writer_for("x.pdparams", None).name == "paddle"
    out = tmp_path / "o.pdparams"
    _write(CASES["torch_model"], out)
    index = ckptsurgeon.open(out)
    assert index.format == "paddle" and index.metadata[NAME_TABLE]["encoder.rnn.0.cell_bw.bias_hh"] == \
        "encoder.rnn.bias_hh_l0_reverse"
    assert index.aliases()["encoder/rnn/weight_ih_l1"] == ["encoder/rnn/1/cell_fw/weight_ih"]
    from ckptsurgeon.rnn import recognize

    groups = {g.scope: g for g in recognize(index)}
    assert sorted(groups) == ["decoder", "encoder/rnn"] and groups["encoder/rnn"].num_layers == 2
    res = CliRunner().invoke(cli, ["scan", str(out)])
    assert res.exit_code == 0 and "clean" in res.output


def test_paddle_file_extracted_again_keeps_paddles_parameter_pairs(tmp_path):
    """A paddle.save file (fixtures/paddle/lstm.pdparams) through extract: every key, its bytes, and paddle's own
    pairing of keys to parameters (its name table, up to the names themselves)."""
    src = FIXTURES / "paddle" / "lstm.pdparams"
    out = tmp_path / "again.pdparams"
    res = CliRunner().invoke(cli, ["extract", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    with open(src, "rb") as fh, open(out, "rb") as fo:
        a, b = pickle.load(fh), pickle.load(fo)
    assert list(a) == list(b)
    assert all(a[k].tobytes() == b[k].tobytes() and a[k].dtype == b[k].dtype for k in a if k != NAME_TABLE)

    def pairs(table: dict) -> set[frozenset]:
        by: dict[str, set] = {}
        for key, param in table.items():
            by.setdefault(param, set()).add(key)
        return {frozenset(v) for v in by.values()}

    assert pairs(b[NAME_TABLE]) == pairs(a[NAME_TABLE])


@pytest.mark.parametrize("arrays,match", [
    ({NAME_TABLE: np.zeros(2, np.float32)}, "reserved"),
    ({"w": np.array(["a"])}, "cast it first"),
])
def test_unwritable_tensors_are_refused(tmp_path, arrays, match):
    out = tmp_path / "x.pdparams"
    with pytest.raises(OutputError, match=match):
        ckptsurgeon.save(arrays, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bfloat16_is_refused(tmp_path):
    import ml_dtypes

    with pytest.raises(OutputError, match="bfloat16"):
        ckptsurgeon.save({"w": np.zeros(3, ml_dtypes.bfloat16)}, tmp_path / "x.pdparams")


def test_tensors_are_read_one_at_a_time(tmp_path):
    """Each array is asked for after the previous one is in the file: the pickle is streamed, one array in memory."""
    from ckptsurgeon.formats.paddle.writer import write

    arrays = {f"t{i}": np.full((100_000,), i, np.float32) for i in range(4)}
    positions: list[int] = []

    class Source(dict):
        def __getitem__(self, key):
            positions.append(fh.tell())
            return super().__getitem__(key)

    with open(tmp_path / "x.pdparams", "wb") as fh:
        write(Source(arrays), fh, {})
    assert len(positions) == 4 and all(b - a >= 400_000 for a, b in zip(positions, positions[1:])), positions
    with open(tmp_path / "x.pdparams", "rb") as fh:
        back = pickle.load(fh)
    assert list(back) == [*arrays, NAME_TABLE] and all(np.array_equal(back[k], v) for k, v in arrays.items())
