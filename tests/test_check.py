"""layout / validate / diff / stats against real frameworks' checkpoints and initializers."""
from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.check.initializers import guess_initializer
from ckptsurgeon.check.stats import checkpoint_stats
from ckptsurgeon.cli import cli
from conftest import FIXTURES, ROOT

torch = pytest.importorskip("torch")
TF = FIXTURES / "tensorflow"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _gates(stats, part):
    g = stats["groups"][0]
    return {r["gate"]: r["init"] for r in g["gates"] if r["part"] == part and r["layer"] == 0 and r["direction"] == "forward"}


# ---- stats / initializers -------------------------------------------------------------------

def test_fresh_torch_lstm_every_gate(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "lstm.pt"
    torch.save(torch.nn.LSTM(8, 16).state_dict(), path)
    stats = checkpoint_stats(ckptsurgeon.open(path))
    for part in ("input kernel", "recurrent kernel", "bias", "recurrent bias"):
        assert set(_gates(stats, part).values()) == {"PyTorch default U(+-1/sqrt(H))"}, part


def test_fresh_torch_gru_and_linear(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "m.pt"
    torch.save({"gru." + k: v for k, v in torch.nn.GRU(6, 32).state_dict().items()}
               | {"lin." + k: v for k, v in torch.nn.Linear(64, 32).state_dict().items()}, path)
    stats = checkpoint_stats(ckptsurgeon.open(path))
    assert set(_gates(stats, "input kernel").values()) == {"PyTorch default U(+-1/sqrt(H))"}
    tensors = {t["path"]: t["init"] for t in stats["tensors"]}
    assert tensors["lin/weight"] == "PyTorch nn.Linear default U(+-1/sqrt(fan_in))"


def test_fresh_keras_lstm_every_gate(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 8)), keras.layers.LSTM(16, name="enc")])
    model.save_weights(tmp_path / "k.weights.h5")
    stats = checkpoint_stats(ckptsurgeon.open(tmp_path / "k.weights.h5"))
    assert set(_gates(stats, "input kernel").values()) == {"Glorot/Xavier uniform"}
    assert set(_gates(stats, "recurrent kernel").values()) == {"orthogonal (gain 1)"}
    assert _gates(stats, "bias") == {"input": "zeros", "forget": "constant 1 (Keras unit_forget_bias)",
                                     "cell": "zeros", "output": "zeros"}


def test_hand_built_tf1_lstmcell_every_gate():
    stats = checkpoint_stats(ckptsurgeon.open(TF / "tf1_lstmcell" / "model_init.ckpt"))  # as TF initialized it
    for part in ("input kernel", "recurrent kernel"):
        assert set(_gates(stats, part).values()) == {"truncated normal (mean 0, stddev 0.1)"}, part
    assert set(_gates(stats, "bias").values()) == {"zeros"}
    tf1 = checkpoint_stats(ckptsurgeon.open(TF / "tf1_cells").select("bilstm"))
    # random_uniform_initializer(-0.5, 0.5): 48 values cannot tell it from TF1's default Glorot bound 0.511,
    # so both are given
    assert set(_gates(tf1, "input kernel").values()) == {"one of: Glorot/Xavier uniform, uniform(+-0.5)"}


@pytest.mark.parametrize("init,name", [
    (lambda w: torch.nn.init.xavier_uniform_(w), "Glorot/Xavier uniform"),
    (lambda w: torch.nn.init.xavier_normal_(w), "Glorot/Xavier normal"),
    (lambda w: torch.nn.init.kaiming_uniform_(w), "He/Kaiming uniform"),
    (lambda w: torch.nn.init.kaiming_normal_(w), "He/Kaiming normal"),
    (lambda w: torch.nn.init.orthogonal_(w), "orthogonal (gain 1)"),
    (lambda w: torch.nn.init.trunc_normal_(w, 0.0, 0.02, -0.04, 0.04), "truncated normal (mean 0, stddev 0.02)"),
    (lambda w: torch.nn.init.zeros_(w), "zeros"),
])
def test_torch_initializers(init, name):
    torch.manual_seed(2)
    w = torch.empty(96, 48)
    init(w)
    assert guess_initializer(w.numpy(), fans=[(48, 96)]).name == name


