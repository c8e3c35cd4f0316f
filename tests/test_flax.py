"""Flax msgpack: files written by the real flax (fixtures/flax, recorded by make_flax_fixtures.py) read exactly
as flax's own msgpack_restore reads them, lazily, with every leaf accounted for; damaged files refused."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import FormatError, UnsafeCheckpointError
from ckptsurgeon.formats import detect

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flax"
CASES = ("lstm", "trainstate", "misc", "rnn_linen", "rnn_nnx")


def _expected(name: str) -> tuple[dict[str, np.ndarray], dict]:
    arrays = {}
    with np.load(FIXTURES / f"{name}.expected.npz") as z:
        for key in z.files:
            if key.endswith("@bfloat16"):
                import ml_dtypes

                arrays[key[: -len("@bfloat16")]] = z[key].view(ml_dtypes.bfloat16)
            else:
                arrays[key] = z[key]
    others = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    others.pop("__versions__")
    return arrays, others


@pytest.mark.parametrize("name", CASES)
def test_reads_every_leaf_as_flax_restores_it(name):
    path = FIXTURES / f"{name}.msgpack"
    assert detect(str(path)) == "flax"
    index = ckptsurgeon.open(path)
    arrays, others = _expected(name)
    assert sorted(index) == sorted(arrays)  # every array flax restores, and nothing else
    for p, want in arrays.items():
        got = index[p].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, p
        assert got.tobytes() == want.tobytes(), p
    for p, want in others.items():  # every other leaf is metadata, as flax restores it
        if isinstance(want, dict) and "numpy_scalar" in want:
            want = want["value"]
        assert index.metadata[p] == want, p
    assert set(index.metadata) == set(others)


def test_lstm_scopes_and_byte_ranges():
    path = FIXTURES / "lstm.msgpack"
    index = ckptsurgeon.open(path)
    gates = sorted(p.rsplit("/", 2)[1] for p in index.select("params/LSTMCell_0"))
    assert gates == sorted(["hf", "hf", "hg", "hg", "hi", "hi", "ho", "ho", "if", "ig", "ii", "io"])
    ref = index["params/LSTMCell_0/ii/kernel"]
    assert ref.in_place and ref.loader is None  # one byte range of the file, read only when asked
    data = path.read_bytes()
    assert data[ref.offset:ref.offset + ref.nbytes] == _expected("lstm")[0]["params/LSTMCell_0/ii/kernel"].tobytes()


def test_trainstate_marks_optimizer_state():
    index = ckptsurgeon.open(FIXTURES / "trainstate.msgpack")
    assert all(r.optimizer == p.startswith("opt_state/") for p, r in index.items())
    assert index["opt_state/0/count"].shape == () and index["opt_state/0/count"].numpy() == 1
    assert index.metadata["step"] == 1
    assert len(index.select(include_optimizer=False)) == 24


def test_chunked_array_is_reassembled():
    index = ckptsurgeon.open(FIXTURES / "misc.msgpack")
    big = index["big"]
    assert big.shape == (5, 8) and big.loader is not None  # flax split it into chunks (MAX_CHUNK_SIZE lowered)
    assert big.numpy().tobytes() == _expected("misc")[0]["big"].tobytes()


def test_cli_ls_tree_extract_scan(tmp_path):
    path = str(FIXTURES / "lstm.msgpack")
    runner = CliRunner()
    res = runner.invoke(cli, ["ls", path])
    assert res.exit_code == 0 and "params/LSTMCell_0/ii/kernel" in res.output and "(flax)" in res.output
    assert runner.invoke(cli, ["tree", path]).exit_code == 0
    out = tmp_path / "lstm.safetensors"
    res = runner.invoke(cli, ["extract", path, "-s", "params/LSTMCell_0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    from safetensors.numpy import load_file

    got = load_file(str(out))
    want = _expected("lstm")[0]
    assert len(got) == 12
    for key, arr in got.items():
        assert arr.tobytes() == want[key.replace(".", "/")].tobytes()
    res = runner.invoke(cli, ["scan", path])
    assert res.exit_code == 0 and "clean" in res.output


def _ext_array(arr: np.ndarray, dtype_name: str | None = None) -> bytes:
    """flax's ``_ndarray_to_bytes`` layout, written by hand: [shape, dtype name, bytes] in an ext type 1."""
    shape = bytes([0x90 | arr.ndim]) + b"".join(b"\xce" + struct.pack(">I", d) for d in arr.shape)
    name = (dtype_name or arr.dtype.name).encode()
    payload = b"\x93" + shape + bytes([0xA0 | len(name)]) + name + b"\xc6" + struct.pack(">I", arr.nbytes) + arr.tobytes()
    return b"\xc9" + struct.pack(">Ib", len(payload), 1) + payload


