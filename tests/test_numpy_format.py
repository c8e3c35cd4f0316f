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

