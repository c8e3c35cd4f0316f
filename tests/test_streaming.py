"""The streaming safetensors writer: every copy path writes what the safetensors library reads, and
provenance never reads a byte of an unselected tensor."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import ckptsurgeon
from ckptsurgeon.formats.safetensors import writer
from ckptsurgeon.index import TensorRef
from ckptsurgeon.source import ByteSource, LocalFile, SourceWindow, register_scheme

from conftest import run_cli


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"layer_{i}.weight": rng.standard_normal((i + 1, 64)).astype(np.float32) for i in range(8)}


def _digests(path) -> dict[str, str]:
    with safe_open(str(path), framework="np") as f:
        return json.loads(f.metadata().get("tensor_sha256", "{}"))


def _assert_same(out, expected: dict[str, np.ndarray]) -> None:
    with safe_open(str(out), framework="np") as f:
        assert set(f.keys()) == set(expected)
        for key, arr in expected.items():
            got = f.get_tensor(key)
            assert got.dtype == arr.dtype and got.shape == arr.shape and got.tobytes() == arr.tobytes()


@pytest.mark.parametrize("hashed_max, chunk", [(writer.HASHED_COPY_MAX, writer.CHUNK), (1000, 4096)])
def test_kernel_copies_and_batched_reads_write_what_the_library_reads(tmp_path, monkeypatch, hashed_max, chunk):
    monkeypatch.setattr(writer, "HASHED_COPY_MAX", hashed_max)  # small limits: every path and run split
    monkeypatch.setattr(writer, "CHUNK", chunk)
    tensors = _tensors()
    src = tmp_path / "src.safetensors"
    save_file(tensors, str(src))
    out = tmp_path / "out.safetensors"
    scope = ["layer_0", "layer_1", "layer_3", "layer_6", "layer_7"]  # gaps between runs
    ckptsurgeon.extract(src, out, scope=scope)
    chosen = {k: v for k, v in tensors.items() if k.split(".")[0] in scope}
    _assert_same(out, chosen)
    hashed = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in chosen.items() if v.nbytes <= hashed_max}
    assert _digests(out) == hashed  # bytes that passed through memory have their sha256; kernel copies not


def test_without_kernel_copies_the_bytes_go_through_memory(tmp_path, monkeypatch):
    def refuse(*_a: Any, **_k: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(writer, "HASHED_COPY_MAX", 100)
    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(os, "sendfile", refuse)
    tensors = _tensors()
    src = tmp_path / "src.safetensors"
    save_file(tensors, str(src))
    out = tmp_path / "out.safetensors"
    ckptsurgeon.extract(src, out, scope=["**"])
    _assert_same(out, tensors)


def test_big_endian_strided_and_in_memory_tensors_take_the_array_path(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    pt = tmp_path / "views.pt"
    torch.save({"t": base.t(), "cols": base[:, ::2], "plain": base}, pt)
    out = tmp_path / "views.safetensors"
    ckptsurgeon.extract(pt, out, scope=["**"])
    _assert_same(out, {"t": base.t().contiguous().numpy(), "cols": base[:, ::2].contiguous().numpy(),
                       "plain": base.numpy()})
    assert set(_digests(out)) == {"t", "cols", "plain"}

    npz = tmp_path / "be.npz"
    np.savez(npz, w=np.arange(6, dtype=">f4").reshape(2, 3), i=np.arange(3, dtype=">i8"))
    out2 = tmp_path / "be.safetensors"
    ckptsurgeon.extract(npz, out2, scope=["**"])
    _assert_same(out2, {"w": np.arange(6, dtype="<f4").reshape(2, 3), "i": np.arange(3, dtype="<i8")})

    out3 = tmp_path / "mem.safetensors"
    arrays = {"a": np.arange(5, dtype=np.float64), "b": np.ones((2, 2), dtype=np.int16)}
    ckptsurgeon.save(arrays, out3)
    _assert_same(out3, arrays)
    assert _digests(out3) == {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()}


def test_hdf5_contiguous_datasets_are_copied_as_ranges(tmp_path, monkeypatch):
    import h5py

    monkeypatch.setattr(writer, "HASHED_COPY_MAX", 100)  # the contiguous ones take the kernel copy
    rng = np.random.default_rng(1)
    arrays = {"dense/kernel": rng.standard_normal((16, 8)).astype(np.float32),
              "dense/be": np.arange(12, dtype=">f8"), "dense/packed": np.arange(40, dtype=np.int16)}
    src = tmp_path / "w.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("dense/kernel", data=arrays["dense/kernel"])
        f.create_dataset("dense/be", data=arrays["dense/be"])
        f.create_dataset("dense/packed", data=arrays["dense/packed"], compression="gzip", chunks=(8,))
    out = tmp_path / "w.safetensors"
    ckptsurgeon.extract(src, out, scope=["**"])
    _assert_same(out, {k: v.astype(v.dtype.newbyteorder("<")) for k, v in arrays.items()})
    assert set(_digests(out)) == {"dense/be", "dense/packed"}  # byte-swapped and decompressed: arrays


class StructuralSource:
    """A source without a local file (what a remote store looks like to the writer), implementing the
    protocol without subclassing it: no inherited ``copy_to``."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def local_path(self) -> str | None:
        return None

    def read(self, offset: int, size: int) -> bytes:
        return self._data[offset:offset + size]

    def window(self, offset: int = 0, size: int | None = None) -> io.RawIOBase:
        return SourceWindow(self, offset, size)

    def identity(self) -> dict[str, Any]:
        return {"size": len(self._data)}


