"""The CLI through click's CliRunner and through the installed console script."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from conftest import FIXTURES, run_cli

MODEL = str(FIXTURES / "torch" / "model.pt")
LEGACY = str(FIXTURES / "torch" / "legacy.pt")
LIGHTNING = str(FIXTURES / "torch" / "lightning.ckpt")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_ls_text_and_json():
    res = invoke("ls", MODEL)
    assert res.exit_code == 0
    assert "encoder/rnn/weight_ih_l0" in res.output and "64x8" in res.output and "float32" in res.output
    data = json.loads(invoke("ls", MODEL, "--json", "--scope", "encoder/*").output)
    assert data["format"] == "pytorch"
    assert {t["path"] for t in data["tensors"]} == {p for p in ckptsurgeon.open(MODEL) if p.startswith("encoder/")}
    first = data["tensors"][0]
    assert set(first) >= {"path", "key", "dtype", "shape", "nbytes", "optimizer"}
    assert first["dtype"] == "float32" and first["nbytes"] == np.prod(first["shape"]) * 4


def test_tree_counts_add_up():
    data = json.loads(invoke("tree", LIGHTNING, "--json").output)["tree"]
    index = ckptsurgeon.open(LIGHTNING)
    assert data["tensors"] == len(index)
    assert data["children"]["state_dict"]["parameters"] == sum(
        r.numel for p, r in index.items() if p.startswith("state_dict/"))
    text = invoke("tree", LIGHTNING, "--depth", "2").output
    assert "encoder/" in text and "weight_ih_l0" not in text


def test_extract_is_byte_identical_and_skips_optimizer(tmp_path):
    out = tmp_path / "enc.safetensors"
    res = invoke("extract", MODEL, "--scope", "encoder/*", "-o", str(out))
    assert res.exit_code == 0 and "wrote 16 tensors" in res.output
    src, got = ckptsurgeon.open(MODEL), ckptsurgeon.open(out)
    assert [r.key for r in got.values()] == [r.key for r in src.select("encoder/*").values()]
    for path, ref in got.items():
        a, b = ref.numpy(), src[path].numpy()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    out2 = tmp_path / "all.safetensors"
    res = invoke("extract", LIGHTNING, "-o", str(out2))
    assert "left out 69 optimizer tensors" in res.output
    assert not any(p.startswith("optimizer_states") for p in ckptsurgeon.open(out2))


def test_extract_legacy_to_npz(tmp_path):
    out = tmp_path / "all.npz"
    assert invoke("extract", LEGACY, "--scope", "**", "-o", str(out)).exit_code == 0
    src = ckptsurgeon.open(LEGACY)
    with np.load(out, allow_pickle=False) as z:
        assert list(z.files) == [r.key for r in src.values()]
        for ref in src.values():
            np.testing.assert_array_equal(z[ref.key], ref.numpy())


def test_extract_rename_like_assignment_map(tmp_path):
    out = tmp_path / "r.safetensors"
    invoke("extract", LIGHTNING, "-s", "state_dict/encoder", "--rename", "state_dict/encoder/=backbone/", "-o", str(out))
    keys = [r.key for r in ckptsurgeon.open(out).values()]
    assert keys[0] == "backbone.rnn.weight_ih_l0" and len(keys) == 16


def test_extract_to_pt_loads_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    out = tmp_path / "enc.pt"
    invoke("extract", MODEL, "-s", "encoder", "--rename", "encoder/rnn/=", "-o", str(out))
    lstm = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    lstm.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ref = torch.load(MODEL, weights_only=True)
    assert torch.equal(lstm.weight_hh_l1_reverse, ref["encoder.rnn.weight_hh_l1_reverse"])


def test_output_rules(tmp_path):
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep")
    res = CliRunner().invoke(cli, ["extract", MODEL, "-o", str(out)])
    assert res.exit_code == 1 and "--force" in res.output and out.read_bytes() == b"keep"
    assert CliRunner().invoke(cli, ["extract", MODEL, "-o", str(out), "--force"]).exit_code == 0
    res = CliRunner().invoke(cli, ["extract", str(out), "-o", str(out), "--force"])
    assert res.exit_code == 1 and "is an input" in res.output
    res = CliRunner().invoke(cli, ["extract", MODEL, "-o", str(tmp_path / "x.weird")])
    assert res.exit_code == 1 and "--format" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]  # no temporary left behind


def test_usage_errors_exit_2():
    assert CliRunner().invoke(cli, ["extract", MODEL]).exit_code == 2  # no -o
    assert CliRunner().invoke(cli, ["ls"]).exit_code == 2
    assert CliRunner().invoke(cli, ["extract", MODEL, "-o", "x.npz", "--rename", "nope"]).exit_code == 2


def test_scope_that_selects_nothing(tmp_path):
    res = CliRunner().invoke(cli, ["extract", MODEL, "-s", "encodr/*", "-o", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 1 and "closest scopes: encoder" in res.output


def _truncations(tmp_path):
    from safetensors.numpy import save_file

    files = {}
    for name, src in (("model.pt", MODEL), ("legacy.pt", LEGACY)):
        files[name] = open(src, "rb").read()
    st = tmp_path / "src.safetensors"
    save_file({"a": np.ones((64, 64), np.float32)}, str(st))
    files["st.safetensors"] = st.read_bytes()
    npz = tmp_path / "src.npz"
    np.savez(npz, a=np.ones((64, 64)))
    files["a.npz"] = npz.read_bytes()
    return files


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.97])
def test_truncated_and_corrupted_files_fail_with_one_line(tmp_path, cut):
    for name, data in _truncations(tmp_path).items():
        variants = {"trunc": data[: int(len(data) * cut)],
                    "garbled": data[:64] + bytes(b ^ 0x5A for b in data[64:int(len(data) * cut)]) + data[int(len(data) * cut):]}
        for kind, blob in variants.items():
            path = tmp_path / f"{kind}-{name}"
            path.write_bytes(blob)
            out = tmp_path / f"{kind}-{name}.out.safetensors"
            res = CliRunner().invoke(cli, ["extract", str(path), "-o", str(out)])
            if res.exit_code == 0:  # a garbled region the format does not cover (e.g. unused padding)
                assert kind == "garbled"
                continue
            assert res.exit_code == 1, (name, kind, res.output)
            lines = res.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], (name, kind, lines)
            assert not out.exists()


def test_console_script_and_help_examples():
    proc = run_cli("ls", MODEL)
    assert proc.returncode == 0 and "encoder/rnn/weight_ih_l0" in proc.stdout
    proc = run_cli("ls", "/nonexistent.pt")
    assert proc.returncode == 1 and proc.stderr.strip() == "error: /nonexistent.pt: no such file or directory"
    for command in ("ls", "tree", "extract"):
        assert "Examples:" in run_cli(command, "--help").stdout


def test_core_commands_never_import_torch(tmp_path):
    code = (
        "import sys; from click.testing import CliRunner; from ckptsurgeon.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['ls', {MODEL!r}]); assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(cli, ['tree', {LIGHTNING!r}]); assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(cli, ['extract', {LEGACY!r}, '-o', {str(tmp_path / 'o.safetensors')!r}]); assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_json_output_streams_generators_exactly_as_lists(capsys):
    """``ls --json`` hands its tensors over as a generator (one dict alive at a time): the text must be what
    the same list gives, empty generators included."""
    from ckptsurgeon.cli.common import emit_json, json_text

    rows = [{"path": f"a/{i}", "shape": [i, 2], "aliases": []} for i in range(3)]
    for value in (rows, []):
        expected = json_text({"format": "x", "tensors": value, "metadata": {"k": {"deep": [1]}}})
        emit_json({"format": "x", "tensors": (r for r in value), "metadata": {"k": {"deep": [1]}}})
        assert capsys.readouterr().out == expected + "\n"
        assert json.loads(expected)["tensors"] == value
