"""TorchScript archives (``torch.jit.save``; silero-vad ships its model as one): read as data, never run.

Every tensor equals what ``torch.jit.load`` gives (its ``state_dict()``, the module's attributes, the tensor
constants its code refers to); nothing outside the allowlist is unpickled; recurrent groups convert and graft
like a state dict's, and a grafted archive loads and runs in torch with the new weights."""
from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import UnsafeCheckpointError

torch = pytest.importorskip("torch")

CONST = torch.tensor([[0.25, -1.5]])


def _scripted(seed: int = 0):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4, num_layers=2)
            self.cell = torch.nn.GRUCell(4, 5)
            self.register_buffer("buf", torch.arange(6, dtype=torch.float16).reshape(2, 3))
            self.scale = torch.tensor([2.0, 3.0])  # a tensor attribute: neither parameter nor buffer
            self.ids = [1, 2, 3]

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.cell(y[0]) * self.scale[0]

    torch.manual_seed(seed)
    return torch.jit.script(Net())


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def _attr(module, path: str):
    for seg in path.split("/"):
        module = getattr(module, seg)
    return module.detach().numpy()


def test_every_tensor_equals_torch_jit_load(tmp_path):
    _scripted().save(str(tmp_path / "net.pt"))
    loaded = _load(tmp_path / "net.pt")
    index = ckptsurgeon.open(str(tmp_path / "net.pt"))
    assert index.format == "torchscript"
    for key, value in loaded.state_dict().items():
        ref = index[key.replace(".", "/")]
        assert ref.key == key and ref.dtype == value.numpy().dtype and np.array_equal(ref.numpy(), value.numpy())
    assert set(index.keys()) == {k.replace(".", "/") for k in loaded.state_dict()} | {"scale"}
    for path in index.keys():  # every tensor is the attribute torch restores at that path
        assert np.array_equal(index[path].numpy(), _attr(loaded, path)), path
    assert index.metadata["ids"] == [1, 2, 3] and index.metadata["rnn/_flat_weights_names"][0] == "weight_ih_l0"
    assert any("left out rnn/_flat_weights" in n for n in index.notes)  # nn.LSTM's list of its own parameters


def test_traced_constants_are_listed(tmp_path):
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x) + CONST

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Wrap(), torch.randn(1, 3))
    traced.save(str(tmp_path / "traced.pt"))
    loaded = _load(tmp_path / "traced.pt")
    index = ckptsurgeon.open(str(tmp_path / "traced.pt"))
    consts = loaded.code_with_constants[1].const_mapping
    assert list(consts) == ["c0"]
    assert np.array_equal(index["CONSTANTS/c0"].numpy(), consts["c0"].numpy())
    assert np.array_equal(index["lin/weight"].numpy(), loaded.lin.weight.detach().numpy())


def test_code_is_never_run_and_other_globals_are_refused(tmp_path):
    """A TorchScript-shaped archive whose data.pkl names os.system: refused by name, nothing runs."""
    evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/data.pkl", evil)
        z.writestr("m/code/__torch__.py", "class M(Module):\n  pass\n")
        z.writestr("m/constants.pkl", b"\x80\x02).")
        z.writestr("m/version", "3\n")
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="refusing global os.system"):
        ckptsurgeon.open(str(tmp_path / "evil.pt"))


def test_recurrent_groups_convert_and_graft_into_the_archive(tmp_path):
    """silero-vad's round: the cell out of the .jit into torch, 'fine-tuned', grafted back into the .jit."""
    _scripted(0).save(str(tmp_path / "net.pt"))
    from ckptsurgeon.rnn import recognize

    scopes = [g.scope for g in recognize(ckptsurgeon.open(str(tmp_path / "net.pt")))]
    assert scopes == ["rnn", "cell"]
    res = ckptsurgeon.extract(str(tmp_path / "net.pt"), str(tmp_path / "cell.safetensors"), scope=["cell"],
                              to="torch-cell", rename=[("cell/", "")])
    assert res.checks and res.checks[0]["max_abs_diff"] == 0
    from safetensors.torch import load_file

    tuned = torch.nn.GRUCell(4, 5)
    tuned.load_state_dict(load_file(str(tmp_path / "cell.safetensors")), strict=True)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.1)
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    out = tmp_path / "net_tuned.pt"
    run = CliRunner().invoke(cli, ["graft", str(tmp_path / "tuned.pt"), "--into", str(tmp_path / "net.pt"),
                                   "--map", "/=cell", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert "verified / -> cell: max abs diff 0" in run.output
    want = _load(tmp_path / "net.pt")
    with torch.no_grad():
        for k, v in tuned.state_dict().items():
            getattr(want.cell, k).copy_(v)
    got = _load(out)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        assert torch.equal(got(x), want(x)) and not torch.equal(got(x), _load(tmp_path / "net.pt")(x))
    for k, v in got.state_dict().items():
        assert torch.equal(v, want.state_dict()[k]), k
