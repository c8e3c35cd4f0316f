"""What a refused conversion says: the reason and the way out, not only a number."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("target", ["keras", "flax"])
def test_a_half_precision_group_whose_biases_are_summed_says_why_and_what_to_do(tmp_path, target):
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(8, 16).half()
    torch.save(model.state_dict(), tmp_path / "h.pt")
    out = tmp_path / "o.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "h.pt"), "--to", target, "-o", str(out), "--format", "safetensors"])
    assert res.exit_code == 1 and "converted outputs differ by" in res.output, res.output
    assert "float16/bfloat16" in res.output and "raise --atol (1e-3)" in res.output and not out.exists()
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "h.pt"), "--to", target, "--atol", "1e-3", "-o", str(out),
                                   "--format", "safetensors"])
    assert res.exit_code == 0, res.output  # the way out it names works
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "h.pt"), "--to", "torch", "-o", str(tmp_path / "t.safetensors")])
    assert res.exit_code == 0, res.output  # both biases kept: exact