@pytest.mark.parametrize("cls,name", [("GlorotUniform", "Glorot/Xavier uniform"),
                                      ("GlorotNormal", "Glorot/Xavier normal (Keras, truncated)"),
                                      ("HeNormal", "He/Kaiming normal (Keras, truncated)"),
                                      ("HeUniform", "He/Kaiming uniform"), ("Orthogonal", "orthogonal (gain 1)")])
def test_keras_initializers(cls, name):
    keras = pytest.importorskip("keras")
    w = keras.ops.convert_to_numpy(getattr(keras.initializers, cls)(seed=3)((48, 96)))
    assert guess_initializer(w, fans=[(48, 96)]).name == name


def test_trained_weights_are_called_trained(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples" / "reuse_lstm.py"), "pretrain", str(tmp_path / "p.pt")],
                   check=True, capture_output=True, timeout=120)
    stats = checkpoint_stats(ckptsurgeon.open(tmp_path / "p.pt"))
    inits = {t["path"]: t["init"] for t in stats["tensors"]}
    assert inits["encoder/rnn/weight_ih_l0"] == "not an initializer (trained)"
    assert inits["encoder/rnn/weight_hh_l0"] == "not an initializer (trained)"
    # The classifier reads only the last step, so layer 1's reverse recurrence never gets a gradient:
    assert inits["encoder/rnn/weight_hh_l1_reverse"] == "PyTorch default U(+-1/sqrt(H))"


def test_identical_groups_and_plot(tmp_path):
    torch.manual_seed(4)
    lstm = torch.nn.LSTM(4, 8)
    path = tmp_path / "two.pt"
    torch.save({"a." + k: v for k, v in lstm.state_dict().items()} | {"b." + k: v.clone() for k, v in lstm.state_dict().items()}, path)
    png = tmp_path / "gates.png"
    res = run("stats", path, "--plot", png)
    assert res.exit_code == 0, res.output
    assert "identical values: a == b" in res.output
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 400
    data = json.loads(run("stats", path, "--json").output)
    assert data["identical_groups"] == [["a", "b"]] and data["groups"][0]["gates"][0]["orthogonality"] is not None


# ---- layout / validate --------------------------------------------------------------------------

@pytest.fixture()
def drifted(tmp_path):
    """The reference model, and a copy with one renamed tensor, one float16 tensor and one NaN."""
    from safetensors.torch import load_file, save_file

    ref = tmp_path / "ref.safetensors"
    ckptsurgeon.extract(FIXTURES / "torch" / "model.pt", ref)
    tensors = load_file(str(ref))
    tensors["head.weight_renamed"] = tensors.pop("head.weight")
    tensors["head.bias"] = tensors["head.bias"].half()
    tensors["decoder.weight_ih_l0"][0, 0] = float("nan")
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad))
    return ref, bad


@pytest.mark.parametrize("fmt", ["text", "json", "github", "junit"])
def test_done_when_three_findings_in_every_format(drifted, tmp_path, fmt):
    ref, bad = drifted
    out = tmp_path / f"report.{fmt}"
    res = run("validate", bad, "--like", ref, "--check-finite", "--report", f"{fmt}={out}")
    assert res.exit_code == 1
    text = out.read_text()
    if fmt == "json":
        kinds = sorted(f["kind"] for f in json.loads(text)["findings"])
        assert kinds == ["dtype", "missing", "nonfinite", "unexpected"]  # the rename is one missing + one unexpected
    elif fmt == "junit":
        root = ET.fromstring(text)
        failed = {case.get("name") for case in root.iter("testcase") if case.find("failure") is not None}
        # one test case per tensor and check: the rename fails "present" twice (missing + unexpected)
        assert failed == {"head/weight present", "head/weight_renamed present", "head/bias dtype",
                          "decoder/weight_ih_l0 nonfinite"} and root.get("failures") == "4"
    elif fmt == "github":
        errors = [line for line in text.splitlines() if line.startswith("::error")]
        assert len(errors) == 4 and any("head.weight" in e or "head/weight" in e for e in errors)
    else:
        assert "4 finding(s)" in text and "NaN" in text and "float16" in text


