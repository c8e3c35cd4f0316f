"""PyTorch zip and legacy files written by real torch.save equal what torch.load(weights_only=True) gives."""
from __future__ import annotations

import numpy as np
import pytest

import ckptsurgeon
from conftest import FIXTURES, assert_same_as_torch, flatten_torch

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_every_tensor_equals_torch_load(torch_files, kind):
    path = torch_files[kind]
    index = ckptsurgeon.open(path)
    # torch.load cannot reload its own legacy files holding uint16/float8 (UntypedStorage), so the
    # reference is torch.load of the zip save of the very same object.
    expected = torch.load(torch_files["zip"], weights_only=True)
    pairs = list(flatten_torch(expected))
    assert len(pairs) == len(index) > 40
    for (segs, tensor), (scope, ref) in zip(pairs, index.items()):
        assert ref.key == ".".join(segs)
        assert ref.path.split("/") == [p for s in segs for p in s.split(".")]
        assert_same_as_torch(ref.numpy(), tensor)
    assert index.format == ("pytorch" if kind == "zip" else "pytorch-legacy")


def test_legacy_fixture_equals_torch_load_of_itself():
    path = FIXTURES / "torch" / "legacy.pt"
    expected = torch.load(path, weights_only=True)
    index = ckptsurgeon.open(path)
    assert list(index.keys()) == [k.replace(".", "/") for k in expected]
    for key, tensor in expected.items():
        assert_same_as_torch(index[key.replace(".", "/")].numpy(), tensor)


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_non_tensor_leaves_are_metadata(torch_files, kind):
    meta = ckptsurgeon.open(torch_files[kind]).metadata
    assert meta["epoch"] == 7
    assert meta["hyper_parameters/lr"] == 0.01
    assert meta["hyper_parameters/sizes"] == [1, 2]


def test_views_are_read_lazily_with_strides(torch_files):
    index = ckptsurgeon.open(torch_files["zip"])
    strided = index["views/strided"]
    assert strided.stride is not None  # a non-contiguous view, resolved at read time
    assert strided.span() < index["views/same_storage"].nbytes + 1
    base = torch.load(torch_files["zip"], weights_only=True)["views"]["same_storage"]
    np.testing.assert_array_equal(strided.numpy(), base[:, ::2].numpy())


def test_state_dict_paths_follow_module_names():
    index = ckptsurgeon.open(FIXTURES / "torch" / "model.pt")
    assert "encoder/rnn/weight_ih_l0" in index
    assert index["encoder/rnn/weight_ih_l0"].key == "encoder.rnn.weight_ih_l0"
    assert index["encoder/rnn/weight_hh_l1_reverse"].shape == (64, 16)


def test_lightning_optimizer_state_is_marked():
    index = ckptsurgeon.open(FIXTURES / "torch" / "lightning.ckpt")
    opt = [r for r in index.values() if r.optimizer]
    assert opt and all(r.path.startswith("optimizer_states/") for r in opt)
    assert not any(r.optimizer for r in index.values() if r.path.startswith("state_dict/"))


def test_big_endian_byteorder_is_honoured(tmp_path):
    """A zip checkpoint whose byteorder member says 'big' is byte-swapped on read."""
    import zipfile

    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    src = tmp_path / "le.pt"
    torch.save({"w": t}, src)
    dst = tmp_path / "be.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            zout.writestr(info, data)
    np.testing.assert_array_equal(ckptsurgeon.open(dst)["w"].numpy(), t.numpy())


def test_colliding_keys_name_both(tmp_path):
    path = tmp_path / "collide.pt"
    torch.save({"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}}, path)
    with pytest.raises(ckptsurgeon.FormatError, match=r"'a\.b' and 'a\.b'|both normalize"):
        ckptsurgeon.open(path)
