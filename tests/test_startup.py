"""Start-up stays light: commands and formats are imported when used, never all at once."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from safetensors.numpy import save_file

from ckptsurgeon.cli import COMMANDS, cli

HEAVY = ("h5py", "torch", "keras", "ml_dtypes", "ckptsurgeon.rnn", "ckptsurgeon.remap", "ckptsurgeon.graft", "ckptsurgeon.check",
         "ckptsurgeon.formats.hdf5", "ckptsurgeon.formats.pytorch", "ckptsurgeon.formats.tensorflow.tf_bundle")


def _modules_after(*argv: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``ckptsurgeon ARGV``."""
    code = ("import sys; sys.argv = ['ckptsurgeon', *sys.argv[1:]]\n"
            "from ckptsurgeon.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "finally:\n    sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stderr.rsplit("MODULES ", 1)[1].split())


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_ls_and_extract_of_safetensors_import_nothing_heavy(tmp_path):
    src = tmp_path / "w.safetensors"
    save_file({"encoder.w": np.zeros((2, 3), np.float32), "head.b": np.ones(3, np.float32)}, str(src))
    assert _loaded(_modules_after("ls", str(src)), HEAVY) == []
    assert _loaded(_modules_after("extract", str(src), "-s", "encoder", "-o", str(tmp_path / "o.safetensors")), HEAVY) == []


def test_scan_of_files_no_reader_takes_imports_no_reader(tmp_path):
    """Detection recognizes GGUF, TFLite, Flax, ONNX and DCP folders from ``formats.magic``: a scan of a folder of
    files no reader takes (JSON, text) imports none of those readers, nor a report module it does not write."""
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    (tmp_path / "notes.txt").write_text("a folder of a model's side files\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "README.md").write_text("# model\n")
    loaded = _modules_after("scan", str(tmp_path), "--summary")
    assert "ckptsurgeon.formats.magic" in loaded  # detection ran through every sniffer
    assert _loaded(loaded, ("ckptsurgeon.formats.gguf", "ckptsurgeon.formats.tflite", "ckptsurgeon.formats.flax",
                            "ckptsurgeon.formats.onnx.onnx_fmt", "ckptsurgeon.formats.onnx.model",
                            "ckptsurgeon.formats.dcp", "xml.etree", "zipfile", "hashlib", "tempfile")) == []


def test_scan_and_ls_of_a_model_folder_import_no_numpy(tmp_path):
    """numpy takes longer to import than the rest of a scan's start-up: listing and scanning what a model download
    holds (torch.save, safetensors, an .npz, a Keras .h5, a Lightning checkpoint) never imports it. Then reading a
    tensor does, and gives the dtype the file states."""
    import h5py
    import torch
    from safetensors.torch import save_file as save_torch

    model = torch.nn.LSTM(4, 3)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "lr": 0.5}, tmp_path / "lightning.ckpt")
    save_torch({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    np.savez(tmp_path / "emb.npz", w=np.arange(6, dtype=">f4").reshape(2, 3), ids=np.arange(3), mask=np.ones(2, bool))
    with h5py.File(tmp_path / "model.h5", "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["scale"] = np.float16(0.5)
        f.attrs["sizes"] = np.arange(6, dtype=">i2").reshape(2, 3)
        f.create_dataset("dense/kernel:0", data=np.ones((3, 2), "<f8"))
    (tmp_path / "config.json").write_text('{"hidden_size": 3}')
    scanned = _modules_after("scan", str(tmp_path), "--summary")
    assert "ckptsurgeon.formats.pytorch.torch_zip" in scanned and "ckptsurgeon.formats.hdf5.h5plain" in scanned
    assert _loaded(scanned, ("numpy", "ml_dtypes")) == []
    for name in ("pytorch_model.bin", "lightning.ckpt", "model.safetensors", "emb.npz", "model.h5"):
        assert _loaded(_modules_after("ls", str(tmp_path / name), "--json"), ("numpy", "ml_dtypes")) == [], name
    code = ("import sys, ckptsurgeon; i = ckptsurgeon.open(sys.argv[1]); "
            "assert 'numpy' not in sys.modules; print(i[sys.argv[2]].numpy().dtype.name, 'numpy' in sys.modules)")
    for name, path, dtype in (("emb.npz", "w", "float32"), ("model.safetensors", "weight_ih_l0", "bfloat16"),
                              ("model.h5", "dense/kernel", "float64"), ("pytorch_model.bin", "bias_hh_l0", "float32")):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / name), path], capture_output=True, text=True,
                              timeout=120)
        assert proc.stdout.split() == [dtype, "True"], (name, proc.stderr)


