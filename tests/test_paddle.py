"""PaddlePaddle: files written by the real paddle.save (fixtures/paddle, recorded by make_paddle_fixtures.py, pickle
protocols 2, 3 and 4) read as paddle.load reads them, lazily and never executed; hostile pickles refused and
reported by scan."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import UnsafeCheckpointError
from ckptsurgeon.formats import detect
from ckptsurgeon.formats.paddle.pdparams import NAME_TABLE

FIXTURES = Path(__file__).parent.parent / "fixtures" / "paddle"
FILES = {"lstm.pdparams": "lstm", "lstm_p2.pdparams": "lstm", "lstm_p3.pdparams": "lstm", "adam.pdopt": "adam",
         "nested.pdparams": "nested"}


def _expected(stem: str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(FIXTURES / f"{stem}.expected.npz") as z:
        arrays = {k: z[k] for k in z.files}
    others = json.loads((FIXTURES / f"{stem}.expected.json").read_text())
    others.pop("__versions__")
    return arrays, others


@pytest.mark.parametrize("name", sorted(FILES))
def test_reads_what_paddle_load_reads(name):
    path = FIXTURES / name
    assert detect(str(path)) == "paddle"
    index = ckptsurgeon.open(path)
    arrays, others = _expected(FILES[name])
    assert [r.key for r in index.values()] == list(arrays)  # every array, in paddle's order
    for ref in index.values():
        want = arrays[ref.key]
        got = ref.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), ref.key
    assert set(index.metadata) == {NAME_TABLE} | set(others)
    assert set(index.metadata[NAME_TABLE]) == set(arrays)  # paddle's table: state-dict key -> parameter name


def test_large_arrays_are_byte_ranges_of_the_file():
    data = (FIXTURES / "lstm.pdparams").read_bytes()
    arrays, _ = _expected("lstm")
    index = ckptsurgeon.open(FIXTURES / "lstm.pdparams")
    for key in ("proj.weight", "embed.weight"):  # over 256 bytes: BINBYTES, stepped over while listing
        ref = index[key.replace(".", "/")]
        assert ref.loader is None and data[ref.offset:ref.offset + ref.nbytes] == arrays[key].tobytes()
    p2 = ckptsurgeon.open(FIXTURES / "lstm_p2.pdparams")["embed/weight"]
    assert p2.loader is not None  # protocol 2: latin-1 text, decoded when read
    assert p2.numpy().tobytes() == arrays["embed.weight"].tobytes()


def test_optimizer_state_is_marked():
    index = ckptsurgeon.open(FIXTURES / "adam.pdopt")
    assert len(index) > 0 and all(r.optimizer for r in index.values())
    assert not any(r.optimizer for r in ckptsurgeon.open(FIXTURES / "lstm.pdparams").values())
    nested = ckptsurgeon.open(FIXTURES / "nested.pdparams")  # {"model": ..., "optimizer": ..., "epoch": 3}
    assert {p: r.optimizer for p, r in nested.items()} == {
        "model/weight": False, "model/bias": False,
        "optimizer/linear_2/w_0_velocity_0": True, "optimizer/linear_2/b_0_velocity_0": True}
    assert nested.metadata[NAME_TABLE]["model.weight"] == "linear_2.w_0"  # the name paddle pickled with the tensor


def test_cli_ls_extract_and_scan_clean(tmp_path):
    runner = CliRunner()
    path = str(FIXTURES / "lstm.pdparams")
    res = runner.invoke(cli, ["ls", path])
    assert res.exit_code == 0 and "lstm/weight_ih_l0" in res.output and "(paddle)" in res.output
    out = tmp_path / "o.safetensors"
    res = runner.invoke(cli, ["extract", path, "-s", "lstm", "-o", str(out)])
    assert res.exit_code == 0, res.output
    from safetensors.numpy import load_file

    arrays, _ = _expected("lstm")
    got = load_file(str(out))
    assert got and all(v.tobytes() == arrays[k].tobytes() for k, v in got.items())
    for name in FILES:
        res = runner.invoke(cli, ["scan", str(FIXTURES / name)])
        assert res.exit_code == 0 and "clean" in res.output, res.output


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_malicious_global_is_refused_and_scanned_unsafe(tmp_path):
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"w": np.ones(3, np.float32), "x": _Evil(), NAME_TABLE: {"w": "linear_0.w_0"}},
                                  protocol=4))
    assert detect(str(path)) == "paddle"
    with pytest.raises(UnsafeCheckpointError, match="refusing global"):
        ckptsurgeon.open(path)
    res = CliRunner().invoke(cli, ["scan", str(path)])
    assert res.exit_code == 1 and "unsafe" in res.output and "system" in res.output
    hidden = tmp_path / "hidden.pdparams"  # a clean pickle with a second one after it
    hidden.write_bytes(pickle.dumps({"w": np.ones(3, np.float32), NAME_TABLE: {}}, protocol=2)
                       + pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        ckptsurgeon.open(hidden)


def test_split_big_arrays_are_reassembled(tmp_path):
    """paddle's _unpack_saved_dict layout for arrays over 1 GiB under protocols 2 and 3 (flat NAME@@.i slices and
    UnpackBigParamInfor@@), written here as io_utils.py writes it, at a small size."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5
    flat = w.reshape(-1)
    state = {"w@@.0": flat[:5], "w@@.1": flat[5:], "b": np.ones(2, np.float32),
             "UnpackBigParamInfor@@": {"w": {"OriginShape": (3, 4), "slices": ["w@@.0", "w@@.1"]}},
             NAME_TABLE: {"w": "linear_0.w_0", "b": "linear_0.b_0"}}
    path = tmp_path / "split.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=2))
    index = ckptsurgeon.open(path)
    assert sorted(index) == ["b", "w"]
    assert np.array_equal(index["w"].numpy(), w)


