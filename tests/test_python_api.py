"""The Python API covers every reporting command: the same data as ``--json``, typed; errors Python code can catch
by their built-in kind; ``rename``/``map`` in one form everywhere; docstring examples that run (doctest)."""
from __future__ import annotations

import dataclasses
import doctest
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from conftest import FIXTURES

TF1 = FIXTURES / "tensorflow" / "tf1_lstmcell"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding ``model.pt`` (PyTorch: a bidirectional 2-layer LSTM and a GRU), the TF1 checkpoint
    ``model.ckpt`` (a hand-built LSTM cell) and a lock of ``model.pt``: what the docstring examples name."""
    shutil.copy(FIXTURES / "torch" / "model.pt", tmp_path / "model.pt")
    for f in TF1.glob("model.ckpt.*"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    ckptsurgeon.layout("model.pt", "model.layout.json")
    return tmp_path


# ---- docstring examples ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, at_least", [("ckptsurgeon", 6), ("ckptsurgeon.api", 7), ("ckptsurgeon.api_checks", 25)])
def test_docstring_examples_run(workdir, module, at_least):
    import importlib

    mod = sys.modules["ckptsurgeon"] if module == "ckptsurgeon" else importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0
    assert result.attempted >= at_least  # the examples ran, not only were found


# ---- the same data as --json ------------------------------------------------------------------------------------

def _cli_json(*args: str):
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def test_stats_is_stats_json(workdir):
    result = ckptsurgeon.stats("model.pt", scope="encoder")
    assert result.to_dict() == _cli_json("stats", "model.pt", "--scope", "encoder", "--json")
    first = result.tensors[0]
    assert (first.path, first.shape, first.dtype) == ("encoder/rnn/weight_ih_l0", (64, 8), "float32")
    values = ckptsurgeon.open("model.pt")["encoder/rnn/weight_ih_l0"].numpy()
    assert first.mean == pytest.approx(float(values.mean())) and first.max == pytest.approx(float(values.max()))
    assert [(g.scope, g.kind) for g in result.groups] == [("encoder/rnn", "lstm")]


def test_layout_is_the_lock_the_cli_writes(workdir):
    lock = ckptsurgeon.layout("model.pt", "api.layout.json", hash=True)
    res = CliRunner().invoke(cli, ["layout", "model.pt", "--hash", "-o", "cli.layout.json"], catch_exceptions=False)
    assert res.exit_code == 0
    assert (workdir / "api.layout.json").read_bytes() == (workdir / "cli.layout.json").read_bytes()
    assert lock.to_dict() == json.loads((workdir / "cli.layout.json").read_text())
    assert lock.path == "api.layout.json" and len(lock.tensors) == len(ckptsurgeon.open("model.pt"))
    import hashlib

    arr = ckptsurgeon.open("model.pt")["head/bias"].numpy()
    assert next(t for t in lock.tensors if t.path == "head/bias").sha256 == hashlib.sha256(arr.tobytes()).hexdigest()


def test_validate_is_validate_json(workdir):
    ok = ckptsurgeon.validate("model.pt", layout="model.layout.json")
    assert ok.to_dict() == _cli_json("validate", "model.pt", "--layout", "model.layout.json", "--json")
    assert ok.ok and not ok.findings and ok.checks["failed"] == 0 and ok.checks["passed"] > 0
    bad = ckptsurgeon.validate("model.pt", layout="model.layout.json", exclude="head")
    assert bad.to_dict() == _cli_json("validate", "model.pt", "--layout", "model.layout.json", "--exclude", "head", "--json")
    assert not bad.ok and {(f.kind, f.path) for f in bad.findings} == {("missing", "head/weight"), ("missing", "head/bias")}
    across = ckptsurgeon.validate("model.pt", like="model.ckpt")
    assert across.to_dict() == _cli_json("validate", "model.pt", "--like", "model.ckpt", "--json")
    # a lock as a Layout result or its dict checks the same
    lock = ckptsurgeon.layout("model.pt")
    assert ckptsurgeon.validate("model.pt", layout=lock.to_dict(), exclude="head").findings == bad.findings
    assert ckptsurgeon.validate("model.pt", layout=lock).ok


def test_diff_is_diff_json(workdir):
    weights = {k: v.numpy() for k, v in ckptsurgeon.open("model.pt").items()}
    weights["head/bias"] = weights["head/bias"] + 1
    ckptsurgeon.save(weights, "changed.safetensors")
    result = ckptsurgeon.diff("model.pt", "changed.safetensors")
    assert result.to_dict() == _cli_json("diff", "model.pt", "changed.safetensors", "--json")
    assert not result.identical and result.verdict == "different"
    assert [v["path"] for v in result.values] == ["head/bias"] and result.values[0]["max_abs"] == pytest.approx(1.0)


def test_scan_is_scan_json(workdir):
    (workdir / "evil.pkl").write_bytes(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    result = ckptsurgeon.scan(["model.pt", "evil.pkl"])
    assert result.to_dict() == _cli_json("scan", "model.pt", "evil.pkl", "--json")
    assert result.failed and not result.ok and [f.level for f in result.files] == ["clean", "unsafe"]
    assert result.files[1].findings[0].kind == "global" and "posix.system" in result.files[1].findings[0].message
    assert result.summary["files"] == 2 and result.summary["unsafe"] == 1
    assert not ckptsurgeon.scan("model.pt").failed
    folder = ckptsurgeon.scan(workdir)  # a folder: recursively, each file with its own verdict
    assert folder.to_dict() == _cli_json("scan", str(workdir), "--json")
    verdicts = {row["file"].rsplit("/", 1)[-1]: row["level"] for row in folder.files[0].files}
    assert verdicts["evil.pkl"] == "unsafe" and verdicts["model.pt"] == "clean" and folder.failed
    with pytest.raises(ValueError, match="fail_on"):
        ckptsurgeon.scan("model.pt", fail_on="clean")


def test_rnn_and_verify_are_their_json(workdir):
    groups = ckptsurgeon.rnn("model.pt")
    assert groups.to_dict()["groups"] == _cli_json("rnn", "model.pt", "--json")
    lstm = groups.groups[0]
    assert (lstm.scope, lstm.kind, lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.directions) == \
        ("encoder/rnn", "lstm", 8, 16, 2, 2)
    ckptsurgeon.extract("model.ckpt", "cell.safetensors", scope="LSTMcell", to="torch-cell", rename="LSTMcell/=")
    checked = ckptsurgeon.verify("model.ckpt", "cell.safetensors", scope="LSTMcell")
    assert checked.to_dict()["pairs"] == _cli_json("verify", "model.ckpt", "cell.safetensors", "--scope", "LSTMcell", "--json")
    assert checked.ok and checked.pairs[0].max_abs_diff <= 1e-5


def test_results_are_frozen_and_to_dict_is_a_copy(workdir):
    result = ckptsurgeon.rnn("model.pt")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.groups = ()  # type: ignore[misc]
    result.to_dict()["groups"].clear()
    assert len(result.to_dict()["groups"]) == 2


def test_an_opened_index_is_taken_too(workdir):
    index = ckptsurgeon.open("model.pt")
    assert ckptsurgeon.rnn(index).to_dict() == ckptsurgeon.rnn("model.pt").to_dict()
    assert ckptsurgeon.validate(index, layout="model.layout.json").ok


# ---- errors Python code can catch by kind ---------------------------------------------------------------------------

def test_missing_paths_are_file_not_found(workdir):
    for call in (lambda: ckptsurgeon.open("nope.pt"), lambda: ckptsurgeon.stats("nope.pt"),
                 lambda: ckptsurgeon.scan(["model.pt", "nope.pt"]),
                 lambda: ckptsurgeon.validate("model.pt", layout="nope.layout.json")):
        with pytest.raises(FileNotFoundError, match="nope") as info:
            call()
        assert isinstance(info.value, ckptsurgeon.CheckpointNotFoundError)
        assert isinstance(info.value, ckptsurgeon.FormatError)  # the CLI still prints one line


def test_a_folder_that_holds_no_checkpoint_is_a_directory_error(workdir):
    (workdir / "empty").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory") as info:
        ckptsurgeon.open("empty")
    assert isinstance(info.value, ckptsurgeon.CheckpointIsADirectoryError)
    assert isinstance(info.value, ckptsurgeon.FormatError)
    with pytest.raises(IsADirectoryError):
        ckptsurgeon.validate("model.pt", layout="empty")
    res = CliRunner().invoke(cli, ["ls", "empty"])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_index_lookup_is_a_key_error_naming_the_closest_paths(workdir):
    index = ckptsurgeon.open("model.pt")
    with pytest.raises(KeyError) as info:
        index["encoder/rnn/weight_hh_l9"]
    assert isinstance(info.value, ckptsurgeon.TensorNotFoundError) and isinstance(info.value, ckptsurgeon.SelectionError)
    message = str(info.value)
    assert message.startswith("model.pt: no tensor 'encoder/rnn/weight_hh_l9'; closest: encoder/rnn/weight_hh_l1")
    with pytest.raises(KeyError, match="key of the tensor at scope path 'encoder/rnn/weight_ih_l0'"):
        index["encoder.rnn.weight_ih_l0"]
    assert index.get("encoder/rnn/weight_hh_l9") is None and "encoder/rnn/weight_hh_l9" not in index
    assert index.get("head/bias") is index["head/bias"]
    res = CliRunner().invoke(cli, ["rnn", "model.pt", "--json"])
    assert res.exit_code == 0


def test_validate_takes_exactly_one_reference(workdir):
    with pytest.raises(TypeError, match="exactly one"):
        ckptsurgeon.validate("model.pt")
    with pytest.raises(TypeError, match="exactly one"):
        ckptsurgeon.validate("model.pt", layout="model.layout.json", like="model.pt")


# ---- rename and map: "A=B" strings or (a, b) pairs, everywhere ------------------------------------------------------

def test_rename_and_map_take_strings_and_pairs(workdir):
    as_strings = ckptsurgeon.extract("model.pt", "s.safetensors", scope="encoder", rename=["encoder/rnn=enc"])
    as_pairs = ckptsurgeon.extract("model.pt", "p.safetensors", scope="encoder", rename=[("encoder/rnn", "enc")])
    assert as_strings.written == as_pairs.written and as_strings.written[0] == "enc.weight_ih_l0"
    mapped_s = ckptsurgeon.extract("model.pt", "ms.safetensors", scope="head", map=["head/*=out/*"])
    mapped_p = ckptsurgeon.extract("model.pt", "mp.safetensors", scope="head", map=[("head/*", "out/*")])
    assert mapped_s.written == mapped_p.written == ["out/weight", "out/bias"]
    out = ckptsurgeon.open("mp.safetensors")
    np.testing.assert_array_equal(out["out/bias"].numpy(), ckptsurgeon.open("model.pt")["head/bias"].numpy())
    for bad in ([("a=b", "c")], [("only-one",)], [3]):
        with pytest.raises(ckptsurgeon.SelectionError, match="map"):
            ckptsurgeon.extract("model.pt", "x.safetensors", map=bad)


# ---- keras.load_into speaks to a Python caller --------------------------------------------------------------------

def test_keras_load_into_errors_name_the_model_and_map_argument(tmp_path):
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    from ckptsurgeon.keras import load_into

    model = keras.Sequential([keras.Input((6, 5)), keras.layers.Bidirectional(keras.layers.LSTM(3), name="bi")],
                             name="small")
    torch.manual_seed(8)
    src = tmp_path / "lstm.pt"
    torch.save({"rnn." + k: v for k, v in torch.nn.LSTM(5, 4, bidirectional=True).state_dict().items()}, src)
    for kwargs in ({"map": [("rnn", "bi")]}, {"map": "rnn=missing"}, {"scope": "rnn/weight_ih_l0"}):
        with pytest.raises(ckptsurgeon.SelectionError) as info:
            load_into(model, src, **kwargs)
        message = str(info.value)
        assert ".keras" not in message and "ckptsurgeon-" not in message and "--" not in message, message
    assert "does not fit model group 'bi'" in str(_error(load_into, model, src, map=[("rnn", "bi")]))
    assert "pass map=['SRC=DST']" in str(_error(load_into, model, src, scope="rnn/weight_ih_l0"))


def _error(fn, *args, **kwargs) -> Exception:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error")


# ---- the package stays light; ``ckptsurgeon.rnn`` is the subpackage, and called, the command ------------------------

def test_import_stays_light_and_rnn_is_the_callable_subpackage(workdir):
    code = ("import sys, ckptsurgeon\n"
            "heavy = [m for m in sys.modules if m.startswith(('ckptsurgeon.check', 'ckptsurgeon.rnn', 'torch', 'keras'))]\n"
            "assert not heavy, heavy\n"
            "print([g.scope for g in ckptsurgeon.rnn('model.pt').groups])\n"
            "import ckptsurgeon.rnn as package\n"
            "from ckptsurgeon.rnn.group import RecurrentGroup\n"
            "assert package is sys.modules['ckptsurgeon.rnn'] is ckptsurgeon.rnn\n"
            "assert ckptsurgeon.rnn.recognize is sys.modules['ckptsurgeon.rnn.recognize'].recognize\n"
            "assert sorted(set(ckptsurgeon.__all__) - set(dir(ckptsurgeon))) == []\n"
            "print([getattr(ckptsurgeon, n).__module__ for n in ('stats', 'Layout', 'TensorNotFoundError', 'graft')])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["['encoder/rnn', 'decoder']",
                                           "['ckptsurgeon.api_checks', 'ckptsurgeon.results', 'ckptsurgeon.errors', "
                                           "'ckptsurgeon.graft']"]