def test_layout_lock_every_finding_kind(tmp_path):
    src = FIXTURES / "torch" / "model.pt"
    lock = tmp_path / "model.layout.json"
    assert run("layout", src, "--hash", "-o", lock).exit_code == 0
    assert run("validate", src, "--layout", lock, "--hash").exit_code == 0
    layout = json.loads(lock.read_text())
    layout["tensors"][0]["shape"] = [1, 2]
    layout["tensors"][1]["sha256"] = "0" * 64
    layout["groups"][0]["hidden_size"] = 99
    layout["groups"][1]["family"] = "reset-before"
    lock.write_text(json.dumps(layout))
    res = run("validate", src, "--layout", lock, "--hash", "--json")
    kinds = sorted(f["kind"] for f in json.loads(res.output)["findings"])
    assert res.exit_code == 1 and kinds == ["hash", "recurrent", "recurrent", "shape"]
    assert run("validate", src, "--layout", lock, "--like", src).exit_code == 2
    res = run("validate", src)  # no lock given and none beside it (model.layout.json): an error naming the fix
    assert res.exit_code == 1 and "no layout lock beside it" in res.output and "ckptsurgeon layout" in res.output


def test_allow_extra_and_missing(drifted):
    ref, bad = drifted
    res = run("validate", bad, "--like", ref, "--allow-extra", "--allow-missing", "head/weight", "--json")
    kinds = sorted(f["kind"] for f in json.loads(res.output)["findings"])
    assert kinds == ["dtype"]


def test_like_across_formats_compares_groups_by_meaning(tmp_path):
    keras = pytest.importorskip("keras")
    torch.manual_seed(5)
    lstm = torch.nn.LSTM(5, 4, bidirectional=True, batch_first=True)
    ref = tmp_path / "ref.pt"
    torch.save({"rnn." + k: v for k, v in lstm.state_dict().items()}, ref)
    ok = keras.Sequential([keras.Input((6, 5)), keras.layers.Bidirectional(keras.layers.LSTM(4), name="bi")])
    ok.save(tmp_path / "ok.keras")
    wrong = keras.Sequential([keras.Input((6, 5)), keras.layers.Bidirectional(keras.layers.GRU(4), name="bi")])
    wrong.save(tmp_path / "wrong.keras")
    assert run("validate", tmp_path / "ok.keras", "--like", ref).exit_code == 0
    res = run("validate", tmp_path / "wrong.keras", "--like", ref, "--json")
    findings = json.loads(res.output)["findings"]
    assert res.exit_code == 1 and [f["kind"] for f in findings] == ["recurrent"] and "kind 'gru'" in findings[0]["message"]


# ---- diff ------------------------------------------------------------------------------------

def test_diff_same_and_across_formats(tmp_path, drifted):
    ref, bad = drifted
    res = run("diff", ref, bad, "--json")
    data = json.loads(res.output)
    assert res.exit_code == 1
    assert data["only_in_a"] == ["head/weight"] and data["only_in_b"] == ["head/weight_renamed"]
    assert data["changed"][0]["path"] == "head/bias"
    converted = tmp_path / "conv.safetensors"
    run("extract", TF / "tf1_lstmcell", "-s", "LSTMcell", "--to", "torch-cell", "-o", converted)
    res = run("diff", TF / "tf1_lstmcell" / "model.ckpt", converted, "-s", "LSTMcell", "--exclude", "**/Adam*", "--atol", "1e-7")
    assert res.exit_code == 0 and "identical" in res.output
    tensors = {r.key: r.numpy() for r in ckptsurgeon.open(converted).values()}
    tensors["LSTMcell.weight_hh"][4:8] += 0.5  # the forget gate's recurrent rows
    ckptsurgeon.save(tensors, tmp_path / "edited.safetensors")
    res = run("diff", TF / "tf1_lstmcell" / "model.ckpt", tmp_path / "edited.safetensors", "-s", "LSTMcell", "--exclude", "**/Adam*", "--json")
    gates = json.loads(res.output)["groups"][0]["gates"]
    assert res.exit_code == 1 and [(g["gate"], g["part"]) for g in gates] == [("forget", "recurrent kernel")]
    assert abs(gates[0]["max_abs"] - 0.5) < 1e-6
