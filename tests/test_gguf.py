"""GGUF: files written by llama.cpp's own gguf-py writer, read as its own reader reads them; plain tensors
byte-exact, quantized ones listed by block format and dequantized only on request, as gguf.quants does."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import FormatError, OutputError, UnsafeCheckpointError
from ckptsurgeon.formats.gguf import dequantizing
from ckptsurgeon.formats.gguf.ggml_types import GGML_TYPES

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize, quantize  # noqa: E402

Q = gguf.GGMLQuantizationType


def _write(path, *, endian=None, big_tensor: int = 0):
    """A small llama-like file through GGUFWriter; returns the arrays given to it."""
    kw = {} if endian is None else {"endianess": endian}
    w = gguf.GGUFWriter(str(path), "llama", **kw)
    w.add_uint32("llama.block_count", 2)
    w.add_string("general.name", "tiny")
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 0.5)
    w.add_bool("general.flag", True)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(100)])
    w.add_array("tokenizer.ggml.scores", [float(i) for i in range(100)])
    w.add_array("short", [1, 2, 3])
    rng = np.random.default_rng(0)
    arrays = {
        "token_embd.weight": rng.standard_normal((4, 64)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float16),
        "blk.0.ffn.weight": rng.standard_normal((2, 3, 64)).astype(np.float32),
    }
    for name, arr in arrays.items():
        w.add_tensor(name, arr)
    a = rng.standard_normal((8, 64)).astype(np.float32)
    w.add_tensor("blk.0.bf16", quantize(a, Q.BF16), raw_dtype=Q.BF16)
    w.add_tensor("blk.0.attn_q.weight", quantize(a, Q.Q4_0), raw_dtype=Q.Q4_0)
    w.add_tensor("blk.0.attn_k.weight", quantize(a, Q.Q8_0), raw_dtype=Q.Q8_0)
    q6k = rng.integers(0, 256, (2, 210), dtype=np.uint8)  # any bytes are a valid q6_k block
    q6k[:, 208:] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)  # d: a finite scale
    w.add_tensor("output.weight", q6k, raw_dtype=Q.Q6_K)
    if big_tensor:
        w.add_tensor("big", np.zeros(big_tensor, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arrays, a


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.gguf"
    arrays, a = _write(path)
    return path, arrays, a


def test_lists_what_gguf_reader_lists(tiny):
    path, _arrays, _a = tiny
    index = ckptsurgeon.open(path)
    ref = gguf.GGUFReader(str(path))
    assert index.format == "gguf"
    assert [r.key for r in index.values()] == [t.name for t in ref.tensors]
    for t in ref.tensors:
        r = index[t.name.replace(".", "/")]
        assert r.shape == tuple(reversed(t.shape.tolist()))
        plain = {Q.F32: "float32", Q.F16: "float16", Q.BF16: "bfloat16"}
        assert r.dtype_name == plain.get(t.tensor_type, t.tensor_type.name.lower())
        assert r.nbytes == t.n_bytes
        if t.tensor_type in (Q.F32, Q.F16, Q.BF16):
            assert r.offset == t.data_offset
    for key, field in ref.fields.items():
        if key.startswith("GGUF.") and key != "GGUF.version":
            continue
        value = field.contents()
        if isinstance(value, list) and len(value) > 64:
            assert index.metadata[key]["length"] == len(value)
        elif isinstance(value, float):
            assert index.metadata[key] == pytest.approx(value)
        else:
            assert index.metadata[key] == value, key
    assert any("q4_0: blocks of 32 weights in 18 bytes" in n for n in index.notes)


def test_plain_tensors_extract_byte_exact(tiny, tmp_path):
    path, arrays, a = tiny
    out = tmp_path / "o.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(path), "-s", "token_embd", "-s", "blk/0/attn_norm", "-s", "blk/0/ffn",
                                   "-s", "blk/0/bf16", "-o", str(out)])
    assert res.exit_code == 0, res.output
    from safetensors.numpy import load_file

    got = load_file(str(out))
    ref = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    for name, arr in arrays.items():
        assert got[name].dtype == arr.dtype and got[name].tobytes() == arr.tobytes()
    assert got["blk.0.bf16"].tobytes() == ref["blk.0.bf16"].data.tobytes()
    assert np.array_equal(got["blk.0.bf16"].astype(np.float32), dequantize(ref["blk.0.bf16"].data, Q.BF16))


def test_quantized_refused_unless_dequantizing(tiny):
    path, _arrays, a = tiny
    index = ckptsurgeon.open(path)
    q4 = index["blk/0/attn_q/weight"]
    assert (q4.dtype_name, q4.shape, q4.nbytes) == ("q4_0", (8, 64), 8 * 2 * 18)
    with pytest.raises(OutputError, match=r"q4_0: blocks of 32 weights in 18 bytes.*dequantizing\(\)"):
        q4.numpy()
    ref = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    with dequantizing():
        for name, qtype in (("blk.0.attn_q.weight", Q.Q4_0), ("blk.0.attn_k.weight", Q.Q8_0), ("output.weight", Q.Q6_K)):
            got = index[name.replace(".", "/")].numpy()
            assert got.dtype == np.float32
            assert np.array_equal(got, dequantize(ref[name].data, qtype))
        assert np.abs(q4.numpy() - a).max() < 0.5 * np.abs(a).max() / 7  # within q4_0's step of the original
    with pytest.raises(OutputError):
        q4.numpy()


def test_cli_ls_shows_block_types_and_extract_refuses_quantized(tiny, tmp_path):
    path, _arrays, _a = tiny
    res = CliRunner().invoke(cli, ["ls", str(path)])
    assert res.exit_code == 0, res.output
    assert "q4_0" in res.output and "q6_k" in res.output and "(gguf)" in res.output
    res = CliRunner().invoke(cli, ["extract", str(path), "-o", str(tmp_path / "all.safetensors")])
    assert res.exit_code == 1 and "is quantized" in res.output and "--exclude" in res.output
    res = CliRunner().invoke(cli, ["scan", str(path)])
    assert res.exit_code == 0 and "clean" in res.output


def test_ls_reads_no_tensor_bytes(tmp_path, monkeypatch):
    path = tmp_path / "big.gguf"
    _write(path, big_tensor=1 << 20)  # 4 MiB of data after the header
    from ckptsurgeon import source

    reached = []
    real_read, real_readinto = source.LocalFile.read, source.SourceWindow.readinto

    def read(self, offset, size):
        reached.append(offset + size)
        return real_read(self, offset, size)

    def readinto(self, buf):
        reached.append(self.tell() + len(buf))
        return real_readinto(self, buf)

    monkeypatch.setattr(source.LocalFile, "read", read)
    monkeypatch.setattr(source.SourceWindow, "readinto", readinto)
    index = ckptsurgeon.open(path)
    big = index["big"]
    assert max(reached) < big.offset + (1 << 17) < path.stat().st_size // 8


def test_big_endian_file(tmp_path):
    path = tmp_path / "be.gguf"
    arrays, _a = _write(path, endian=gguf.GGUFEndian.BIG)
    index = ckptsurgeon.open(path)
    assert index.metadata["llama.block_count"] == 2 and "big-endian GGUF file" in index.notes
    for name, arr in arrays.items():
        assert np.array_equal(index[name.replace(".", "/")].numpy(), arr)


def test_type_table_matches_gguf_py():
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        row = GGML_TYPES[int(qtype)]
        assert (row.name, row.block, row.block_bytes) == (qtype.name.lower(), block, size)


def _minimal(*, n_tensors=0, kv=b"", tensors=b"", n_kv=0, tail=b""):
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv + tensors + tail


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def test_hostile_headers_are_refused_before_allocating(tmp_path):
    cases = {
        "huge_array": (_minimal(n_kv=1, kv=_s("k") + struct.pack("<IIQ", 9, 8, 1 << 62)), FormatError),
        "huge_counts": (_minimal(n_tensors=1 << 40, n_kv=1 << 40), FormatError),
        "long_string": (_minimal(n_kv=1, kv=_s("k") + struct.pack("<IQ", 8, 1 << 60)), FormatError),
        "nested": (_minimal(n_kv=1, kv=_s("k") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 9, 1) * 8
                            + b"\0" * 64), UnsafeCheckpointError),
        "unknown_type": (_minimal(n_tensors=1, tensors=_s("t") + struct.pack("<IQIQ", 1, 32, 99, 0), tail=b"\0" * 200),
                         FormatError),
        "past_end": (_minimal(n_tensors=1, tensors=_s("t") + struct.pack("<IQIQ", 1, 1024, 0, 0), tail=b"\0" * 64),
                     FormatError),
        "partial_block": (_minimal(n_tensors=1, tensors=_s("t") + struct.pack("<IQIQ", 1, 31, 2, 0), tail=b"\0" * 64),
                          FormatError),
        "version1": (b"GGUF" + struct.pack("<III", 1, 0, 0) + b"\0" * 16, FormatError),
    }
    for name, (data, error) in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        with pytest.raises(error):
            ckptsurgeon.open(p)


def test_cli_dequantize_extracts_what_gguf_quants_decodes(tiny, tmp_path):
    """extract/stats/diff --dequantize: quantized tensors as float32, exactly gguf.quants's decoding."""
    from safetensors.numpy import load_file

    path, _arrays, _a = tiny
    out = tmp_path / "deq.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(path), "--dequantize", "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = load_file(out)
    ref = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    for name, qtype in (("blk.0.attn_q.weight", Q.Q4_0), ("blk.0.attn_k.weight", Q.Q8_0), ("output.weight", Q.Q6_K)):
        key = next(k for k in got if k.replace("/", ".") == name)
        assert got[key].dtype == np.float32 and np.array_equal(got[key], dequantize(ref[name].data, qtype))
    for command in (["stats", str(path)], ["diff", str(path), str(path)]):
        assert CliRunner().invoke(cli, command).exit_code == 1  # refused without it
        res = CliRunner().invoke(cli, [*command, "--dequantize"])
        assert res.exit_code == 0, res.output