@pytest.mark.parametrize("field", ["torch.float32", "torch.FloatStorage"])
def test_an_array_record_whose_dtype_is_a_torch_class_is_refused(tmp_path, field):
    """An array record's dtype must be a ``numpy.dtype``: a torch dtype or storage class there (which the common
    allowlist admits elsewhere) is refused, whatever the stand-in for it carries."""
    torch = pytest.importorskip("torch")
    value = torch.float32 if field == "torch.float32" else torch.FloatStorage

    class Record:
        def __reduce__(self):
            return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                    (1, (2,), value, False, b"\x00\x00\x80\x3f\x00\x00\x00\x40"))

    path = tmp_path / "odd.pdparams"
    path.write_bytes(pickle.dumps({"w": Record(), NAME_TABLE: {"w": "linear_0.w_0"}}, protocol=2))
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="not \\(version, shape, dtype, order, bytes\\)"):
        ckptsurgeon.open(path)


def test_listing_reads_no_array_bytes(tmp_path, monkeypatch):
    big = np.zeros((1024, 1024), np.float32)
    path = tmp_path / "big.pdparams"
    path.write_bytes(pickle.dumps({"big": big, "small": np.arange(3, dtype=np.float32),
                                   NAME_TABLE: {"big": "linear_0.w_0", "small": "linear_0.b_0"}}, protocol=4))
    from ckptsurgeon import source

    read = []
    real_read, real_readinto = source.LocalFile.read, source.SourceWindow.readinto

    def count_read(self, offset, size):
        read.append(size)
        return real_read(self, offset, size)

    def count_readinto(self, buf):
        n = real_readinto(self, buf)
        read.append(n)
        return n

    monkeypatch.setattr(source.LocalFile, "read", count_read)
    monkeypatch.setattr(source.SourceWindow, "readinto", count_readinto)
    index = ckptsurgeon.open(path)
    assert index["big"].shape == (1024, 1024) and index["big"].loader is None
    assert sum(read) < 256 << 10 < big.nbytes  # the header, the skeleton's buffers and the sniffed tail: no more


