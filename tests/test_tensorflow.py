"""TensorFlow bundles written by real TensorFlow (fixtures/tensorflow) read without TensorFlow."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from conftest import FIXTURES
from tf_craft import write_bundle

TF = FIXTURES / "tensorflow"
FOLDERS = ["tf1_lstmcell", "tf1_cells", "tf1_misc", "tf2_checkpoint", "tfkeras_tf_weights", "saved_model"]


def reference(folder: str):
    meta = json.loads((TF / folder / "reference.json").read_text())
    arrays = np.load(TF / folder / "reference.npz")
    return meta, arrays


@pytest.mark.parametrize("folder", FOLDERS)
def test_lists_exactly_what_tf_lists(folder):
    meta, _ = reference(folder)
    index = ckptsurgeon.open(TF / folder)
    listed = {r.key: list(r.shape) for r in index.values()}
    strings = {k for k, v in meta["tensors"].items() if v["dtype"] == "string"}
    assert listed == {n: s for n, s in meta["list_variables"] if n not in strings}
    for key in strings - {"_CHECKPOINTABLE_OBJECT_GRAPH"}:
        assert key in index.metadata  # string tensors are listed as metadata


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_tensor_equals_get_tensor(folder):
    meta, arrays = reference(folder)
    index = ckptsurgeon.open(TF / folder)
    for ref in index.values():
        want = meta["tensors"][ref.key]
        got = ref.numpy()
        assert got.dtype.name == {"float32": "float32", "half": "float16", "double": "float64"}.get(want["dtype"], want["dtype"])
        assert list(got.shape) == want["shape"]
        assert got.tobytes() == arrays[want["npz"]].tobytes(), ref.key


def test_string_tensor_values():
    meta, _ = reference("tf1_misc")
    got = ckptsurgeon.open(TF / "tf1_misc").metadata["vocab"]
    want = [bytes.fromhex(h) for h in meta["tensors"]["vocab"]["strings"]]
    assert got[:2] == [w.decode() for w in want[:2]] and got[2] == "0x" + want[2].hex()


def test_partitioned_and_sharded():
    index = ckptsurgeon.open(TF / "tf1_misc" / "model.ckpt")
    assert len([f for f in index.files if ".data-" in f]) == 2
    assert index["part"].shape == (10, 4)  # reassembled from three slices


@pytest.mark.parametrize("given", ["model.ckpt", "model.ckpt.index", "model.ckpt.data-00000-of-00001", "."])
def test_accepts_prefix_index_shard_and_folder(given):
    index = ckptsurgeon.open(TF / "tf1_lstmcell" / given)
    assert "LSTMcell/input_gate/wx" in index


def test_saved_model_folder():
    assert set(ckptsurgeon.open(TF / "saved_model")) == {"dense_w", "dense_b"}


def test_tf2_keys_lose_the_attribute_suffix():
    index = ckptsurgeon.open(TF / "tfkeras_tf_weights")
    ref = index["layer_with_weights-0/forward_layer/cell/kernel"]
    assert ref.key == "layer_with_weights-0/forward_layer/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    names = {e["checkpoint_key"]: e["full_name"] for e in index.metadata["object_graph"]}
    assert names[ref.key].endswith("kernel")


def test_optimizer_state_is_marked_everywhere():
    tf1 = ckptsurgeon.open(TF / "tf1_lstmcell")
    marked = {p for p, r in tf1.items() if r.optimizer}
    assert marked == {p for p in tf1 if p.endswith(("/Adam", "/Adam_1")) or p.startswith("beta")}
    tf2 = ckptsurgeon.open(TF / "tf2_checkpoint")
    assert {p for p, r in tf2.items() if r.optimizer} == {p for p in tf2 if p.startswith("optimizer/")}
    data = json.loads(CliRunner().invoke(cli, ["ls", str(TF / "tf1_lstmcell"), "--json"]).output)
    assert sum(t["optimizer"] for t in data["tensors"]) == 26


def test_done_when_extract_lstmcell(tmp_path):
    out = tmp_path / "lstm.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(TF / "tf1_lstmcell" / "model.ckpt"), "--scope", "LSTMcell/*", "-o", str(out)])
    assert res.exit_code == 0 and "left out 24 optimizer tensors" in res.output
    got = ckptsurgeon.open(out)
    assert len(got) == 12 and not any("Adam" in p for p in got)
    meta, arrays = reference("tf1_lstmcell")
    for ref in got.values():
        assert ref.numpy().tobytes() == arrays[meta["tensors"][ref.key]["npz"]].tobytes()
    res = CliRunner().invoke(cli, ["extract", str(TF / "tf1_lstmcell"), "-s", "LSTMcell", "--include-optimizer",
                                   "-o", str(tmp_path / "all.safetensors")])
    assert "wrote 36 tensors" in res.output


def test_never_imports_tensorflow(tmp_path):
    code = ("import sys, ckptsurgeon\n"
            f"i = ckptsurgeon.open({str(TF / 'tf1_cells')!r}); [r.numpy() for r in i.values()]\n"
            "print(any(m.startswith(('tensorflow', 'keras', 'torch')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _craft(tmp_path, **kw):
    prefix = tmp_path / "bad.ckpt"
    write_bundle(prefix, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}, **kw)
    return prefix


def test_crafted_bundle_reads(tmp_path):
    index = ckptsurgeon.open(_craft(tmp_path))
    np.testing.assert_array_equal(index["w"].numpy(), np.arange(6).reshape(2, 3))


def _set(**changes):
    def tweak(key, fields):
        if key == "w":
            fields.update(changes)
    return tweak


@pytest.mark.parametrize("tweak,message", [
    (_set(offset=10_000), "runs past the shard"),
    (_set(shard=3), "names shard 3"),
    (_set(shape=[4, 3]), "needs 48 bytes"),
    (_set(shape=[2**40, 2**40, 2**40]), "overflows"),
    (_set(slices=[b"\n\x04\x08\x00\x10\x09\n\x02\x10\x03"]), "lies outside dimension 0"),
])
def test_malformed_bundles(tmp_path, tweak, message):
    with pytest.raises(ckptsurgeon.CheckpointError, match=message):
        ckptsurgeon.open(_craft(tmp_path, tweak=tweak))


def test_bad_magic_truncation_and_crc(tmp_path):
    prefix = _craft(tmp_path)
    index_file = tmp_path / "bad.ckpt.index"
    good = index_file.read_bytes()
    index_file.write_bytes(good[:-1] + b"\x00")
    with pytest.raises(ckptsurgeon.FormatError, match="bad magic"):
        ckptsurgeon.open(prefix)
    index_file.write_bytes(good[:30])
    with pytest.raises(ckptsurgeon.FormatError, match="truncated|past the end|bad magic"):
        ckptsurgeon.open(prefix)
    index_file.write_bytes(good[:5] + bytes([good[5] ^ 0xFF]) + good[6:])
    with pytest.raises(ckptsurgeon.FormatError, match="checksum"):
        ckptsurgeon.open(prefix)
    index_file.write_bytes(good)
    shard = tmp_path / "bad.ckpt.data-00000-of-00001"
    raw = bytearray(shard.read_bytes())
    raw[0] ^= 0xFF
    shard.write_bytes(bytes(raw))
    index = ckptsurgeon.open(prefix)  # listing reads no tensor bytes
    with pytest.raises(ckptsurgeon.FormatError, match="crc32c mismatch for tensor 'w'"):
        index["w"].numpy()
    res = CliRunner().invoke(cli, ["extract", str(prefix), "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and not (tmp_path / "o.safetensors").exists()


def test_tf2_optimizer_slots_are_marked(tmp_path):
    prefix = tmp_path / "slots.ckpt"
    key = "model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
    write_bundle(prefix, {"model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.ones((2, 2), np.float32),
                          key: np.zeros((2, 2), np.float32)})
    index = ckptsurgeon.open(prefix)
    assert not index["model/dense/kernel"].optimizer
    assert index["model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m"].optimizer


def test_listing_does_not_read_big_string_tensors(tmp_path, monkeypatch):
    """A big vocabulary is listed by size; its bytes are read only for the object graph or small strings."""
    from ckptsurgeon.formats.tensorflow import tf_bundle

    monkeypatch.setattr(tf_bundle, "MAX_STRING_READ", 10)
    reads = []
    real = tf_bundle.read_strings
    monkeypatch.setattr(tf_bundle, "read_strings", lambda b, e: reads.append(e.key) or real(b, e))
    index = ckptsurgeon.open(TF / "tf1_misc")
    assert reads == [] and index.metadata["vocab"] == "<string tensor [3], 27 bytes>"
