"""Orbax checkpoints written by the real orbax-checkpoint (fixtures/orbax, make_orbax_fixtures.py: orbax 0.12.8,
flax 0.12.8, jax 0.10.2): OCDBT + zarr v2 (orbax's default), zarr v3, and one zarr folder per array (no OCDBT).

Reading needs tensorstore (``ckptsurgeon[orbax]``, a test dependency); the arrays are compared with what orbax restored
(``*.expected.npz``) and with flax's own recorded forward pass.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import CheckpointNotFoundError, FormatError, MissingDependencyError, UnsafeCheckpointError
from ckptsurgeon.formats import detect

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "fixtures" / "orbax"
CASES = ["misc_ocdbt", "misc_zarr", "misc_zarr3", "rnn_ocdbt"]
HAVE_TS = importlib.util.find_spec("tensorstore") is not None


needs_ts = pytest.mark.skipif(not HAVE_TS and not os.environ.get("CI"),  # a test dependency: in CI, missing fails
                              reason="no tensorstore here (pip install 'ckptsurgeon[orbax]')")

# Run in an interpreter with tensorstore: list and read every tensor of a checkpoint, or extract --to torch.
_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ckptsurgeon
    req = json.loads(sys.argv[1])
    if req["action"] == "read":
        index = ckptsurgeon.open(req["path"])
        listing = [[p, index[p].dtype.name, list(index[p].shape), index[p].optimizer] for p in index]
        arrays = {f"a{i}": index[p].numpy() for i, p in enumerate(index)}
        arrays = {k: (v.view(np.uint16) if v.dtype.name == "bfloat16" else v) for k, v in arrays.items()}
        np.savez(req["out"], **arrays)
        json.dump({"listing": listing, "notes": index.notes, "format": index.format}, open(req["out"] + ".json", "w"))
    else:
        ckptsurgeon.extract(req["path"], req["out"], scope=req["scope"], to=req["to"], rename=req["rename"], force=True)
""")


def _run(req: dict) -> None:
    code = compile(_SCRIPT, "<orbax helper>", "exec")
    saved = sys.argv
    sys.argv = ["x", json.dumps(req)]
    try:
        exec(code, {"__name__": "__main__"})
    finally:
        sys.argv = saved