def test_paddle_lstm_and_gru_weights_run_as_pytorch_layouts():
    """What `rnn` says of these files (PyTorch layouts: gates i f g o and r z n, two biases, reset-after) holds:
    the weights as read here, in torch's LSTM and GRU, give paddle's own recorded forward pass."""
    torch = pytest.importorskip("torch")
    index = ckptsurgeon.open(FIXTURES / "lstm.pdparams")
    fwd = np.load(FIXTURES / "lstm.forward.npz")
    lstm = torch.nn.LSTM(3, 2, num_layers=2, bidirectional=True, batch_first=True)
    gru = torch.nn.GRU(4, 2, batch_first=True)
    for module, scope in ((lstm, "lstm"), (gru, "gru")):
        names = dict(module.named_parameters())
        state = {n: torch.tensor(index[f"{scope}/{n}"].numpy()) for n in names}
        module.load_state_dict(state)
    with torch.no_grad():
        lstm_out, _ = lstm(torch.from_numpy(fwd["x"]))
        gru_out, _ = gru(torch.from_numpy(fwd["lstm"]))
    np.testing.assert_allclose(lstm_out.numpy(), fwd["lstm"], atol=1e-5)
    np.testing.assert_allclose(gru_out.numpy(), fwd["gru"], atol=1e-5)


@pytest.mark.parametrize("name", ["lstm.pdparams", "lstm_p2.pdparams", "lstm_p3.pdparams"])
def test_rnn_lists_paddle_lstm_once_its_cell_names_as_aliases(name):
    """paddle's nn.LSTM/GRU state dict names each parameter twice (``lstm.weight_ih_l0``, ``lstm.0.cell_fw.weight_ih``:
    one parameter in the file's name table); `rnn` reports the layer once and counts the cell names as its own."""
    from ckptsurgeon.rnn.recognize import recognize

    index = ckptsurgeon.open(FIXTURES / name)
    table = index.metadata[NAME_TABLE]
    aliases = index.aliases()
    assert aliases["lstm/weight_ih_l0"] == ["lstm/0/cell_fw/weight_ih"]
    assert aliases["gru/bias_hh_l0"] == ["gru/0/cell/bias_hh"]
    for first, others in aliases.items():  # exactly what paddle's own table says is one parameter
        assert {table[index[p].key] for p in [first, *others]} == {table[index[first].key]}
    groups = {g.scope: g for g in recognize(index)}
    assert sorted(groups) == ["gru", "lstm"]
    assert sorted(groups["lstm"].members) == sorted(p for p in index if p.startswith("lstm/"))
    assert sorted(groups["gru"].members) == sorted(p for p in index if p.startswith("gru/"))


def test_paddle_lstm_to_torch_computes_paddle_recorded_forward(tmp_path):
    torch = pytest.importorskip("torch")
    out = tmp_path / "rnn.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / "lstm.pdparams"), "-s", "lstm/**", "-s", "gru/**",
                                   "--to", "torch", "-o", str(out)])
    assert res.exit_code == 0, res.output
    converted = ckptsurgeon.open(out)
    assert not [p for p in converted if "/cell" in p]  # the cell aliases are the layer's tensors, written once
    fwd = np.load(FIXTURES / "lstm.forward.npz")
    lstm = torch.nn.LSTM(3, 2, num_layers=2, bidirectional=True, batch_first=True)
    gru = torch.nn.GRU(4, 2, batch_first=True)
    for module, scope in ((lstm, "lstm"), (gru, "gru")):
        state = {p[len(scope) + 1:]: torch.from_numpy(converted[p].numpy()) for p in converted if p.startswith(scope + "/")}
        module.load_state_dict(state, strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(lstm(torch.from_numpy(fwd["x"]))[0].numpy(), fwd["lstm"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(gru(torch.from_numpy(fwd["lstm"]))[0].numpy(), fwd["gru"], atol=1e-5, rtol=0)


def test_copies_of_one_parameter_that_differ_are_refused(tmp_path):
    from ckptsurgeon.errors import FormatError

    arrays, _ = _expected("lstm")
    data = bytearray((FIXTURES / "lstm.pdparams").read_bytes())
    value = arrays["lstm.0.cell_fw.weight_ih"].tobytes()
    first = data.find(value)
    second = data.find(value, first + 1)
    assert first >= 0 and second > first  # both copies sit in the pickle
    data[second] ^= 0x40
    path = tmp_path / "edited.pdparams"
    path.write_bytes(bytes(data))
    index = ckptsurgeon.open(path)
    assert index["lstm/weight_hh_l0"].numpy().tobytes() == arrays["lstm.weight_hh_l0"].tobytes()
    for p in ("lstm/weight_ih_l0", "lstm/0/cell_fw/weight_ih"):
        with pytest.raises(FormatError, match="hold different values"):
            index[p].numpy()