class MemorySource(StructuralSource, ByteSource):
    """The same, subclassing ``ByteSource``: inherits its chunked ``copy_to``."""


@pytest.mark.parametrize("kind", [MemorySource, StructuralSource])
def test_sources_without_a_local_file_are_copied_in_chunks_and_hashed(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(writer, "CHUNK", 1 << 12)
    big = np.arange(5000, dtype=np.float32)  # 20,000 bytes: more than one chunk
    small = np.arange(10, dtype=np.int32)
    data = small.tobytes() + big.tobytes()
    register_scheme("testbytes", lambda url: kind(url, data))
    url = f"testbytes://{kind.__name__}"  # sources are cached by name: one per kind
    refs = {"small": TensorRef("small", "small", np.dtype("<i4"), (10,), url, 0),
            "big": TensorRef("big", "big", np.dtype("<f4"), (5000,), url, 40)}
    out = tmp_path / "out.safetensors"
    with open(out, "w+b") as fh:
        writer.write(refs, fh, {"source": "remote"})
    _assert_same(out, {"small": small, "big": big})
    assert _digests(out) == {"small": hashlib.sha256(small.tobytes()).hexdigest(),
                             "big": hashlib.sha256(big.tobytes()).hexdigest()}


def _record_reads(monkeypatch, path: str) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    read, copy_to = LocalFile.read, LocalFile.copy_to

    def logged_read(self: LocalFile, offset: int, size: int):
        if self.name == path:
            ranges.append((offset, offset + size))
        return read(self, offset, size)

    def logged_copy(self: LocalFile, out: Any, offset: int, size: int, **kw: Any) -> None:
        if self.name == path:
            ranges.append((offset, offset + size))
        return copy_to(self, out, offset, size, **kw)

    monkeypatch.setattr(LocalFile, "read", logged_read)
    monkeypatch.setattr(LocalFile, "copy_to", logged_copy)
    return ranges


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_provenance_reads_no_byte_of_an_unselected_tensor(tmp_path, monkeypatch, kind):
    tensors = {f"block_{i}.weight": np.full((64, 64), i, dtype=np.float32) for i in range(6)}
    src = tmp_path / f"src.{kind}"
    if kind == "pt":
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, src)
    else:
        save_file(tensors, str(src))
    index = ckptsurgeon.open(src)
    unselected = [(r.offset, r.offset + r.nbytes) for r in index.values() if not r.path.startswith("block_2/")]
    ranges = _record_reads(monkeypatch, str(src))
    out = tmp_path / "out.safetensors"
    ckptsurgeon.extract(str(src), out, scope=["block_2"])
    assert ranges, "no read was recorded"
    for begin, end in ranges:
        assert not any(begin < u_end and u_begin < end for u_begin, u_end in unselected), (begin, end)
    with safe_open(str(out), framework="np") as f:
        meta = f.metadata()
    assert meta["source_size"] == str(src.stat().st_size) and len(meta["source_header_sha256"]) == 64


def test_source_sha256_flag_hashes_the_whole_source(tmp_path):
    src = tmp_path / "src.safetensors"
    save_file(_tensors(), str(src))
    out = tmp_path / "out.safetensors"
    proc = run_cli("extract", str(src), "-s", "layer_1", "-o", str(out), "--source-sha256")
    assert proc.returncode == 0, proc.stderr
    with safe_open(str(out), framework="np") as f:
        assert f.metadata()["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
