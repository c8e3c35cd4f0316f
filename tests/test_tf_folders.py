"""Folders holding TensorFlow bundles without a ``checkpoint`` state file (issue 10, item 18)."""
from __future__ import annotations

import json
import shutil

import numpy as np
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from conftest import FIXTURES

TF = FIXTURES / "tensorflow"


def test_saved_model_variables_folder_opens():
    """What users pass: the SavedModel's variables/ folder (TF 2.21 wrote it; no 'checkpoint' file inside)."""
    folder = TF / "saved_model" / "variables"
    assert not (folder / "checkpoint").exists()
    meta = json.loads((TF / "saved_model" / "reference.json").read_text())
    arrays = np.load(TF / "saved_model" / "reference.npz")
    index = ckptsurgeon.open(folder)
    assert {r.key: list(r.shape) for r in index.values()} == {
        n: s for n, s in meta["list_variables"] if meta["tensors"][n]["dtype"] != "string"}
    for ref in index.values():
        assert ref.numpy().tobytes() == arrays[meta["tensors"][ref.key]["npz"]].tobytes()
    res = CliRunner().invoke(cli, ["ls", str(folder)])
    assert res.exit_code == 0 and "dense_w" in res.output


def test_one_bundle_folder_without_state_file(tmp_path):
    for f in (TF / "tf1_lstmcell").glob("model.ckpt.*"):
        shutil.copy(f, tmp_path / f.name)
    index = ckptsurgeon.open(tmp_path)
    assert "LSTMcell/input_gate/wx" in index
    np.testing.assert_array_equal(index["LSTMcell/input_gate/wx"].numpy(),
                                  ckptsurgeon.open(TF / "tf1_lstmcell" / "model.ckpt")["LSTMcell/input_gate/wx"].numpy())


def test_several_bundles_without_state_file_is_one_line_listing_prefixes(tmp_path):
    for f in (TF / "tf1_lstmcell").glob("model*.ckpt.*"):
        shutil.copy(f, tmp_path / f.name)
    res = CliRunner().invoke(cli, ["ls", str(tmp_path)])
    assert res.exit_code == 1
    line = res.output.strip()
    assert "\n" not in line and "no 'checkpoint' file" in line
    assert str(tmp_path / "model.ckpt") in line and str(tmp_path / "model_init.ckpt") in line
    # naming one of them works
    assert "LSTMcell/input_gate/wx" in ckptsurgeon.open(tmp_path / "model_init.ckpt")


def test_folder_without_bundle_is_still_a_directory_error(tmp_path):
    (tmp_path / "notes.index").write_text("not a bundle")  # no data shard beside it
    res = CliRunner().invoke(cli, ["ls", str(tmp_path)])
    assert res.exit_code == 1 and "is a directory" in res.output