def test_listing_reads_no_array_bytes(tmp_path, monkeypatch):
    a, b = np.zeros((512, 1024), np.float32), np.arange(6, dtype=np.float32)
    path = tmp_path / "big.msgpack"
    path.write_bytes(b"\x82\xa1a" + _ext_array(a) + b"\xa1b" + _ext_array(b))
    from ckptsurgeon import source

    read = []
    real = source.SourceWindow.readinto

    def readinto(self, buf):
        n = real(self, buf)
        read.append(n)
        return n

    monkeypatch.setattr(source.SourceWindow, "readinto", readinto)
    index = ckptsurgeon.open(path)
    assert sum(read) < 64 << 10 < a.nbytes  # structure only: the 2 MiB array is stepped over
    assert index["a"].shape == (512, 1024) and index["b"].numpy().tolist() == list(range(6))


def _packed(value) -> bytes:
    """msgpack of small maps, strings, ints, booleans and ready-made ext bytes (no msgpack in this venv)."""
    if isinstance(value, bytes):
        return value
    if value is True:
        return b"\xc3"
    if isinstance(value, int):
        return b"\xcd" + struct.pack(">H", value)
    if isinstance(value, str):
        return bytes([0xA0 | len(value)]) + value.encode()
    return bytes([0x80 | len(value)]) + b"".join(_packed(k) + _packed(v) for k, v in value.items())


def test_chunks_that_spell_one_dtype_two_ways_are_one_array(tmp_path):
    """numpy names float32 "single" too: a chunked array whose chunks spell it both ways reads as one float32 array
    (flax writes ``dtype.name``; a hand-made file may not)."""
    a = np.arange(6, dtype=np.float32)
    chunks = {"0": _ext_array(a[:3], "float32"), "1": _ext_array(a[3:], "single")}
    tree = {"w": {"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 3}, "chunks": chunks}}
    path = tmp_path / "mixed.msgpack"
    path.write_bytes(_packed(tree))
    ref = ckptsurgeon.open(path)["w"]
    assert (ref.shape, ref.dtype_name) == ((2, 3), "float32") and ref.numpy().tolist() == a.reshape(2, 3).tolist()


def test_damaged_files_are_refused(tmp_path):
    good = (FIXTURES / "lstm.msgpack").read_bytes()
    cases = {
        "truncated": (good[:-5], FormatError),
        "trailing": (good + b"\x00", FormatError),
        "huge_map": (b"\x81\xa1a\xdf\xff\xff\xff\xff", FormatError),
        "deep": (b"\x81\xa1a" + b"\x81\xa1a" * 300 + b"\x01", UnsafeCheckpointError),
        "object_dtype": (b"\x81\xa1a" + _ext_array(np.zeros(2, np.float32)).replace(b"\xa7float32", b"\xa7object_"),
                         (FormatError, UnsafeCheckpointError)),
        "size_mismatch": (b"\x81\xa1a" + _ext_array(np.zeros(2, np.float32)).replace(b"\x91\xce\x00\x00\x00\x02", b"\x91\xce\x00\x00\x00\x03", 1),
                          FormatError),
    }
    for name, (data, error) in cases.items():
        p = tmp_path / f"{name}.msgpack"
        p.write_bytes(data)
        with pytest.raises(error):
            ckptsurgeon.open(p)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_weights_as_read_give_flax_own_forward_pass():
    """Flax's linen LSTMCell and GRUCell formulas (per-gate Dense kernels (in, out): ii if ig io without bias,
    hi hf hg ho with; GRU ir iz in with bias, hr hz without, hn with, n = tanh(in + r * hn)) on the weights as
    read here reproduce flax's own recorded outputs: the layout facts a recognizer of these files would use."""
    index = ckptsurgeon.open(FIXTURES / "lstm.msgpack")
    fwd = np.load(FIXTURES / "lstm.forward.npz")
    w = {p: index[p].numpy().astype(np.float64) for p in index}

    def dense(scope, gate, v):
        out = v @ w[f"params/{scope}/{gate}/kernel"]
        return out + w[f"params/{scope}/{gate}/bias"] if f"params/{scope}/{gate}/bias" in w else out

    x = fwd["x"].astype(np.float64)
    h = c = np.zeros((x.shape[0], 2))
    lstm = []
    for t in range(x.shape[1]):
        xt, cell = x[:, t], "LSTMCell_0"
        i = _sigmoid(dense(cell, "ii", xt) + dense(cell, "hi", h))
        f = _sigmoid(dense(cell, "if", xt) + dense(cell, "hf", h))
        g = np.tanh(dense(cell, "ig", xt) + dense(cell, "hg", h))
        o = _sigmoid(dense(cell, "io", xt) + dense(cell, "ho", h))
        c = f * c + i * g
        h = o * np.tanh(c)
        lstm.append(h)
    lstm_out = np.stack(lstm, 1)
    np.testing.assert_allclose(lstm_out, fwd["lstm"], atol=1e-5)
    h = np.zeros((x.shape[0], 2))
    gru = []
    for t in range(x.shape[1]):
        xt, cell = fwd["lstm"][:, t].astype(np.float64), "GRUCell_0"
        r = _sigmoid(dense(cell, "ir", xt) + dense(cell, "hr", h))
        z = _sigmoid(dense(cell, "iz", xt) + dense(cell, "hz", h))
        n = np.tanh(dense(cell, "in", xt) + r * dense(cell, "hn", h))
        h = (1 - z) * n + z * h
        gru.append(h)
    np.testing.assert_allclose(np.stack(gru, 1), fwd["gru"], atol=1e-5)
