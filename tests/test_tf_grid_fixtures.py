"""The TF-made recurrent grids (fixtures/tensorflow/tf1_grid, fixtures/keras/tfkeras_grid) read with ckptsurgeon.

Reader checks only: every committed case opens, lists what TensorFlow listed, and every tensor has the
bytes TensorFlow's own `get_tensor` / Keras's `get_weights()` returned (recorded in case.json +
reference.npz by the generators). Conversion tests live with ckptsurgeon/rnn.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ckptsurgeon
from conftest import FIXTURES

TF1_GRID = FIXTURES / "tensorflow" / "tf1_grid"
KERAS_GRID = FIXTURES / "keras" / "tfkeras_grid"
NUMPY_NAME = {"float": "float32", "double": "float64", "half": "float16"}


def cases(grid: Path) -> list[str]:
    return [c["name"] for c in json.loads((grid / "manifest.json").read_text())["cases"]]


def load(folder: Path) -> tuple[dict, np.lib.npyio.NpzFile]:
    return json.loads((folder / "case.json").read_text()), np.load(folder / "reference.npz")


def test_manifests_list_every_case_folder():
    for grid in (TF1_GRID, KERAS_GRID):
        folders = {p.name for p in grid.iterdir() if p.is_dir()}
        assert folders == set(cases(grid)) and len(folders) > 20


@pytest.mark.parametrize("name", cases(TF1_GRID))
def test_tf1_case_lists_and_reads_what_tf_recorded(name):
    meta, arrays = load(TF1_GRID / name)
    index = ckptsurgeon.open(TF1_GRID / name / meta["prefix"])
    assert {r.key: list(r.shape) for r in index.values()} == {n: s for n, s in meta["list_variables"]}
    for ref in index.values():
        want = meta["tensors"][ref.key]
        got = ref.numpy()
        assert got.dtype.name == NUMPY_NAME.get(want["dtype"], want["dtype"]) and list(got.shape) == want["shape"]
        assert got.tobytes() == arrays[want["npz"]].tobytes(), (name, ref.key)


@pytest.mark.parametrize("name", cases(TF1_GRID))
def test_tf1_case_json_describes_every_variable(name):
    """Each cell's variables (by role) are exactly the saved names, and the outputs are in the npz too."""
    meta, arrays = load(TF1_GRID / name)
    described = {saved for layer in meta["layers"] for saved in layer["variables"].values()}
    assert described == {n for n, _ in meta["list_variables"]}
    for key, out in meta["outputs"].items():
        assert np.array_equal(np.asarray(out["values"], np.float32), arrays[out["npz"]]), key


@pytest.mark.parametrize("name", cases(KERAS_GRID))
@pytest.mark.parametrize("file", ["model.h5", "weights.h5"])
def test_tfkeras_h5_equals_get_weights(name, file):
    meta, arrays = load(KERAS_GRID / name)
    index = ckptsurgeon.open(KERAS_GRID / name / file)
    expected = {w["name"][:-2]: w for layer in meta["layers"] for w in layer["weights"]}  # 'bi/forward_lstm/...:0'
    assert list(index) == list(expected)  # Keras's own order
    for path, w in expected.items():
        assert index[path].key == w["name"]
        want = arrays[w["npz"]]
        got = index[path].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), (name, path)


@pytest.mark.parametrize("name", cases(KERAS_GRID))
def test_tfkeras_tf_checkpoint_equals_get_tensor(name):
    meta, arrays = load(KERAS_GRID / name)
    recorded = meta["files"]["ckpt/weights"]["tensors"]
    index = ckptsurgeon.open(KERAS_GRID / name / "ckpt")
    assert {r.key for r in index.values()} == {k for k, v in recorded.items() if v["dtype"] != "string"}
    for ref in index.values():
        want = recorded[ref.key]
        got = ref.numpy()
        assert list(got.shape) == want["shape"] and got.tobytes() == arrays[want["npz"]].tobytes(), (name, ref.key)
