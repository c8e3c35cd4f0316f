"""HDF5 / Keras files: every tensor equals what Keras itself holds (layer.get_weights()), with human
paths; hostile HDF5 and .keras files are refused with one line."""
from __future__ import annotations

import importlib.util
import json
import zipfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from conftest import FIXTURES

KERAS = FIXTURES / "keras"
TFKERAS = KERAS / "tfkeras"


@pytest.fixture(scope="session")
def keras3_files(tmp_path_factory):
    """Fresh files from the installed Keras 3 (KERAS_BACKEND=torch)."""
    pytest.importorskip("keras")
    spec = importlib.util.spec_from_file_location("make_keras3", KERAS / "make_keras3_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("keras3")
    files = module.make(str(out))
    ref = json.loads((out / "keras3.reference.json").read_text())
    return files, ref, np.load(out / "keras3.reference.npz")


def _keras3_path(layer: dict, weight_path: str) -> str:
    """Where ckptsurgeon puts a Keras 3 variable: encoder_lstm/cell/kernel, bi/forward_layer/cell/bias."""
    parts, var = weight_path.split("/"), weight_path.split("/")[-1]
    if layer["class"] == "Bidirectional":
        return f"{layer['name']}/{'forward_layer' if parts[1].startswith('forward') else 'backward_layer'}/cell/{var}"
    if layer["class"] in ("LSTM", "GRU", "SimpleRNN"):
        return f"{layer['name']}/cell/{var}"
    return f"{layer['name']}/{var}"


@pytest.mark.parametrize("kind", ["keras", "weights_h5", "legacy_h5"])
def test_keras3_files_equal_get_weights(keras3_files, kind):
    files, ref, arrays = keras3_files
    index = ckptsurgeon.open(files[kind])
    expected = {}
    for layer in ref["layers"]:
        for wpath, key in zip(layer["weights"], layer["npz"]):
            path = wpath if kind == "legacy_h5" else _keras3_path(layer, wpath)
            expected[path] = arrays[key]
    assert set(index) == set(expected)
    for path, want in expected.items():
        got = index[path].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), path
    assert not index.notes


def test_keras_paths_name_layer_and_variable(keras3_files):
    files, _, _ = keras3_files
    index = ckptsurgeon.open(files["keras"])
    assert index.format == "keras"
    assert {"encoder_lstm/cell/kernel", "bi/forward_layer/cell/recurrent_kernel", "head/bias", "embed/embeddings",
            "lstm/cell/kernel", "dense/kernel"} <= set(index)
    layers = index.metadata["layers"]
    assert layers["gru_reset_before"]["reset_after"] is False
    assert layers["bi"]["layer"]["reset_after"] is True and layers["encoder_lstm"]["units"] == 16


@pytest.mark.parametrize("name", ["model.h5", "weights_only.h5"])
def test_tfkeras2_h5_equals_get_weights(name):
    ref = json.loads((TFKERAS / "model.reference.json").read_text())
    arrays = np.load(TFKERAS / "model.reference.npz")
    index = ckptsurgeon.open(TFKERAS / name)
    assert index.format == "keras-h5"
    order = []
    for layer in ref["layers"]:
        for wname, key in zip(layer["weights"], layer["npz"]):
            path = wname[:-2]  # 'encoder_lstm/lstm_cell/kernel:0'
            order.append(path)
            assert index[path].numpy().tobytes() == arrays[key].tobytes()
            assert index[path].key == wname
    assert list(index) == order  # Keras's own order


def test_tfkeras2_v3_layout_without_names_falls_back_and_says_so():
    ref = json.loads((TFKERAS / "model.reference.json").read_text())
    arrays = np.load(TFKERAS / "model.reference.npz")
    index = ckptsurgeon.open(TFKERAS / "model.weights.h5")
    assert any("layer names are not stored" in n for n in index.notes)
    stored = {"embed": "embedding", "encoder_lstm": "lstm", "bi": "bidirectional", "gru_reset_before": "gru",
              "lstm": "lstm_1", "head": "dense", "dense": "dense_1"}
    for layer in ref["layers"]:
        renamed = dict(layer, name=stored[layer["name"]])
        for wname, key in zip(layer["weights"], layer["npz"]):
            assert index[_keras3_path(renamed, wname[:-2])].numpy().tobytes() == arrays[key].tobytes()
    res = CliRunner().invoke(cli, ["ls", str(TFKERAS / "model.weights.h5")])
    assert "note: layer names are not stored" in res.output


