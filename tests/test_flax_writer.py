"""``extract --to flax`` and the ``.msgpack`` writer, against the real flax.

What flax did with our files is recorded by fixtures/flax/make_flax_writer_fixtures.py (flax 0.12.8, jax 0.10.2):
``from_bytes`` into a real linen ``nn.RNN(LSTMCell|GRUCell)`` / ``Bidirectional`` model, its forward pass, and
flax re-encoding our bytes identically. These tests check that we still write exactly those tensors, that flax's
recorded outputs equal the source framework's own (PyTorch run here, Keras and TF1 recorded by their fixture
scripts), that flax's recorded reading of a file of many dtypes equals what we wrote, and, when a flax venv exists
(.fwvenv, scripts/fwenv.sh; a failure in CI if missing), run flax live on what we write now.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats import writer_for
from ckptsurgeon.formats.flax import writer as flax_writer
from fwenv import fw_python

ROOT = Path(__file__).parent.parent
HERE = ROOT / "fixtures" / "flax"
RECORDED = HERE / "writer"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_flax_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cases = _load("writer_cases")
maker = _load("make_flax_writer_fixtures")
CASES, REFUSED = cases.CASES, cases.REFUSED


def _arrays(path: Path) -> dict[str, np.ndarray]:
    index = ckptsurgeon.open(str(path))
    return {p: index[p].numpy() for p in index}


def _write(tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.msgpack"
    maker.extract(CASES[name], str(out))
    return out


def _source(name: str) -> tuple[np.ndarray, np.ndarray]:
    if CASES[name]["reference"][0] == "torch":
        pytest.importorskip("torch")
    return maker.source_output(CASES[name])


@pytest.mark.parametrize("name", CASES)
def test_we_still_write_what_flax_loaded(tmp_path, name):
    """The recorded flax run is evidence about today's writer only if today's output holds the same tensors, in
    the same order, with the same self-description."""
    now, then = _arrays(_write(tmp_path, name)), _arrays(RECORDED / f"{name}.msgpack")
    assert list(now) == list(then)
    for path in now:
        assert now[path].dtype == then[path].dtype and np.array_equal(now[path], then[path]), path
    meta_now = ckptsurgeon.open(str(tmp_path / f"{name}.msgpack")).metadata["__metadata__"]
    meta_then = ckptsurgeon.open(str(RECORDED / f"{name}.msgpack")).metadata["__metadata__"]
    rnn = {k: v for k, v in meta_now.items() if k.startswith("rnn:")}
    assert rnn and rnn == {k: v for k, v in meta_then.items() if k.startswith("rnn:")}
    assert meta_now["converted_to"] == "flax"


@pytest.mark.parametrize("name", CASES)
def test_flax_computed_what_the_source_framework_computed(name):
    x, y_source = _source(name)
    with np.load(RECORDED / f"{name}.flax.npz") as z:
        assert np.array_equal(z["x"], x)  # the input flax ran on is the source's
        assert z["y"].shape == y_source.shape
        assert float(np.abs(z["y"] - y_source).max()) <= 1e-5
        assert int(z["roundtrip"]) == 1  # flax's msgpack_serialize gives our bytes back


def test_the_comparisons_can_fail(tmp_path, monkeypatch):
    """Directions swapped differ beyond the tolerance; a writer with two gates swapped fails the read-back check
    (so nothing is written) and would differ from the recorded tensors."""
    x, y = _source("keras_bilstm")
    with np.load(RECORDED / "keras_bilstm.flax.npz") as z:
        assert float(np.abs(z["y"] - np.concatenate([y[..., 4:], y[..., :4]], -1)).max()) > 1e-2
    from ckptsurgeon.rnn import flax_layout

    right = flax_layout._cell_params

    def swapped(cell):
        out = right(cell)
        out["ii/kernel"], out["if/kernel"] = out["if/kernel"], out["ii/kernel"]
        return out

    monkeypatch.setattr(flax_layout, "_cell_params", swapped)
    with pytest.raises(ckptsurgeon.CheckpointError, match="verif|differ"):
        _write(tmp_path, "keras_bilstm")
    assert not (tmp_path / "keras_bilstm.msgpack").exists()


@pytest.mark.parametrize("name", ["torch_bilstm2", "torch_gru", "keras_stacked_bi", "tf1_basic_lstm", "tf1_handbuilt"])
def test_live_flax_loads_and_runs_what_we_write(tmp_path, name):
    out = _write(tmp_path, name)
    x, y_source = _source(name)
    res = maker.flax_forward(CASES[name], str(out), x, fw_python("flax"))
    assert float(np.abs(res["y"] - y_source).max()) <= 1e-5
    assert int(res["roundtrip"]) == 1


@pytest.mark.parametrize("name", REFUSED)
def test_what_flax_cannot_compute_is_refused_with_the_reason(tmp_path, name):
    source, scope, words = REFUSED[name]
    out = tmp_path / "out.msgpack"
    args = ["extract", str(ROOT / source), "--to", "flax", "-o", str(out)] + [a for s in scope for a in ("-s", s)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    assert "to flax exactly" in res.output
    for word in words:
        assert word in res.output, res.output
    assert not out.exists()


def test_forget_bias_not_declared_is_stated_and_changes_the_result(tmp_path):
    """A TF1 cell's forget_bias is not in the checkpoint: the default is used and said so."""
    res = CliRunner().invoke(cli, ["extract", str(ROOT / CASES["tf1_basic_lstm"]["source"]), "--to", "flax",
                                   "-o", str(tmp_path / "o.msgpack")])
    assert res.exit_code == 0, res.output
    assert "forget_bias=1.0 are version defaults" in res.output
    declared = _arrays(RECORDED / "tf1_basic_lstm.msgpack")  # written with forget_bias 0.3 declared
    assert np.allclose(_arrays(tmp_path / "o.msgpack")["cell/hf/bias"] - declared["cell/hf/bias"], 0.7)


