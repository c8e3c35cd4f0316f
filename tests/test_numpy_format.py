"""numpy .npz / .npy read without pickle; object arrays refused; npz output loads in numpy."""
from __future__ import annotations

import numpy as np
import pytest

import ckptsurgeon


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_equals_numpy_load(tmp_path, compressed):
    rng = np.random.default_rng(0)
    arrays = {
        "encoder.w": rng.standard_normal((3, 4)).astype(np.float32),
        "encoder.fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "ids": np.arange(7, dtype=np.int16),
        "flag": np.array(True),
        "big_endian": np.arange(4, dtype=">i4"),
    }
    path = tmp_path / "a.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    index = ckptsurgeon.open(path)
    assert index.format == "npz"
    with np.load(path, allow_pickle=False) as ref:
        for key in ref.files:
            got = index[key.replace(".", "/")].numpy()
            np.testing.assert_array_equal(got, ref[key])
            assert got.dtype.newbyteorder("=") == ref[key].dtype.newbyteorder("=")
            assert got.shape == ref[key].shape


def test_npy_single_array(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(6.0).reshape(2, 3))
    index = ckptsurgeon.open(path)
    np.testing.assert_array_equal(index["weights"].numpy(), np.arange(6.0).reshape(2, 3))


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="object array"):
        ckptsurgeon.open(path)


def test_npz_output_round_trips(tmp_path):
    src = tmp_path / "src.npz"
    # np.savez itself cannot name an array "file"; our writer can.
    ckptsurgeon.save({"a.b": np.arange(3, dtype=np.int64), "file": np.ones(2)}, src)
    out = tmp_path / "out.npz"
    ckptsurgeon.extract(src, out, scope=["**"])
    with np.load(out, allow_pickle=False) as got:
        assert got.files == ["a.b", "file"]
        np.testing.assert_array_equal(got["a.b"], np.arange(3))


def test_npz_refuses_bfloat16_rather_than_losing_it(tmp_path):
    import ml_dtypes

    with pytest.raises(ckptsurgeon.OutputError, match="safetensors"):
        ckptsurgeon.save({"x": np.ones(2, dtype=ml_dtypes.bfloat16)}, tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_zero_d_arrays_keep_their_shape(tmp_path, suffix):
    """A scalar (a step counter, a temperature) stays 0-d through the npz and HDF5 writers, as numpy and h5py read it
    back (np.ascontiguousarray would have made it shape (1,))."""
    import h5py

    from safetensors.numpy import save_file

    src = tmp_path / "src.safetensors"
    save_file({"step": np.array(7, dtype=np.int64), "w": np.ones((2, 3), np.float32)}, str(src))
    out = tmp_path / f"out{suffix}"
    ckptsurgeon.extract(src, out)
    if suffix == ".npz":
        with np.load(out) as z:
            got = {k: z[k] for k in z.files if not k.startswith("__")}
    else:
        with h5py.File(out, "r") as f:
            got = {k: f[k][()] for k in f}
    assert np.asarray(got["step"]).shape == () and int(got["step"]) == 7
    assert got["w"].shape == (2, 3)



@pytest.mark.parametrize("values", [3000, 5000, 15000])  # members of 12-60 KB: inflated whole to read a header
def test_a_compressed_member_whose_crc_is_wrong_is_refused_by_ls_and_scan(tmp_path, values):
    """A member of ``np.savez_compressed`` whose CRC-32 no longer matches: numpy's zipfile raises on it, so ``ls``
    refuses the archive and ``scan`` says it is damaged (the header's read inflates the member to its end)."""
    import io
    import json
    import struct
    import zipfile

    from conftest import run_cli

    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.random.default_rng(0).integers(0, 4, values).astype(np.float32), ok=np.ones(2))
    data = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("a.npy")
    crc = struct.unpack_from("<I", data, info.header_offset + 14)[0] ^ 1
    struct.pack_into("<I", data, info.header_offset + 14, crc)  # the local header's CRC-32 ...
    at = struct.unpack_from("<I", data, data.rfind(b"PK\x05\x06") + 16)[0]
    while data[at:at + 4] == b"PK\x01\x02":  # ... and the central directory's
        n, m, k = struct.unpack_from("<HHH", data, at + 28)
        if bytes(data[at + 46:at + 46 + n]) == b"a.npy":
            struct.pack_into("<I", data, at + 16, crc)
        at += 46 + n + m + k
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):
        np.load(path)["a"]
    ls = run_cli("ls", str(path))
    assert ls.returncode == 1 and "zip member 'a.npy': damaged: CRC-32 mismatch" in ls.stderr
    scan = run_cli("scan", str(path), "--json")
    found = json.loads(scan.stdout)["files"][0]
    assert scan.returncode == 1 and found["level"] == "unsafe"
    assert any("CRC-32 mismatch" in f["message"] for f in found["findings"])


def test_a_compressed_member_that_declares_more_bytes_than_it_holds_is_refused_for_that(tmp_path):
    """A deflated member whose declared size exceeds what it inflates to: its header's read inflates it to its
    end (it is small) and says so, before any size arithmetic of the array."""
    import io
    import struct
    import zipfile

    from conftest import run_cli

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # as numpy's savez_compressed, without zip64 sizes
        for name, arr in (("a", np.arange(750, dtype=np.float32)), ("ok", np.ones(2))):
            member = io.BytesIO()
            np.lib.format.write_array(member, arr)
            zf.writestr(f"{name}.npy", member.getvalue())
    data = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("a.npy")
    size = struct.unpack_from("<I", data, info.header_offset + 22)[0]
    assert size == info.file_size
    struct.pack_into("<I", data, info.header_offset + 22, size + 8)
    at = struct.unpack_from("<I", data, data.rfind(b"PK\x05\x06") + 16)[0]
    while data[at:at + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<HHH", data, at + 28)
        if bytes(data[at + 46:at + 46 + n]) == b"a.npy":
            struct.pack_into("<I", data, at + 24, size + 8)
        at += 46 + n + m + k
    path = tmp_path / "long.npz"
    path.write_bytes(bytes(data))
    ls = run_cli("ls", str(path))
    assert ls.returncode == 1 and "zip member 'a.npy': damaged: its data ends 8 bytes before its declared size" in ls.stderr
