"""``validate --allow-missing`` covers recurrent groups, and groups pair by meaning across formats (issue 10, item 10)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli

torch = pytest.importorskip("torch")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    enc, dec, head = torch.nn.LSTM(5, 4), torch.nn.GRU(4, 6), torch.nn.Linear(6, 2)
    full = {f"{n}.{k}": v for n, m in (("enc", enc), ("dec", dec), ("head", head)) for k, v in m.state_dict().items()}
    torch.save(full, tmp_path / "full.pt")
    torch.save({k: v for k, v in full.items() if not k.startswith("dec.")}, tmp_path / "no_dec.pt")
    return tmp_path, enc


def test_without_allow_missing_the_group_and_its_tensors_are_reported(files):
    tmp, _ = files
    res = run("validate", tmp / "no_dec.pt", "--like", tmp / "full.pt", "--json")
    findings = json.loads(res.output)["findings"]
    assert res.exit_code == 1
    assert sorted(f["kind"] for f in findings) == ["missing"] * 4 + ["recurrent"]
    assert any(f["kind"] == "recurrent" and "'dec' (gru) not found" in f["message"] for f in findings)


@pytest.mark.parametrize("pattern", ["dec/**", "dec", "dec/*", "**/bias_*,**/weight_*"])
def test_allow_missing_covers_the_recurrent_group(files, pattern):
    tmp, _ = files
    args = [a for p in pattern.split(",") for a in ("--allow-missing", p)]
    res = run("validate", tmp / "no_dec.pt", "--like", tmp / "full.pt", *args)
    assert res.exit_code == 0, res.output
    lock = tmp / "full.layout.json"
    assert run("layout", tmp / "full.pt", "-o", lock).exit_code == 0
    assert run("validate", tmp / "no_dec.pt", "--layout", lock, *args).exit_code == 0
    layout = json.loads(lock.read_text())  # a lock written before groups listed their members
    for g in layout["groups"]:
        del g["members"]
    lock.write_text(json.dumps(layout))
    assert run("validate", tmp / "no_dec.pt", "--layout", lock, *args).exit_code == 0


def test_allow_missing_of_part_of_a_group_still_reports_the_group(files):
    tmp, _ = files
    res = run("validate", tmp / "no_dec.pt", "--like", tmp / "full.pt", "--allow-missing", "dec/weight_*", "--json")
    findings = json.loads(res.output)["findings"]
    assert res.exit_code == 1 and sorted(f["kind"] for f in findings) == ["missing", "missing", "recurrent"]


def test_across_formats_groups_pair_by_meaning_and_allow_missing(files):
    keras = pytest.importorskip("keras")
    tmp, enc = files
    model = keras.Sequential([keras.Input((3, 5)), keras.layers.LSTM(4, name="encoder")])
    model.save(tmp / "enc.keras")
    res = run("validate", tmp / "enc.keras", "--like", tmp / "full.pt", "--json")
    findings = json.loads(res.output)["findings"]
    assert res.exit_code == 1 and [f["message"] for f in findings] == ["recurrent group 'dec' (gru) not found"]
    assert run("validate", tmp / "enc.keras", "--like", tmp / "full.pt", "--allow-missing", "dec/**").exit_code == 0
    # the Keras LSTM pairs with enc by kind and sizes although dec comes first in another file order
    torch.save({f"dec.{k}": v for k, v in torch.nn.GRU(4, 6).state_dict().items()}
               | {f"enc.{k}": v for k, v in enc.state_dict().items()}, tmp / "dec_first.pt")
    assert run("validate", tmp / "enc.keras", "--like", tmp / "dec_first.pt", "--allow-missing", "dec").exit_code == 0


def test_a_training_checkpoint_validates_against_weights_and_optimizer_state_on_request(tmp_path):
    """A real Lightning-style training checkpoint (model + Adam state): its optimizer tensors are no 'missing'
    findings for the weights-only file, unless --include-optimizer asks to compare them too."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4)
    opt = torch.optim.Adam(lstm.parameters())
    lstm(torch.randn(2, 1, 3))[0].sum().backward()
    opt.step()
    torch.save({"state_dict": lstm.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 1}, tmp_path / "train.ckpt")
    torch.save({"state_dict": lstm.state_dict()}, tmp_path / "weights.pt")
    assert run("validate", tmp_path / "weights.pt", "--like", tmp_path / "train.ckpt").exit_code == 0
    res = run("validate", tmp_path / "weights.pt", "--like", tmp_path / "train.ckpt", "--include-optimizer",
              "--json")
    assert res.exit_code == 1
    missing = [f["path"] for f in json.loads(res.output)["findings"] if f["kind"] == "missing"]
    assert missing and all(p.startswith("optimizer_states/") for p in missing)
