"""Graft into TensorFlow checkpoints that TensorFlow wrote: a TF1 Saver checkpoint and a tf.keras 2
object-based checkpoint as templates; TensorFlow restores the grafted copy and computes what the source
computed. Damaged templates are refused with nothing written."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ckptsurgeon import api, graft
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import CheckpointError
from tfenv import run_tf, save_x

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _tf1_template(tmp: Path, x: str, nets: list[dict]) -> str:
    (tmp / "tpl").mkdir()
    run_tf("tf1", tmp, x=x, nets=nets, save_template=str(tmp / "tpl" / "model.ckpt"))
    return str(tmp / "tpl" / "model.ckpt")


def test_tf1_lstmcell_into_a_tf1_saver_checkpoint(tmp_path: Path) -> None:
    """The seed's cell into a TF1 graph's own checkpoint (an LSTMCell under 'encoder' beside a GRU that stays)."""
    ref = np.load(FIXTURES / "tensorflow" / "tf1_lstmcell" / "reference.npz")
    x = save_x(tmp_path, np.swapaxes(ref["out/x"], 0, 1).copy())
    nets = [{"scope": "encoder", "kind": "lstm", "hidden": 4}, {"scope": "other", "kind": "gru", "hidden": 2}]
    template = _tf1_template(tmp_path, x, nets)
    before = run_tf("tf1", tmp_path, x=x, prefix=template, restore="saver", nets=nets)
    (tmp_path / "out").mkdir()
    out = _cli("graft", str(FIXTURES / "tensorflow" / "tf1_lstmcell"), "--into", template,
               "-o", str(tmp_path / "out" / "model.ckpt"))
    assert "verified LSTMcell -> encoder" in out
    got = run_tf("tf1", tmp_path, x=x, prefix=str(tmp_path / "out" / "model.ckpt"), restore="saver", nets=nets)
    np.testing.assert_allclose(got["encoder"], np.swapaxes(ref["out/h"], 0, 1), atol=1e-6)
    np.testing.assert_array_equal(got["other"], before["other"])  # the untouched GRU computes what it did
    # every index byte but the two crc32c values and their block's checksum is the template's
    a = Path(template + ".index").read_bytes()
    b = (tmp_path / "out" / "model.ckpt.index").read_bytes()
    assert len(a) == len(b) and 0 < sum(x != y for x, y in zip(a, b)) <= 12


def test_torch_modules_into_a_tf_keras_object_checkpoint(tmp_path: Path) -> None:
    """nn.LSTM(bidirectional) + nn.GRU into tf.keras 2's save_weights(prefix); load_weights (every object
    matched) then computes torch's output."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, bidirectional=True, batch_first=True)
    gru = torch.nn.GRU(10, 4, batch_first=True)
    torch.save({"lstm": lstm.state_dict(), "gru": gru.state_dict()}, tmp_path / "src.pt")
    xb = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        want = gru(lstm(torch.from_numpy(xb))[0])[0].numpy()
    x = save_x(tmp_path, xb)
    spec = {"input": 3, "layers": [{"kind": "lstm", "units": 5, "bidirectional": True}, {"kind": "gru", "units": 4}],
            "x": x}
    (tmp_path / "tpl").mkdir()
    run_tf("keras", tmp_path, **spec, template=str(tmp_path / "tpl" / "ckpt"))
    (tmp_path / "out").mkdir()
    _cli("graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "tpl"), "--map", "lstm=layer_with_weights-0",
         "--map", "gru=layer_with_weights-1", "-o", str(tmp_path / "out" / "ckpt"))
    got = run_tf("keras", tmp_path, **spec, prefix=str(tmp_path / "out" / "ckpt"), seed=7)
    np.testing.assert_allclose(got["y"], want, atol=1e-5)
    assert (tmp_path / "out" / "checkpoint").read_text().startswith('model_checkpoint_path: "ckpt"')


def _damaged_copy(src: str, dst: Path) -> str:
    dst.mkdir()
    for name in os.listdir(src):
        if name.startswith("model.ckpt") and not name.startswith("model_init"):
            shutil.copy(os.path.join(src, name), dst / name)
    return str(dst / "model.ckpt")


