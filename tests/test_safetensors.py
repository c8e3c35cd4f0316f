"""safetensors: files from the real library read exactly; our writes load in the real library;
every header defect the reference implementation rejects is rejected."""
from __future__ import annotations

import hashlib
import json
import struct

import pytest

import ckptsurgeon
from conftest import assert_same_as_torch, torch_bytes

torch = pytest.importorskip("torch")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


@pytest.fixture()
def real_file(tmp_path):
    torch.manual_seed(0)
    tensors = {
        "encoder.rnn.weight_ih_l0": torch.randn(12, 4),
        "encoder.rnn.bias": torch.randn(12).to(torch.bfloat16),
        "head.weight": torch.randn(2, 3).to(torch.float16),
        "head.f8": torch.randn(2, 3).to(torch.float8_e4m3fn),
        "ids": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "scalar": torch.tensor(2.0),
        "empty": torch.zeros(0, 2),
    }
    path = tmp_path / "real.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "x"})
    return path, tensors


def test_reads_what_the_library_wrote(real_file):
    path, tensors = real_file
    index = ckptsurgeon.open(path)
    assert index.format == "safetensors"
    assert index.metadata["__metadata__"] == {"format": "pt", "note": "x"}
    assert sorted(r.key for r in index.values()) == sorted(tensors)
    for key, t in tensors.items():
        assert_same_as_torch(index[key.replace(".", "/")].numpy(), t)


def test_our_output_loads_in_the_library_bit_exact(real_file, tmp_path):
    path, tensors = real_file
    out = tmp_path / "out.safetensors"
    ckptsurgeon.extract(path, out, scope=["**"])
    with safe_open(str(out), framework="pt") as f:
        assert set(f.keys()) == set(tensors)
        for key, t in tensors.items():
            got = f.get_tensor(key)
            assert got.dtype == t.dtype
            assert_same_as_torch(ckptsurgeon.open(path)[key.replace(".", "/")].numpy(), got)
        meta = f.metadata()
    raw = path.read_bytes()
    st = path.stat()
    assert meta["source"] == "real.safetensors" and meta["selection"] == "**"
    assert meta["source_size"] == str(st.st_size) and meta["source_mtime_ns"] == str(st.st_mtime_ns)
    head = 8 + struct.unpack("<Q", raw[:8])[0]
    assert meta["source_header_sha256"] == hashlib.sha256(raw[:head]).hexdigest()
    assert "source_sha256" not in meta  # the whole source is hashed only on request
    with safe_open(str(out), framework="pt") as f:  # the sha256 of each tensor's bytes as written
        digests = json.loads(f.metadata()["tensor_sha256"])
        assert digests == {k: hashlib.sha256(torch_bytes(f.get_tensor(k))).hexdigest() for k in f.keys()}
    ckptsurgeon.extract(path, out, scope=["head"], force=True, source_sha256=True)
    with safe_open(str(out), framework="np") as f:
        assert f.metadata()["source_sha256"] == hashlib.sha256(raw).hexdigest()


def _craft(header: dict, data: bytes = b"", header_bytes: bytes | None = None) -> bytes:
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
BAD_FILES = {
    "too_short": b"\x01\x00",
    "header_past_end": struct.pack("<Q", 500) + b"{}",
    "huge_header": struct.pack("<Q", 200_000_000) + b"{" + b" " * 20,
    "not_json": _craft({}, header_bytes=b"{not json}"),
    "not_utf8": _craft({}, header_bytes=b'{"\xff": 1}'),
    "duplicate_key": _craft({}, b"\0" * 8, header_bytes=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                                          b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'),
    "unknown_dtype": _craft({"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "size_mismatch": _craft({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
    "overlap": _craft({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
    "gap": _craft({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
    "past_buffer": _craft(GOOD, b"\0" * 4),
    "trailing_bytes": _craft(GOOD, b"\0" * 12),
    "negative_shape": _craft({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "overflow": _craft({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_malformed_headers_are_refused(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(ckptsurgeon.CheckpointError):
        ckptsurgeon.open(path)


def test_lazy_read_touches_only_one_tensor(real_file, monkeypatch):
    path, tensors = real_file
    index = ckptsurgeon.open(path)
    import ckptsurgeon.index as idx

    calls = []
    real = idx.read_exact
    monkeypatch.setattr(idx, "read_exact", lambda f, o, n: calls.append(n) or real(f, o, n))
    index["head/weight"].numpy()
    assert calls == [2 * 3 * 2]


JSON_TEXTS = ['{}', ' {} ', '{"a":1}', '{ "a" : {"b": [1, 2, {"c": null}]} , "d":"x\\"y" }  ', '{"a":1,"a":2}',
              '{"\\u00e9":{"dtype":"F32"}}\n\t', '{"a":1,}', '{"a" 1}', '{"a":1}x', '{"a":1', '[]', '{a:1}', '',
              '{"a":[1,2}', '{"a":1 "b":2}', '{"a":"\\x"}', '  {"x":{},"y":[]}']


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_the_streaming_header_parser_agrees_with_json(text):
    from ckptsurgeon.formats.safetensors.safetensors_fmt import _members

    try:
        expected = json.loads(text, object_pairs_hook=list)
    except ValueError:
        expected = None
    if expected is None or not text.strip().startswith("{"):
        with pytest.raises(ValueError):
            list(_members(text))
    else:
        assert list(_members(text)) == expected


@pytest.mark.parametrize("metadata", [{}, {"format": "pt", "note": 'quote " and \\ back, é'}])
@pytest.mark.parametrize("keys", [[], ["a"], ["enc.w", 'we"ird\\key', "ünïcode.层", "tab\tkey", "/slash"]])
def test_header_metadata_is_json_dumps_of_json_dumps_byte_for_byte(metadata, keys):
    """The writer builds ``tensor_sha256`` piece by piece (memory); it must be exactly what json.dumps gives."""
    from ckptsurgeon.formats.safetensors.writer import SHA256_KEY, _metadata_json

    digests = {k: hashlib.sha256(k.encode()).hexdigest() for k in keys}
    compact = {"separators": (",", ":")}
    expected = dict(metadata)
    if digests:
        expected[SHA256_KEY] = json.dumps(digests, **compact)
    assert bytes(_metadata_json(metadata, digests)) == json.dumps(expected, **compact).encode()