def test_numpy_pickles_paddle_files_and_our_npz_list_and_scan_without_numpy(tmp_path):
    """A pickled numpy dtype or scalar (a Lightning checkpoint's best score, every PaddlePaddle array) and the
    metadata member of an .npz ckptsurgeon writes are read without numpy, to the values numpy and torch give."""
    import shutil

    import torch

    from ckptsurgeon.formats.npy.numpy_fmt import write_npz

    fixtures = __import__("pathlib").Path(__file__).resolve().parent.parent / "fixtures" / "paddle"
    for name in ("lstm.pdparams", "adam.pdopt", "writer/torch_model.pdparams"):
        shutil.copy(fixtures / name, tmp_path / name.replace("/", "_"))
    scalars = {"best": np.float64(0.1), "f32": np.float32(1 / 3), "half": np.float16(0.1), "ok": np.bool_(True),
               "n": np.int64(-7), "u": np.uint8(200)}
    torch.save({"state_dict": torch.nn.LSTM(2, 2).state_dict(), **scalars}, tmp_path / "np.ckpt")
    meta = {"ckptsurgeon.source": "ü-\u00e9 \U0001F600 \x00 inner", "rnn:lstm": '{"cell": "lstm"}'}
    with open(tmp_path / "ours.npz", "wb") as fh:
        write_npz({"w": np.arange(4, dtype=np.float32)}, fh, meta)
    assert _loaded(_modules_after("scan", str(tmp_path), "--summary"), ("numpy", "ml_dtypes")) == []
    for path in sorted(tmp_path.iterdir()):
        assert _loaded(_modules_after("ls", str(path), "--json"), ("numpy", "ml_dtypes")) == [], path.name
    import ckptsurgeon

    with np.load(tmp_path / "ours.npz") as npz:
        assert ckptsurgeon.open(str(tmp_path / "ours.npz")).metadata["__metadata__"] == json.loads(str(npz["__metadata__"])) == meta
    listed = ckptsurgeon.open(str(tmp_path / "np.ckpt")).metadata
    assert {k: listed[k] for k in scalars} == {k: v.item() for k, v in scalars.items()}
    assert all(type(listed[k]) is type(v.item()) for k, v in scalars.items())


def test_bfloat16_rows_resolve_ml_dtypes_when_first_seen(tmp_path):
    """ml_dtypes is imported only for a bf16/fp8 tensor, and then every table sees its rows."""
    import ml_dtypes
    import torch
    from safetensors import safe_open

    src, out = tmp_path / "w.safetensors", tmp_path / "o.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16), "b": np.ones(2, np.float32)}, str(src))
    assert "ml_dtypes" in _modules_after("extract", str(src), "-s", "**", "-o", str(out))
    with safe_open(str(out), "np") as f:
        a = f.get_tensor("a")
    assert a.dtype == ml_dtypes.bfloat16 and a.astype(np.float32).tolist() == list(range(6))

    pt = tmp_path / "w.pt"
    torch.save({"a": torch.arange(4).to(torch.float8_e4m3fn), "b": torch.arange(3, dtype=torch.bfloat16)}, pt)
    proc = subprocess.run([sys.executable, "-c", "from ckptsurgeon.cli import main; main()", "ls", "--json", str(pt)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [t["dtype"] for t in json.loads(proc.stdout)["tensors"]] == ["float8_e4m3fn", "bfloat16"]


def test_help_lists_every_command_without_importing_them():
    modules = _modules_after("--help")
    assert _loaded(modules, HEAVY + tuple(f"ckptsurgeon.cli.{row[0]}" for row in COMMANDS.values())) == []
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in COMMANDS:
        assert f"  {name} " in out


def test_the_command_table_matches_the_commands():
    for name, (_module, _attr, short) in COMMANDS.items():
        cmd = cli.get_command(None, name)
        assert cmd.name == name
        assert cmd.get_short_help_str(limit=1000) == short


def test_cli_merge_modes_are_the_recurrent_code_s():
    """The CLI lists the Keras merge modes itself (so `--help` imports no recurrent code): they must agree."""
    from ckptsurgeon.cli.rnn_options import _MERGE_MODES
    from ckptsurgeon.rnn.group import MERGE_MODES

    assert _MERGE_MODES == MERGE_MODES


def test_python_dash_m_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "ckptsurgeon", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("ckptsurgeon, version"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ckptsurgeon", "ls", "no/such/file.pt"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and proc.stderr.startswith("error: no/such/file.pt"), proc.stderr