def test_damaged_templates_are_refused_and_nothing_written(tmp_path: Path) -> None:
    src = str(FIXTURES / "tensorflow" / "tf1_cells")
    (tmp_path / "out").mkdir()
    flipped = _damaged_copy(src, tmp_path / "flipped")
    data = Path(flipped + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[-3] ^= 0x40  # a tensor of 'stack', which the graft does not replace
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="crc32c mismatch"):
        graft(src, flipped, tmp_path / "out" / "model.ckpt", scope=["bigru/**"], map=["bigru=bigru"])
    missing = _damaged_copy(src, tmp_path / "missing")
    os.unlink(missing + ".data-00000-of-00001")
    result = CliRunner().invoke(cli, ["graft", src, "-s", "bigru/**", "--into", missing, "-o", str(tmp_path / "out" / "m.ckpt")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "data shard missing" in result.output
    assert os.listdir(tmp_path / "out") == []


def test_graft_output_refusals(tmp_path: Path) -> None:
    src = str(FIXTURES / "tensorflow" / "tf1_cells")
    result = CliRunner().invoke(cli, ["graft", src, "-s", "bigru/**", "--into", src, "--map", "bigru=bigru",
                                      "-o", str(FIXTURES / "tensorflow" / "tf1_cells" / "model.ckpt"), "--force"])
    assert result.exit_code == 1 and "is a file of the template" in result.output
    result = CliRunner().invoke(cli, ["graft", src, "-s", "bigru/**", "--into", src, "--map", "bigru=bigru",
                                      "-o", str(tmp_path / "nowhere" / "model.ckpt")])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "nowhere").exists()
    assert len(api.open(src)) > 0


def test_torch_lstm_into_a_tf_keras_savedmodel(tmp_path: Path) -> None:
    """A SavedModel names its variables variables/0..N; the object graph in its checkpoint names them by layer
    (layer_with_weights-0/cell/kernel), so they pair; the output is a whole SavedModel that
    tf_keras.models.load_model reads and runs as torch does."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    torch.save(lstm.state_dict(), tmp_path / "src.pt")
    xb = np.random.default_rng(2).standard_normal((2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        want = lstm(torch.from_numpy(xb))[0].numpy()
    spec = {"input": 3, "layers": [{"kind": "lstm", "units": 5}], "x": save_x(tmp_path, xb)}
    run_tf("keras", tmp_path, **spec, saved_model=str(tmp_path / "sm"))
    assert [p for p in api.open(tmp_path / "sm")] == ["layer_with_weights-0/cell/kernel",
                                                      "layer_with_weights-0/cell/recurrent_kernel",
                                                      "layer_with_weights-0/cell/bias"]
    _cli("graft", str(tmp_path / "src.pt"), "--into", str(tmp_path / "sm"), "-o", str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(tmp_path / "sm"))
    assert (tmp_path / "out" / "saved_model.pb").read_bytes() == (tmp_path / "sm" / "saved_model.pb").read_bytes()
    got = run_tf("keras", tmp_path, x=spec["x"], load_saved_model=str(tmp_path / "out"))
    np.testing.assert_allclose(got["y"], want, atol=1e-5)


def test_savedmodel_layer_configs_are_read_from_keras_metadata(tmp_path: Path) -> None:
    """A tf.keras SavedModel states each layer's config in keras_metadata.pb: a relu, go_backwards or hard_sigmoid
    template layer is never grafted as a default LSTM (an independent tester saw 'verified' and TF off by 0.02-0.47);
    a source that computes the same (Keras 3, relu) grafts, and TF's load_model reproduces Keras 3's output."""
    torch = pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    xb = np.random.default_rng(5).standard_normal((2, 6, 3)).astype(np.float32)
    x = save_x(tmp_path, xb)
    torch.save(torch.nn.LSTM(3, 4, batch_first=True).state_dict(), tmp_path / "torch.pt")
    for name, extra, needle in (("relu", {"activation": "relu"}, "activation"),
                                ("back", {"go_backwards": True}, "go_backwards"),
                                ("hard", {"recurrent_activation": "hard_sigmoid"}, "recurrent_activation")):
        run_tf("keras", tmp_path, input=3, layers=[{"kind": "lstm", "units": 4, **extra}], x=x,
               saved_model=str(tmp_path / name))
        (group,) = ckptsurgeon_groups(tmp_path / name)
        assert group.provenance[needle].startswith("file: model config"), group.provenance
        with pytest.raises(CheckpointError, match=needle):
            graft(tmp_path / "torch.pt", tmp_path / name, tmp_path / f"out_{name}")
        assert not (tmp_path / f"out_{name}").exists()
    inp = keras.Input((None, 3))
    source = keras.Model(inp, keras.layers.LSTM(4, activation="relu", return_sequences=True)(inp))
    source.save(tmp_path / "relu.keras")
    _cli("graft", str(tmp_path / "relu.keras"), "--into", str(tmp_path / "relu"), "-o", str(tmp_path / "out_relu"))
    got = run_tf("keras", tmp_path, x=x, load_saved_model=str(tmp_path / "out_relu"))
    np.testing.assert_allclose(got["y"], keras.ops.convert_to_numpy(source(xb)), atol=1e-5)


def ckptsurgeon_groups(path: Path) -> list:
    from ckptsurgeon.rnn import recognize

    return recognize(api.open(path))


def test_graft_keeps_a_saver_metagraph_and_writes_usual_permissions(tmp_path: Path) -> None:
    """A TF1 Saver's model.ckpt.meta (import_meta_graph reads it) is copied beside the grafted bundle; a SavedModel
    output folder gets the permissions a folder usually gets (not mkdtemp's 0700), and cannot be inside the template."""
    src = str(FIXTURES / "tensorflow" / "tf1_cells")
    tpl = _damaged_copy(src, tmp_path / "tpl")  # an intact copy
    Path(tpl + ".meta").write_bytes(b"\x0a\x03meta-graph bytes")
    (tmp_path / "out").mkdir()
    graft(src, tpl, tmp_path / "out" / "model.ckpt", scope=["bigru/**"], map=["bigru=bigru"])
    assert (tmp_path / "out" / "model.ckpt.meta").read_bytes() == Path(tpl + ".meta").read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    from ckptsurgeon.atomic import atomic_files

    with atomic_files(str(tmp_path / "new")) as files:
        files.makedir("variables")
        with files.open("variables/x") as fh:
            fh.write(b"x")
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "new" / "variables").stat().st_mode & 0o777 == 0o777 & ~umask
