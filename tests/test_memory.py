"""Memory stays bounded: extracting more bytes than the process may even address works.

The extract runs in a subprocess whose address space (``RLIMIT_AS``) is capped at 600 MiB, so any
attempt to hold a source's tensors in memory fails. Headroom measured for this cap: the CLI with
numpy and the format modules imported maps about 150 MiB of address space (``VmPeak``), and torch
is never imported by ``extract`` to safetensors.
"""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

LIMIT = 600 << 20
CLI = [sys.executable, "-c", "from ckptsurgeon.cli import main; main()"]


def _run_capped(*args: str) -> subprocess.CompletedProcess:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    return subprocess.run([*CLI, *args], preexec_fn=cap, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def _sparse_safetensors(path: Path, tensors: list[tuple[str, int]]) -> int:
    """float32 tensors of the given element counts, all zeros, as a sparse file; returns the data start."""
    header, offset = {}, 0
    for name, numel in tensors:
        header[name] = {"dtype": "F32", "shape": [numel], "data_offsets": [offset, offset + 4 * numel]}
        offset += 4 * numel
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.seek(8 + len(blob) + offset - 4)
        fh.write(np.float32(1.5).tobytes())  # the last value is not zero: the copy must reach the end
    return 8 + len(blob)


def _data_region(path: Path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
    return 8 + n, path.stat().st_size - 8 - n


def _same_bytes(a: Path, a_off: int, b: Path, b_off: int, size: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(a_off)
        fb.seek(b_off)
        left = size
        while left:
            n = min(left, 64 << 20)
            if fa.read(n) != fb.read(n):
                return False
            left -= n
    return True


def test_a_2_gib_safetensors_extract_runs_in_600_mib_of_address_space(tmp_path):
    big = (2 << 30) // 4  # one 2 GiB tensor: copied by the kernel, never held
    src = tmp_path / "big.safetensors"
    start = _sparse_safetensors(src, [("small.weight", 1 << 20), ("big.weight", big)])
    out = tmp_path / "out.safetensors"
    proc = _run_capped("extract", str(src), "-s", "**", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    from safetensors import safe_open

    with safe_open(str(out), framework="np") as f:
        assert set(f.keys()) == {"big.weight", "small.weight"}
        digests = json.loads(f.metadata()["tensor_sha256"])
    assert list(digests) == ["small.weight"]  # the 2 GiB tensor never entered the process: not hashed
    out_start, out_size = _data_region(out)
    assert out_size == src.stat().st_size - start
    assert _same_bytes(src, start, out, out_start, out_size)


def test_a_pt_larger_than_the_address_space_extracts(tmp_path):
    torch = pytest.importorskip("torch")
    numel = (700 << 20) // 4  # more than the whole 600 MiB address space
    src = tmp_path / "big.pt"
    t = torch.zeros(numel)
    t[-1] = 1.5
    torch.save({"encoder.weight": t, "head.bias": torch.arange(8.0)}, src)
    del t
    out = tmp_path / "out.safetensors"
    proc = _run_capped("extract", str(src), "-s", "**", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert f.get_slice("encoder.weight").get_shape() == [numel]
        assert f.get_slice("encoder.weight")[numel - 2:].tolist() == [0.0, 1.5]
        assert f.get_tensor("head.bias").tolist() == list(range(8))


def test_stats_of_a_256_mib_tensor_runs_in_600_mib_of_address_space(tmp_path):
    """``stats`` widens values to float64 chunk by chunk: a float64 copy of this tensor alone would be 512 MiB."""
    from safetensors.numpy import save_file

    rows = (256 << 20) // 16
    values = np.random.default_rng(3).uniform(-0.05, 0.05, (rows, 4)).astype(np.float32)
    src = tmp_path / "big.safetensors"
    save_file({"proj.weight": values, "proj.bias": np.zeros(4, np.float32)}, str(src))
    expected = values.astype(np.float64)
    mean, std, l2 = expected.mean(), expected.std(), np.linalg.norm(expected)
    del values, expected
    proc = _run_capped("stats", str(src), "--json")
    assert proc.returncode == 0, proc.stderr
    stats = {t["path"]: t for t in json.loads(proc.stdout)["tensors"]}["proj/weight"]
    assert stats["mean"] == pytest.approx(mean, abs=1e-12) and stats["std"] == pytest.approx(std, rel=1e-12)
    assert stats["l2"] == pytest.approx(l2, rel=1e-12)
    assert stats["init"] == "uniform(+-0.05)", stats


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5"])
def test_the_writer_holds_one_converted_tensor_at_a_time(tmp_path, suffix):
    """Big-endian tensors are converted one by one: the previous one is freed before the next is read
    (it stayed alive for a whole iteration: consolidate of 64 MiB DCP tensors peaked at 165 MiB, now ~100)."""
    import tracemalloc

    import ckptsurgeon

    n = (32 << 20) // 4
    np.savez(tmp_path / "be.npz", a=np.arange(n, dtype=">f4"), b=np.arange(n, dtype=">f4"), c=np.arange(n, dtype=">f4"))
    index = ckptsurgeon.open(tmp_path / "be.npz")
    tracemalloc.start()
    try:
        ckptsurgeon.save(index, tmp_path / f"le{suffix}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20, f"{peak / 2**20:.0f} MiB traced while writing three 32 MiB tensors"
    assert np.array_equal(ckptsurgeon.open(tmp_path / f"le{suffix}")["c"].numpy(), np.arange(n, dtype="<f4"))


def _torch_pickle(tmp_path: Path, n: int, shared: bool = True) -> tuple[Path, bytes]:
    """A torch.save state dict of ``n`` small tensors, a third of them sharing storages (views, tied weights)
    when ``shared``."""
    import torch

    torch.manual_seed(0)
    base = torch.randn(n + 8)
    sd: dict = {}
    for i in range(n):
        if i % 3 == 0 or not shared:
            sd[f"layers.{i}.weight"] = torch.randn(2, 3)
        elif i % 3 == 1:
            sd[f"layers.{i}.weight"] = base[i:i + 4]  # a view: the storage id read back from the memo
        else:
            sd[f"layers.{i}.weight"] = sd[f"layers.{i - 2}.weight"]  # the very same tensor under two names
    path = tmp_path / "many.pt"
    torch.save(sd, path)
    from ckptsurgeon.formats.zipsafe import SafeZip

    zf = SafeZip(str(path))
    pkl = zf.read(next(name for name in zf.names() if name.endswith("/data.pkl")))
    zf.close()
    return path, pkl


def test_the_pickle_memo_is_pruned_and_the_index_is_torchs(tmp_path, monkeypatch):
    """Unpickling drops the memo entries the pickle never reads back (issue 22, P9): the index of a checkpoint
    with shared storages and tied tensors is still exactly what torch.load returns, pruned after every storage."""
    import torch

    import ckptsurgeon
    from ckptsurgeon.formats.pytorch import safepickle

    path, _pkl = _torch_pickle(tmp_path, 600)
    prunes = []
    real = safepickle._memo_of
    monkeypatch.setattr(safepickle, "PRUNE_EVERY", 1)
    monkeypatch.setattr(safepickle, "_memo_of", lambda kept: prunes.append(len(kept)) or real(kept))
    index = ckptsurgeon.open(str(path))
    assert len(prunes) >= 400 and max(prunes) >= 2  # pruned at every storage, keeping what is read back
    theirs = torch.load(path, weights_only=True)
    assert list(index) == [k.replace(".", "/") for k in theirs]
    for key, tensor in theirs.items():
        np.testing.assert_array_equal(index[key.replace(".", "/")].numpy(), tensor.numpy())
    aliases = index.aliases()
    assert sum(len(v) for v in aliases.values()) == 200  # every tied pair found as one tensor


def test_pruning_the_memo_lowers_the_unpickling_peak(tmp_path, monkeypatch):
    """What a torch pickle memoizes per tensor (its key, storage id, shape, stride, argument tuple, hooks dict) is
    let go as the load goes, not held to its end."""
    import tracemalloc

    from ckptsurgeon.formats.pytorch import safepickle

    _path, pkl = _torch_pickle(tmp_path, 20_000, shared=False)
    peaks = {}
    for every in (10**9, 4096):
        monkeypatch.setattr(safepickle, "PRUNE_EVERY", every)
        tracemalloc.start()
        obj = safepickle.safe_load(pkl, "many.pt")
        peaks[every] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(obj) == 20_000
        del obj
    assert peaks[4096] < 0.75 * peaks[10**9], peaks
