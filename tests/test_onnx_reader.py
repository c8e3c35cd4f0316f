"""The ONNX reader against onnx.load + onnx.numpy_helper.to_array, on every tensor of every model."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from onnx_models import (all_storage_model, external_model, onnx, reference_tensors, rnn_model, torch_export)

import ckptsurgeon
from ckptsurgeon.errors import FormatError, UnsafeCheckpointError
from ckptsurgeon.formats import detect


def assert_matches_onnx(path) -> ckptsurgeon.CheckpointIndex:
    index = ckptsurgeon.open(str(path))
    assert index.format == "onnx"
    ref = reference_tensors(path)
    tensors = {p: v for p, v in ref.items() if isinstance(v, np.ndarray)}
    strings = {p: v for p, v in ref.items() if not isinstance(v, np.ndarray)}
    assert set(index) == set(tensors)
    for p, want in tensors.items():
        got = index[p].numpy()
        assert got.dtype == want.dtype, (p, got.dtype, want.dtype)
        assert got.shape == want.shape, (p, got.shape, want.shape)
        assert index[p].shape == want.shape and index[p].dtype == want.dtype
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), p
    for p, want in strings.items():
        assert index.metadata[p] == want
    return index


def test_every_storage_form_matches_onnx(tmp_path):
    path = all_storage_model(tmp_path / "all.onnx")
    index = assert_matches_onnx(path)
    # the forms are all there: raw and typed of every dtype, sparse, constants, subgraphs two deep
    assert {"raw/bfloat16", "typed/bfloat16", "typed/float16", "typed/int8", "typed/bool", "raw/int4", "typed/int4",
            "raw/float4e2m1", "typed/uint2", "raw/complex128", "typed/double", "typed/uint64"} <= set(index)
    assert index["sparse/linear"].shape == (3, 4) and index["c_sparse"].shape == (3, 4)
    assert index["c_float"].shape == () and index["c_ints"].numpy().tolist() == [4, -5, 1 << 40]
    assert "fill/value" in index
    assert "Loop_9/body/b/w" in index and "Loop_9/body/inner/If/then_branch/t_w" in index
    assert index["Loop_9/body/inner/If/else_branch/e_w"].dtype == np.float64
    md = index.metadata
    assert md["producer_name"] == "ckptsurgeon-tests" and md["opset_import"] == {"ai.onnx": 21}
    assert md["metadata_props"] == {"author": "tests", "purpose": "reader"} and md["doc_string"] == "all storage forms"
    assert md["ir_version"] == onnx.load(str(path)).ir_version
    assert md["labels"] == ["yes", "no"] and md["label"] == ["one"] and md["c_string"] == "hello"
    # raw_data and packed float_data point into the file (patchable); varint-typed fields do not
    assert index["raw/float"].in_place and index["typed/float"].in_place and index["typed/double"].in_place
    assert not index["typed/int64"].in_place and not index["raw/int4"].in_place


@pytest.mark.parametrize("one_file", [True, False])
def test_external_data_matches_onnx(tmp_path, one_file):
    path = external_model(tmp_path, one_file)
    index = assert_matches_onnx(path)
    assert len(index.files) == (2 if one_file else 7)
    assert all(index[p].file != str(path) and index[p].in_place for p in index)


def test_listing_reads_no_tensor_bytes(tmp_path, monkeypatch):
    path = external_model(tmp_path, True)
    data = tmp_path / "ext.weights"
    # count every read: none may touch the external data file, none may be larger than a structure read
    from ckptsurgeon.source import LocalFile
    reads = []
    orig = LocalFile.read
    monkeypatch.setattr(LocalFile, "read", lambda self, o, n: reads.append((self.name, o, n)) or orig(self, o, n))
    index = ckptsurgeon.open(str(path))
    assert len(index) == 6 and not [r for r in reads if r[0] == str(data)]
    big = [r for r in reads if r[2] > 4096]
    assert not big


def test_large_model_lists_without_loading(tmp_path):
    """A model over 2 GB must use external data; listing touches only the structure (sparse file)."""
    onnx_path = tmp_path / "big.onnx"
    from onnx import TensorProto, helper
    t = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 30])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "big.bin"), ("offset", "0"), ("length", str(4 << 30))):
        e = t.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([], "g", [], [], [t])
    onnx.save(helper.make_model(g), str(onnx_path))
    with open(tmp_path / "big.bin", "wb") as fh:
        fh.truncate(4 << 30)  # sparse: no disk used
    code = ("import ckptsurgeon, re, sys; i = ckptsurgeon.open(sys.argv[1]); r = i['huge']; "  # VmHWM: this process's peak
            "print(r.shape, r.nbytes, 'torch' in sys.modules, re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])")
    out = subprocess.run([sys.executable, "-c", code, str(onnx_path)], capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["(1073741824,)", str(4 << 30), "False"]
    assert int(out[3]) < 200_000  # KiB of peak RSS (about 50 MB here): nothing near the 4 GiB tensor was allocated
    assert "onnx" not in subprocess.run([sys.executable, "-c", "import ckptsurgeon, sys; ckptsurgeon.open(sys.argv[1]); "
                                         "print(sorted(m for m in sys.modules if m.startswith(('onnx', 'google.protobuf'))))",
                                         str(onnx_path)], capture_output=True, text=True, check=True).stdout.replace("[]", "")


def test_torch_exports_match_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3)
    legacy = torch_export(torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), (x,), tmp_path / "lstm.onnx",
                          dynamo=False, do_constant_folding=False)
    idx = assert_matches_onnx(legacy)
    assert "weight_ih_l1_reverse" in idx and idx["weight_ih_l1_reverse"].shape == (16, 8)
    gru = torch_export(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True), (x,), tmp_path / "gru.onnx", dynamo=False)
    assert_matches_onnx(gru)
    pytest.importorskip("onnxscript")
    dyn = torch_export(torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), (x,), tmp_path / "dyn" / "lstm.onnx",
                       dynamo=True) if os.makedirs(tmp_path / "dyn") is None else None
    assert_matches_onnx(dyn)


def test_detection_by_content(tmp_path):
    path, _ = rnn_model(tmp_path / "m.bin", "LSTM")
    assert detect(str(path)) == "onnx"
    # other formats are not claimed
    for name, data in {"st": (8).to_bytes(8, "little") + b'{"a":1} ', "zeros": b"\x08\x01\x00" * 20,
                       "text": b"\x08hello world", "proto": b"\x08\x05\x12\x03abc\x9a\x01"}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError):
            ckptsurgeon.open(str(tmp_path / name))


def _tensor_with_external(tmp_path, location: str, length: int | None = None, data_size: int = 64):
    from onnx import TensorProto, helper
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[16])
    t.data_location = TensorProto.EXTERNAL
    entries = [("location", location), ("offset", "0")] + ([("length", str(length))] if length is not None else [])
    for k, v in entries:
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "sub").mkdir(exist_ok=True)
    path = tmp_path / "sub" / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph([], "g", [], [], [t])), str(path))
    return path


@pytest.mark.parametrize("location, exc, words", [
    ("../outside.bin", UnsafeCheckpointError, "leaves the model's folder"),
    ("/etc/passwd", UnsafeCheckpointError, "absolute"),
    ("link.bin", UnsafeCheckpointError, "symbolic link"),
    ("linkdir/w.bin", UnsafeCheckpointError, "symbolic link"),
    ("short.bin", FormatError, "past the end"),
    ("missing.bin", FormatError, "no such file"),
])
def test_external_data_refusals(tmp_path, location, exc, words):
    path = _tensor_with_external(tmp_path, location, 64)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    (tmp_path / "sub" / "short.bin").write_bytes(b"\0" * 60)
    os.symlink(tmp_path / "outside.bin", tmp_path / "sub" / "link.bin")
    os.symlink(tmp_path, tmp_path / "sub" / "linkdir")
    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    with pytest.raises(exc, match=words) as info:
        ckptsurgeon.open(str(path))
    assert "\n" not in str(info.value)


def test_external_length_must_match_shape(tmp_path):
    path = _tensor_with_external(tmp_path, "w.bin", 32)
    (tmp_path / "sub" / "w.bin").write_bytes(b"\0" * 64)
    with pytest.raises(FormatError, match="needs 64 bytes"):
        ckptsurgeon.open(str(path))


# ------------------------------------------------------------------ hostile files

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _model(graph: bytes) -> bytes:
    return b"\x08\x08" + _ld(7, graph) + _ld(8, _ld(1, b"") + b"\x10\x0d")


@pytest.mark.parametrize("name, graph, exc, words", [
    ("length past end", _varint(5 << 3 | 2) + _varint(1 << 40) + b"\0" * 8, FormatError, "declares"),
    ("varint overflow", _ld(5, b"\x08" + b"\xff" * 11), FormatError, "varint"),
    ("raw size lie", _ld(5, b"\x08\x10\x08\x04" + _ld(8, b"w") + b"\x10\x01" + _ld(9, b"\0" * 8)), FormatError, "needs 256 bytes, raw_data holds 8"),
    ("shape overflow", _ld(5, b"\x08" + _varint(1 << 62) + b"\x08" + _varint(1 << 62) + _ld(8, b"w") + b"\x10\x01"
                          + _ld(9, b"\0" * 4)), UnsafeCheckpointError, "overflows"),
    ("negative dim", _ld(5, b"\x08" + _varint((1 << 64) - 3) + _ld(8, b"w") + b"\x10\x01"), FormatError, "negative"),
    ("wire type 3", _ld(5, b"\x0b"), FormatError, "wire type"),
    ("no data", _ld(5, b"\x08\x04" + _ld(8, b"w") + b"\x10\x01"), FormatError, "holds no data"),
    ("segment", _ld(5, b"\x08\x01" + _ld(8, b"w") + b"\x10\x01" + _ld(3, b"\x08\x00\x10\x01") + _ld(9, b"\0" * 4)),
     FormatError, "segmented"),
    ("unknown dtype", _ld(5, b"\x08\x01" + _ld(8, b"w") + b"\x10\x63" + _ld(9, b"\0" * 4)), FormatError, "data type 99"),
])
def test_hostile_structures(tmp_path, name, graph, exc, words):
    path = tmp_path / "bad.onnx"
    path.write_bytes(_model(graph))
    with pytest.raises(exc, match=words) as info:
        ckptsurgeon.open(str(path))["w"].numpy()
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_deep_subgraph_nesting_is_refused(tmp_path):
    g = b""
    for _ in range(40):  # If(then_branch=If(then_branch=...))
        attr = _ld(1, b"then_branch") + b"\xa0\x01\x05" + _ld(6, g)
        g = _ld(1, _ld(4, b"If") + _ld(5, attr))
    path = tmp_path / "deep.onnx"
    path.write_bytes(_model(g))
    with pytest.raises(UnsafeCheckpointError, match="nested over"):
        ckptsurgeon.open(str(path))


def test_unpacked_typed_fields(tmp_path):
    """Repeated scalars written one tag per value (legal protobuf, though onnx writes them packed)."""
    vals = np.array([1.5, -2.0, 3.25], np.float32)
    floats = b"".join(b"\x25" + v.tobytes() for v in vals)  # field 4, wire type 5, per value
    ints = b"".join(b"\x38" + _varint(int(v) & ((1 << 64) - 1)) for v in (-5, 7, 1 << 40))  # field 7, varint
    t1 = _ld(5, b"\x08\x03" + b"\x10\x01" + _ld(8, b"f") + floats)
    t2 = _ld(5, b"\x08\x03" + b"\x10\x07" + _ld(8, b"i") + ints)
    path = tmp_path / "unpacked.onnx"
    path.write_bytes(_model(t1 + t2))
    m = onnx.load(str(path))
    index = ckptsurgeon.open(str(path))
    for t in m.graph.initializer:
        assert index[t.name].numpy().tobytes() == onnx.numpy_helper.to_array(t).tobytes()
    assert index["i"].numpy().tolist() == [-5, 7, 1 << 40]


def test_mutated_models_fail_cleanly(tmp_path):
    """Random byte flips and truncations of a real model: a one-line ckptsurgeon error or a listing, never a crash."""
    from ckptsurgeon.errors import CheckpointError
    path, _ = rnn_model(tmp_path / "m.onnx", "LSTM", peepholes=True)
    data = path.read_bytes()
    rng = np.random.default_rng(11)
    for k in range(300):
        buf = bytearray(data)
        if k % 3 == 0:
            buf = buf[: rng.integers(1, len(buf))]
        for _ in range(rng.integers(1, 4)):
            if buf:
                buf[rng.integers(len(buf))] = rng.integers(256)
        bad = tmp_path / f"mut{k}.onnx"
        bad.write_bytes(bytes(buf))
        try:
            index = ckptsurgeon.open(str(bad))
            for ref in index.values():
                ref.numpy()
        except CheckpointError as exc:
            assert "\n" not in str(exc)
        bad.unlink()