def test_cudnn_layout():
    ref = json.loads((TFKERAS / "cudnn.reference.json").read_text())
    arrays = np.load(TFKERAS / "cudnn.reference.npz")
    index = ckptsurgeon.open(TFKERAS / "cudnn.h5")
    for layer in ref["layers"]:
        for wname, key in zip(layer["weights"], layer["npz"]):
            assert index[wname[:-2]].numpy().tobytes() == arrays[key].tobytes()
    assert index["cudnn_lstm/bias"].shape == (32,)  # 8H: input and recurrent biases


def _keras_h5(path, layers: dict[str, dict[str, np.ndarray]], chunk: bool = False, full_model: bool = True):
    """A hand-made Keras 1 / 2.2 style file: layer_names + weight_names, datasets under the layer group."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        root.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for lname, weights in layers.items():
            g = root.create_group(lname)
            names = [w.encode() for w in weights]
            if chunk:
                g.attrs["weight_names0"] = np.array(names[:2])
                g.attrs["weight_names1"] = np.array(names[2:])
            else:
                g.attrs["weight_names"] = np.array(names)
            for wname, arr in weights.items():
                g.create_dataset(wname, data=arr)
        if full_model:
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": [
                {"class_name": "LSTM", "config": {"name": "lstm_1", "units": 2, "recurrent_activation": "hard_sigmoid"}}]}})
            f.create_dataset("optimizer_weights/training/Adam/iterations:0", data=np.int64(3))


def test_keras22_and_keras1_names(tmp_path):
    rng = np.random.default_rng(0)
    w = {n: rng.standard_normal(s).astype(np.float32) for n, s in (("k", (3, 8)), ("r", (2, 8)), ("b", (8,)))}
    path22 = tmp_path / "keras22.h5"
    _keras_h5(path22, {"lstm_1": {"lstm_1/kernel:0": w["k"], "lstm_1/recurrent_kernel:0": w["r"], "lstm_1/bias:0": w["b"]},
                       "bidirectional_1": {"bidirectional_1/forward_lstm_1/kernel:0": w["k"],
                                           "bidirectional_1/backward_lstm_1/kernel:0": w["k"]}}, chunk=True)
    index = ckptsurgeon.open(path22)
    assert list(index)[:4] == ["lstm_1/kernel", "lstm_1/recurrent_kernel", "lstm_1/bias", "bidirectional_1/forward_lstm_1/kernel"]
    np.testing.assert_array_equal(index["lstm_1/bias"].numpy(), w["b"])
    assert index["optimizer_weights/training/Adam/iterations"].optimizer
    assert index.metadata["layers"]["lstm_1"]["recurrent_activation"] == "hard_sigmoid"
    path1 = tmp_path / "keras1.h5"
    gates = {f"lstm_1_{m}_{g}": rng.standard_normal((2, 2)).astype(np.float32) for g in "icfo" for m in "WUb"}
    _keras_h5(path1, {"lstm_1": gates}, full_model=False)
    index = ckptsurgeon.open(path1)
    assert list(index) == [f"lstm_1/{n}" for n in gates]


def test_generic_hdf5_and_h5_writer_round_trip(tmp_path):
    import ml_dtypes

    src = tmp_path / "plain.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("encoder/w", data=np.arange(6.0).reshape(2, 3))
        f.create_dataset("encoder/deep/b", data=np.ones(3, np.int16), compression="gzip")
    index = ckptsurgeon.open(src)
    assert index.format == "hdf5" and list(index) == ["encoder/deep/b", "encoder/w"]
    out = tmp_path / "out.h5"
    tensors = {"a/b": np.arange(4, dtype=np.float16), "c": np.arange(3)}
    ckptsurgeon.save(tensors, out, metadata={"source": "x"})
    back = ckptsurgeon.open(out)
    assert back["a/b"].dtype.name == "float16" and back["a/b"].numpy().tobytes() == tensors["a/b"].tobytes()
    with h5py.File(out) as f:
        assert f.attrs["source"] == "x" and f["a/b"].dtype == np.float16  # what h5py itself reads
    # HDF5 has no bfloat16: written as bits, h5py and Keras would read integers; refused, nothing written
    with pytest.raises(ckptsurgeon.OutputError, match="HDF5 has no bfloat16"):
        ckptsurgeon.save({"w": np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16)}, tmp_path / "bf.h5")
    assert not (tmp_path / "bf.h5").exists()


def test_extract_from_keras_to_safetensors_is_byte_exact(keras3_files, tmp_path):
    files, _, _ = keras3_files
    for kind, scope in (("keras", "encoder_lstm/*"), ("weights_h5", "encoder_lstm/*"), ("legacy_h5", "encoder_lstm/*")):
        out = tmp_path / f"{kind}.safetensors"
        res = CliRunner().invoke(cli, ["extract", files[kind], "--scope", scope, "-o", str(out)])
        assert res.exit_code == 0, res.output
        src, got = ckptsurgeon.open(files[kind]), ckptsurgeon.open(out)
        assert len(got) == 3
        for ref in got.values():
            assert ref.numpy().tobytes() == src[ref.path].numpy().tobytes()


# ---- hostile files ---------------------------------------------------------------------------

def _refused(path, match):
    res = CliRunner().invoke(cli, ["ls", str(path)])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], lines
    assert match in lines[0], lines[0]


def test_external_link_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.ones(3)
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.ones(2)
        f["leak"] = h5py.ExternalLink(str(other), "/secret")
    _refused(path, "external link")


def test_soft_link_refused(tmp_path):
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.ones(2)
        f["alias"] = h5py.SoftLink("/w")
    _refused(path, "soft link")


def test_external_storage_refused(tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(4, np.float32).tobytes())
    path = tmp_path / "extstore.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", shape=(4,), dtype="f4", external=[(str(raw), 0, 16)])
    _refused(path, "external file")


def test_virtual_dataset_refused(tmp_path):
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["data"] = np.arange(4.0)
    layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(src), "data", shape=(4,))
    path = tmp_path / "virtual.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("w", layout)
    _refused(path, "virtual dataset")


def test_shape_bomb_refused(tmp_path):
    path = tmp_path / "bomb.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", shape=(2**36,), dtype="f4", chunks=(1024,))  # 256 GiB declared, nothing stored
    _refused(path, "shape bomb")


def test_damaged_hdf5(tmp_path):
    data = (TFKERAS / "model.h5").read_bytes()
    for cut in (100, len(data) // 2):
        path = tmp_path / f"cut{cut}.h5"
        path.write_bytes(data[:cut])
        res = CliRunner().invoke(cli, ["extract", str(path), "-o", str(tmp_path / f"o{cut}.safetensors")])
        assert res.exit_code == 1 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output


def _keras_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_keras_zip_tricks_refused(keras3_files, tmp_path):
    files, _, _ = keras3_files
    with zipfile.ZipFile(files["keras"]) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    dotdot = tmp_path / "dotdot.keras"
    _keras_zip(dotdot, {**members, "../../evil.txt": b"x"})
    _refused(dotdot, "escapes the archive")
    bomb = tmp_path / "bomb.keras"
    _keras_zip(bomb, {**members, "config.json": members["config.json"] + b" " * (50 << 20)}, zipfile.ZIP_DEFLATED)
    _refused(bomb, "zip bomb")
    lambda_cfg = json.loads(members["config.json"])
    lambda_cfg["config"]["layers"].append({"class_name": "Lambda", "config": {"name": "evil", "function": ["4wEAAAAA", None, None]}})
    lam = tmp_path / "lambda.keras"
    _keras_zip(lam, {**members, "config.json": json.dumps(lambda_cfg).encode()})
    index = ckptsurgeon.open(lam)  # read as data: the Lambda is listed, never run
    assert index.metadata["layers"]["evil"]["class_name"] == "Lambda"
    assert not list(tmp_path.glob("*.txt"))