# --- the writer itself -------------------------------------------------------------------------------------------


def test_dtypes_file_is_byte_for_byte_what_flax_read(tmp_path, monkeypatch):
    monkeypatch.setattr(flax_writer, "MAX_CHUNK_SIZE", maker.CHUNK)
    out = tmp_path / "d.msgpack"
    with open(out, "wb") as fh:
        flax_writer.write(maker.dtype_tensors(), fh, {})
    assert out.read_bytes() == (RECORDED / "dtypes.msgpack").read_bytes()
    with np.load(RECORDED / "dtypes.flax.npz") as z:
        assert int(z["roundtrip"]) == 1
        got = {k: z[k] for k in z if k != "roundtrip"}
    want = maker.dtype_tensors()
    assert {k.removesuffix("@bfloat16") for k in got} == set(want)
    for key, arr in want.items():
        seen = got.get(key, got.get(f"{key}@bfloat16"))
        if arr.dtype == ml_dtypes.bfloat16:
            assert np.array_equal(seen, arr.view(np.uint16))
        else:
            assert seen.dtype == arr.dtype.newbyteorder("=") and seen.shape == arr.shape
            assert np.array_equal(seen, arr)


def test_our_reader_reads_our_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(flax_writer, "MAX_CHUNK_SIZE", maker.CHUNK)
    want = maker.dtype_tensors()
    path = tmp_path / "d.msgpack"
    ckptsurgeon.save(want, path, metadata={"note": "hi"})
    index = ckptsurgeon.open(str(path))
    assert index.format == "flax" and index.metadata["__metadata__"] == {"note": "hi"}
    assert list(index) == list(want)
    for key, arr in want.items():
        assert np.array_equal(index[key].numpy(), arr)


def test_live_flax_restores_every_dtype(tmp_path, monkeypatch):
    monkeypatch.setattr(flax_writer, "MAX_CHUNK_SIZE", maker.CHUNK)
    path = tmp_path / "d.msgpack"
    maker.write_dtypes(str(path))
    res = maker.run_flax({"restore": True, "file": str(path), "chunk": maker.CHUNK}, fw_python("flax"))
    assert int(res["roundtrip"]) == 1
    assert np.array_equal(res["chunked/big"], maker.dtype_tensors()["chunked/big"])


@pytest.mark.parametrize("tensors,metadata,words", [
    ({"a": np.ones(1), "a/b": np.ones(1)}, {}, "a tensor and a scope"),
    ({"a/b": np.ones(1), "a": np.ones(1)}, {}, "a tensor and a scope"),
    ({"a//b": np.ones(1)}, {}, "empty scope name"),
    ({"/a": np.ones(1)}, {}, "empty scope name"),
    ({"x/__msgpack_chunked_array__": np.ones(1)}, {}, "chunked"),
    ({"__metadata__/x": np.ones(1)}, {"k": "v"}, "reserved"),
    ({"s": np.array(["text"])}, {}, "not one"),
    ({"o": np.array([object()])}, {}, "not one"),
])
def test_writer_refuses_what_flax_would_read_otherwise(tmp_path, tensors, metadata, words):
    path = tmp_path / "bad.msgpack"
    with pytest.raises(OutputError, match=words):
        ckptsurgeon.save(tensors, path, metadata=metadata)
    assert not path.exists()  # atomic: nothing left behind


def test_msgpack_suffix_picks_the_flax_writer():
    assert writer_for("out.msgpack", None).name == "flax"


