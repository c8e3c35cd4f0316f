"""A selection that cuts a recurrent group's cells (its biases left out by --exclude or a narrow --scope) is refused
by extract --to: the cells recognized in it would compute a layer the source never had (no biases), and every target
would load it without a complaint. Leaving out a whole layer or direction stays what it was (that part computes
what it computed)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli

torch = pytest.importorskip("torch")


@pytest.fixture()
def lstm_file(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    return tmp_path / "m.pt", model.lstm


@pytest.mark.parametrize("args", [["--exclude", "lstm/bias_*"], ["--scope", "lstm/weight_*"],
                                  ["--exclude", "lstm/bias_hh_l1"]])
@pytest.mark.parametrize("target", ["torch", "keras", "paddle", "flax"])
def test_a_selection_without_the_biases_is_refused(lstm_file, tmp_path, args, target):
    path, _ = lstm_file
    out = tmp_path / "o.safetensors"
    res = CliRunner().invoke(cli, ["extract", str(path), *args, "--to", target, "-o", str(out), "--format", "safetensors"])
    assert res.exit_code == 1, res.output
    what = "tensors" if args[1] == "lstm/bias_hh_l1" else "biases"  # one bias of one layer: part of its cells
    assert f"the selection leaves out the {what} of lstm (nn.LSTM: lstm/bias_" in res.output, res.output
    assert "--scope 'lstm/*'" in res.output and not out.exists()


def test_leaving_out_a_whole_layer_keeps_converting_what_remains(lstm_file, tmp_path):
    """Layer 0 alone (both directions, biases and all) is what it computed: converted, and exact in torch."""
    path, module = lstm_file
    out = tmp_path / "o.safetensors"
    ckptsurgeon.extract(path, out, exclude=["lstm/*_l1*"], to="torch", rename=["lstm/="])
    one = torch.nn.LSTM(4, 6, bidirectional=True, batch_first=True)
    index = ckptsurgeon.open(out)
    one.load_state_dict({k: torch.from_numpy(index[k].numpy()) for k in index})
    x = torch.randn(2, 5, 4)
    first = torch.nn.LSTM(4, 6, bidirectional=True, batch_first=True)
    first.load_state_dict({k: v for k, v in module.state_dict().items() if "_l0" in k})
    with torch.no_grad():
        assert np.array_equal(one(x)[0].numpy(), first(x)[0].numpy())


def test_matrices_outside_groups_are_named_as_passed_through(tmp_path):
    """extract --to converts recurrent groups only: a torch Linear's (out, in) weight reaches a paddle/keras/flax
    output as stored, and the command says so, naming it (a square one would load transposed without a complaint)."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.lstm, model.fc = torch.nn.LSTM(4, 6), torch.nn.Linear(6, 6)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "m.pt"), "--to", "paddle", "-o", str(tmp_path / "o.pdparams")])
    assert res.exit_code == 0, res.output
    assert "note: 1 matrix outside recurrent groups passed through as stored" in res.output and "(fc/weight)" in res.output
    result = ckptsurgeon.extract(tmp_path / "m.pt", tmp_path / "o.safetensors", to="keras", exclude=["fc/*"])
    assert result.notes == []  # nothing passed through: nothing to say


def test_a_module_missing_one_bias_of_one_layer_is_refused_not_zero_filled(tmp_path):
    """A file whose 2-layer nn.GRU lacks bias_ih_l1 only: no cell runs with a zero for the bias that is not there."""
    gru = torch.nn.GRU(4, 6, num_layers=2)
    state = {f"gru.{k}": v for k, v in gru.state_dict().items() if k != "bias_ih_l1"}
    torch.save(state, tmp_path / "m.pt")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "m.pt"), "--to", "keras", "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and "its cells are incomplete (layer 1 has no bias_ih)" in res.output, res.output


def test_one_bias_in_every_cell_is_read_with_the_other_as_zeros_and_said(tmp_path):
    """A hand remap that writes bias_ih only, in every cell (docs/reference/graft-remap.md): read with bias_hh as
    zeros, and the listing says so."""
    lstm = torch.nn.LSTM(4, 6)
    torch.save({f"rnn.{k}": v for k, v in lstm.state_dict().items() if not k.startswith("bias_hh")}, tmp_path / "m.pt")
    res = CliRunner().invoke(cli, ["rnn", str(tmp_path / "m.pt")])
    assert res.exit_code == 0 and "bias_hh is read as zeros" in res.output, res.output