def _read(tmp_path: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    out = str(tmp_path / f"{name}.npz")
    _run({"action": "read", "path": str(FIXTURES / name), "out": out})
    info = json.loads(Path(out + ".json").read_text())
    with np.load(out) as z:
        arrays = {row[0]: z[f"a{i}"] for i, row in enumerate(info["listing"])}
    return info, arrays


@pytest.mark.parametrize("name", CASES)
def test_orbax_folders_are_detected_by_content(name):
    assert detect(str(FIXTURES / name)) == "orbax"


@needs_ts
@pytest.mark.parametrize("name", CASES)
def test_every_array_is_what_orbax_restores(tmp_path, name):
    info, arrays = _read(tmp_path, name)
    assert info["format"] == "orbax" and info["notes"] == []
    with np.load(FIXTURES / f"{name}.expected.npz") as z:
        expected = {k: z[k] for k in z}
    others = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    listing = {row[0]: row for row in info["listing"]}
    # every array orbax restored is listed, with its dtype and shape; orbax gives ``step`` back as a Python int
    assert set(listing) == {k.removesuffix("@bfloat16") for k in expected} | ({"step"} if "step" in others else set())
    for key, want in expected.items():
        path = key.removesuffix("@bfloat16")
        assert listing[path][1] == ("bfloat16" if key.endswith("@bfloat16") else want.dtype.name)
        assert tuple(listing[path][2]) == want.shape
        assert arrays[path].dtype == want.dtype and np.array_equal(arrays[path], want), path
    if "step" in others:
        assert listing["step"][2] == [] and int(arrays["step"]) == others["step"]
    assert [p for p, *_, opt in info["listing"] if opt] == (["opt_state/mu/w"] if name.startswith("misc") else [])


@needs_ts
def test_rnn_in_an_orbax_checkpoint_converts_to_what_flax_computed(tmp_path):
    torch = pytest.importorskip("torch")
    with np.load(FIXTURES / "rnn_ocdbt.forward.npz") as z:
        x, want = torch.from_numpy(z["x"]), {k: z[k] for k in ("bilstm", "gru")}
    modules = {"bilstm": torch.nn.LSTM(2, 3, bidirectional=True, batch_first=True),
               "gru": torch.nn.GRU(2, 3, batch_first=True)}
    for name, module in modules.items():
        out = str(tmp_path / f"{name}.npz")
        _run({"action": "extract", "path": str(FIXTURES / "rnn_ocdbt"), "out": out, "scope": [f"params/{name}/**"],
              "to": "torch", "rename": [f"params/{name}/="]})
        with np.load(out) as z:
            module.load_state_dict({k: torch.from_numpy(z[k]) for k in z if k != "__metadata__"}, strict=True)
        with torch.no_grad():
            y = module(x)[0].numpy()
        assert float(np.abs(y - want[name]).max()) <= 1e-5


def test_without_tensorstore_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorstore", None)  # import tensorstore -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'ckptsurgeon\[orbax\]'"):
        ckptsurgeon.open(str(FIXTURES / "misc_ocdbt"))
    res = CliRunner().invoke(cli, ["ls", str(FIXTURES / "misc_ocdbt")])
    assert res.exit_code != 0 and "ckptsurgeon[orbax]" in res.output
    # one zarr folder per array: listed from its JSON metadata; the data needs tensorstore
    index = ckptsurgeon.open(str(FIXTURES / "misc_zarr"))
    with np.load(FIXTURES / "misc_zarr.expected.npz") as z:
        assert {p: index[p].shape for p in index if p != "step"} == {k.removesuffix("@bfloat16"): z[k].shape for k in z}
    assert index["bf16"].dtype.name == "bfloat16" and index["mask"].dtype == np.bool_
    with pytest.raises(MissingDependencyError, match="tensorstore"):
        index["half"].numpy()
    res = CliRunner().invoke(cli, ["extract", str(FIXTURES / "misc_zarr"), "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code != 0 and "ckptsurgeon[orbax]" in res.output


def test_core_does_not_import_tensorstore():
    code = ("import sys, ckptsurgeon, ckptsurgeon.cli; from ckptsurgeon.formats import detect; "
            f"detect({str(FIXTURES / 'misc_ocdbt')!r}); assert 'tensorstore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_step_folder_names_its_items(tmp_path):
    step = tmp_path / "100"
    shutil.copytree(FIXTURES / "misc_zarr", step / "default")
    (step / "_CHECKPOINT_METADATA").write_text("{}")
    assert detect(str(step)) == "orbax"
    with pytest.raises(FormatError, match=r"holding the item\(s\) default: open one"):
        ckptsurgeon.open(str(step))


@pytest.mark.parametrize("keys", [[".."], ["a/..", "b"], ["x\\..\\y"]])
def test_array_names_cannot_leave_the_folder(tmp_path, keys):
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "misc_zarr", bad)
    meta = json.loads((bad / "_METADATA").read_text())
    entry = next(iter(meta["tree_metadata"].values()))
    entry["key_metadata"] = [{"key": k, "key_type": 2} for k in keys]
    (bad / "_METADATA").write_text(json.dumps(meta))
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint"):
        ckptsurgeon.open(str(bad))


def _hostile(tmp_path: Path, edit) -> Path:
    """misc_zarr (no OCDBT: listed without tensorstore) with its metadata edited."""
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "misc_zarr", bad)
    edit(bad)
    return bad


def _set_meta(text: str):
    return lambda bad: (bad / "_METADATA").write_text(text)


def _set_zarray(name: str, change: dict):
    def edit(bad: Path) -> None:
        meta = json.loads((bad / name / ".zarray").read_text())
        (bad / name / ".zarray").write_text(json.dumps({**meta, **change}))
    return edit


@pytest.mark.parametrize("edit,error,words", [
    (_set_meta("{not json"), FormatError, "not JSON"),
    (_set_meta("[]"), FormatError, "no tree_metadata"),
    (_set_meta('{"tree_metadata": {"x": {"key_metadata": [], "value_metadata": {}}}}'), FormatError,
     "not \\[key_metadata, value_metadata\\]"),
    (_set_zarray("half", {"shape": [-1]}), FormatError, "invalid shape"),
    (_set_zarray("half", {"shape": [1 << 62, 1 << 62]}), FormatError, "half"),
    (_set_zarray("half", {"dtype": "|O"}), UnsafeCheckpointError, "not a numeric dtype"),
    (_set_zarray("half", {"dtype": "<U8"}), UnsafeCheckpointError, "not a numeric dtype"),
    (_set_zarray("half", {"dtype": "nonsense"}), FormatError, "unknown dtype"),
    (lambda bad: (bad / "half" / ".zarray").unlink(), (FormatError, CheckpointNotFoundError), "half"),
])
def test_hostile_metadata_is_refused_naming_the_file(tmp_path, edit, error, words):
    bad = _hostile(tmp_path, edit)
    with pytest.raises(error, match=words) as info:
        ckptsurgeon.open(str(bad))
    assert str(bad) in str(info.value)