def test_encodings_follow_msgpack_size_classes():
    """Lengths at each boundary take the form msgpack-python's Packer picks (recorded files cover the small ones)."""
    enc = flax_writer
    assert enc._str("a" * 31)[:1] == b"\xbf" and enc._str("a" * 32)[:2] == b"\xd9\x20"
    assert enc._str("a" * 256)[:3] == b"\xda\x01\x00"
    assert enc._map(15) == b"\x8f" and enc._map(16) == b"\xde\x00\x10" and enc._map(1 << 16)[:1] == b"\xdf"
    assert enc._bin(255) == b"\xc4\xff" and enc._bin(256) == b"\xc5\x01\x00" and enc._bin(1 << 16)[:1] == b"\xc6"
    assert enc._int(127) == b"\x7f" and enc._int(128) == b"\xcc\x80" and enc._int(1 << 16) == b"\xce\x00\x01\x00\x00"
    assert enc._ext(1, 16) == b"\xd8\x01" and enc._ext(1, 17) == b"\xc7\x11\x01" and enc._ext(1, 300)[:1] == b"\xc8"


_GRAFT_CHECK = """
import sys
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from flax import serialization

class RnnLinen(nn.Module):  # fixtures/flax/make_flax_fixtures.py's model, which wrote the template
    def setup(self):
        self.bilstm = nn.Bidirectional(nn.RNN(nn.LSTMCell(3)), nn.RNN(nn.LSTMCell(3)))
        self.gru = nn.RNN(nn.GRUCell(3))
        self.olstm = nn.RNN(nn.OptimizedLSTMCell(3))
        self.bigru = nn.Bidirectional(nn.RNN(nn.GRUCell(3)), nn.RNN(nn.GRUCell(3)))

    def __call__(self, x):
        return {"bilstm": self.bilstm(x), "gru": self.gru(x), "olstm": self.olstm(x), "bigru": self.bigru(x)}

out, xs, res = sys.argv[1:4]
x = jnp.asarray(np.load(xs))
model = RnnLinen()
variables = {"params": model.init(jax.random.PRNGKey(0), x)["params"]}
variables = serialization.from_bytes(variables, open(out, "rb").read())
y = model.apply(variables, x)
np.savez(res, **{k: np.asarray(v) for k, v in y.items()})
"""


def test_graft_into_a_real_flax_template_computes_what_torch_computed(tmp_path):
    """graft a torch model's nn.LSTM(bidirectional) and nn.GRU into a msgpack real flax wrote (fixtures/flax/
    rnn_linen.msgpack, 4 recurrent modules): flax loads the copy with from_bytes and computes torch's outputs; the
    two modules not grafted keep their bytes."""
    torch = pytest.importorskip("torch")
    import subprocess

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.bilstm = torch.nn.LSTM(2, 3, bidirectional=True, batch_first=True)
    model.gru = torch.nn.GRU(2, 3, batch_first=True)
    torch.save(model.state_dict(), tmp_path / "src.pt")
    x = torch.randn(2, 5, 2)
    np.save(tmp_path / "x.npy", x.numpy())
    template = HERE / "rnn_linen.msgpack"
    res = CliRunner().invoke(cli, ["graft", str(tmp_path / "src.pt"), "--into", str(template),
                                   "-o", str(tmp_path / "out.msgpack")])
    assert res.exit_code == 0 and "34 replaced, 32 template tensors untouched" in res.output, res.output
    before, after = _arrays(template), _arrays(tmp_path / "out.msgpack")
    assert all(np.array_equal(before[k], after[k]) for k in before if k.startswith(("params/olstm", "params/bigru")))
    proc = subprocess.run([fw_python("flax"), "-c", _GRAFT_CHECK, str(tmp_path / "out.msgpack"), str(tmp_path / "x.npy"),
                           str(tmp_path / "y.npz")], capture_output=True, text=True, check=False,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "y.npz") as y, torch.no_grad():
        assert float(np.abs(y["bilstm"] - model.bilstm(x)[0].numpy()).max()) <= 1e-5
        assert float(np.abs(y["gru"] - model.gru(x)[0].numpy()).max()) <= 1e-5


@pytest.mark.parametrize("case, note", [
    ("lstm_relu", "build the linen cells with gate_fn computing"),
    ("lstm_go_backwards", "build the nn.RNN with reverse=True, keep_order=False"),
    ("bi_lstm_sum", "build the nn.Bidirectional with merge_fn computing the sum"),
])
def test_what_params_cannot_state_is_said_in_a_note(tmp_path, case, note):
    """flax computes these (gate_fn/activation_fn, reverse+keep_order, merge_fn) but stores none of them in params:
    converted, with the way to build the model in a note (tests/conformance runs each in real flax)."""
    src = ROOT / "fixtures" / "keras" / "tfkeras_grid" / case / "model.h5"
    res = CliRunner().invoke(cli, ["extract", str(src), "--to", "flax", "-o", str(tmp_path / "o.msgpack")])
    assert res.exit_code == 0 and note in res.output, res.output
