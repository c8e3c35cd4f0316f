"""What the CLI prints besides results: progress bars only on a terminal, JSON one record per line."""
from __future__ import annotations

import json
import time

import numpy as np
from click.testing import CliRunner
from safetensors.numpy import save_file

from ckptsurgeon.cli import cli, common

from conftest import FIXTURES


def test_json_is_one_record_per_line_and_parses_to_the_same_object():
    res = CliRunner().invoke(cli, ["ls", str(FIXTURES / "torch" / "model.pt"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    lines = res.output.splitlines()
    rows = [line for line in lines if line.startswith('    {"path": ')]
    assert len(rows) == len(data["tensors"]) > 10
    assert [json.loads(row.rstrip(",")) for row in rows] == data["tensors"]
    nested = {"a": [1, {"b": [2, 3]}], "c": {"d": {"e": None}}, "f": [], "g": {}, "h": "x"}
    assert json.loads(common.json_text(nested)) == nested
    assert json.loads(common.json_text([{"x": 1}, [2]])) == [{"x": 1}, [2]]


class _Terminal:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_a_progress_bar_appears_on_a_terminal_after_the_delay(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(common.sys, "stderr", term)
    monkeypatch.setattr(common, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(common, "_REDRAW", 0.0)
    with common.byte_progress("extract") as progress:
        for _ in range(4):
            progress(1 << 20, 4 << 20)
            time.sleep(0.01)
    assert "extract" in term.text and "100%" in term.text and "4.0 MiB of 4.0 MiB" in term.text
    term.text = ""
    with common.byte_progress("extract", quiet=True) as progress:  # --json
        assert progress is None
    monkeypatch.setattr(common, "PROGRESS_DELAY", 60.0)
    with common.byte_progress("extract") as progress:  # work done before the delay: nothing drawn
        progress(4 << 20, 4 << 20)
    assert term.text == ""


def test_no_progress_bar_when_piped(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(common, "_REDRAW", 0.0)
    src = tmp_path / "w.safetensors"
    save_file({"w": np.zeros((512, 512), np.float32)}, str(src))
    res = CliRunner().invoke(cli, ["extract", str(src), "-s", "**", "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 0 and res.output.startswith("wrote 1 tensor (") and res.stderr == ""


def test_counts_are_singular_for_one(tmp_path):
    save_file({"bias": np.ones(1, np.float32)}, str(tmp_path / "one.safetensors"), metadata={"epoch": "3"})
    res = CliRunner().invoke(cli, ["ls", str(tmp_path / "one.safetensors")])
    assert "1 tensor, 1 parameter, 4 B (safetensors)" in res.output
    assert "1 metadata entry (see --json)" in res.output
    res = CliRunner().invoke(cli, ["tree", str(tmp_path / "one.safetensors")])
    assert "1 tensor, 1 parameter, 4 B" in res.output


def test_a_closed_pipe_is_not_a_failure(tmp_path):
    """`ckptsurgeon ls big | head -1`: the reader stops reading; the command exits 0, quietly (it exited 1)."""
    import subprocess
    import sys
    from pathlib import Path

    save_file({f"layer_{i}/w": np.zeros(2, np.float32) for i in range(20000)}, tmp_path / "big.safetensors")
    exe = Path(sys.executable).parent / "ckptsurgeon"
    proc = subprocess.run(["bash", "-c", f"'{exe}' ls '{tmp_path / 'big.safetensors'}' | head -1; echo ${{PIPESTATUS[0]}}"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("layer_") and lines[-1] == "0", proc.stdout[-300:]
    assert proc.stderr == "", proc.stderr


def test_an_existing_folder_as_output_and_rename_strings_in_the_api(tmp_path):
    import pytest

    import ckptsurgeon

    src = str(FIXTURES / "torch" / "model.pt")
    out = CliRunner().invoke(cli, ["extract", src, "-o", str(tmp_path)])
    assert out.exit_code == 1 and "is a directory; give a file name inside it" in out.output
    res = ckptsurgeon.extract(src, tmp_path / "x.safetensors", rename=["encoder/=enc/"])  # as the CLI takes it
    assert "enc.rnn.weight_ih_l0" in res.written
    with pytest.raises(ckptsurgeon.SelectionError, match="expected OLD=NEW"):
        ckptsurgeon.extract(src, tmp_path / "y.safetensors", rename=["encoder"])


def test_a_missing_checkpoint_is_a_file_not_found_error_in_python(tmp_path):
    import pytest

    import ckptsurgeon

    with pytest.raises(FileNotFoundError, match="no such file or directory") as caught:
        ckptsurgeon.open(tmp_path / "nope.pt")
    assert isinstance(caught.value, ckptsurgeon.FormatError)  # and still a CheckpointError, as the CLI expects
    out = CliRunner().invoke(cli, ["ls", str(tmp_path / "nope.pt")])
    assert out.exit_code == 1 and out.output.startswith("error: ") and "no such file" in out.output
