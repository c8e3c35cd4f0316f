"""Shared helpers: real-framework checkpoints made in a temporary folder, and comparisons."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

try:  # tqdm (pulled in by test dependencies) starts a monitor thread on first use; with it running,
    import tqdm  # ckptsurgeon.isolate rightly spawns its HDF5 child instead of forking, which some tests pin

    tqdm.tqdm.monitor_interval = 0
except ImportError:  # pragma: no cover
    pass

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpus" / "picklescan"
os.environ.setdefault("KERAS_BACKEND", "torch")


def torch_bytes(t) -> bytes:
    """The raw little-endian bytes of a torch tensor, contiguous."""
    import torch

    t = t.detach().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes()


def assert_same_as_torch(ref_array: np.ndarray, t) -> None:
    """Element for element, bit for bit, dtype for dtype."""

    assert ref_array.dtype.name == str(t.dtype).replace("torch.", ""), (ref_array.dtype, t.dtype)
    assert tuple(ref_array.shape) == tuple(t.shape)
    assert np.ascontiguousarray(ref_array).tobytes() == torch_bytes(t)


def rich_object():
    """Every dtype, views, shared storage, nested containers, scalars and empties."""
    import torch

    torch.manual_seed(1)
    base = torch.randn(4, 6)
    views = {
        "transposed": base.t(),
        "slice": base[1:3, 2:5],
        "row": base[2],
        "same_storage": base,
        "strided": base[:, ::2],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(3, 2)),
    }
    dtypes = {}
    for name in ("float32 float64 float16 bfloat16 float8_e4m3fn float8_e5m2 int8 int16 int32 int64 uint8 "
                 "uint16 uint32 uint64 bool complex64 complex128").split():
        dt = getattr(torch, name)
        src = torch.randn(3, 5) * 10
        if name == "bool":
            t = src > 0
        elif name.startswith("complex"):
            t = torch.complex(src, -src).to(dt)
        elif name.startswith("uint"):
            t = src.abs().to(torch.int64).to(dt)
        else:
            t = src.to(dt)
        dtypes[name] = t
    lstm = torch.nn.LSTM(4, 3, num_layers=2, bidirectional=True)
    return {
        "state_dict": lstm.state_dict(),
        "views": views,
        "dtypes": dtypes,
        "nested": [{"a": torch.ones(2)}, (torch.zeros(3), torch.arange(4))],
        "epoch": 7,
        "hyper_parameters": {"lr": 0.01, "name": "demo", "sizes": [1, 2]},
    }


def flatten_torch(obj, prefix=()):
    """(path segments, tensor) pairs in the order ckptsurgeon reports them."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten_torch(v, prefix + (str(k),))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten_torch(v, prefix + (str(i),))


@pytest.fixture(scope="session")
def torch_files(tmp_path_factory):
    """Real torch.save outputs, zip and legacy, of the rich object."""
    import torch

    d = tmp_path_factory.mktemp("torch")
    obj = rich_object()
    paths = {"zip": d / "rich.pt", "legacy": d / "rich_legacy.pt"}
    torch.save(obj, paths["zip"])
    torch.save(obj, paths["legacy"], _use_new_zipfile_serialization=False)
    return paths


def run_cli(*args: str, cwd=None):
    """Run the installed console script in a subprocess."""
    import subprocess

    exe = Path(sys.executable).parent / "ckptsurgeon"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=120)
