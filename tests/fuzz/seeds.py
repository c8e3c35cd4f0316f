"""The fuzzer's seeds: small real files of every format (``seeds/`` made by ``make_seeds.py``,
TensorFlow bundles and DCP folders from ``fixtures/``), each with the path the CLI is given."""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
ROOT = HERE.parent.parent
TF = ROOT / "fixtures" / "tensorflow"

__all__ = ["Seed", "load_seeds", "FORMATS"]


@dataclass
class Seed:
    fmt: str
    name: str
    files: dict[str, bytes] = field(repr=False)
    target: str  # the file (or "" for the folder) the CLI is given


def _one(fmt: str, path: Path) -> Seed:
    return Seed(fmt, path.name, {path.name: path.read_bytes()}, path.name)


def _bare_pickle() -> bytes:
    obj = {"epoch": 3, "lr": [0.1, 0.01], "name": "run", "nested": {"a": (1, 2.5, None), "b": {1, 2}},
           "arr": np.arange(4, dtype=np.float32), "flags": [True, False] * 40}
    return pickle.dumps(obj, protocol=2)


def _tf(folder: str, target: str = "") -> Seed:
    files = {p.name: p.read_bytes() for p in (TF / folder).iterdir()
             if p.name == "checkpoint" or ".index" in p.name or ".data-" in p.name}
    if "model_init.ckpt.index" in files:  # one bundle per seed
        files = {n: d for n, d in files.items() if not n.startswith("model_init")}
    return Seed("tensorflow", folder, files, target)


def load_seeds() -> list[Seed]:
    seeds = [
        _one("safetensors", SEEDS / "model.safetensors"),
        _one("pytorch", SEEDS / "torch.pt"),
        _one("pytorch-legacy", SEEDS / "torch_legacy.pt"),
        _one("torchscript", SEEDS / "tiny.jit"),
        Seed("pickle", "bare.pkl", {"bare.pkl": _bare_pickle()}, "bare.pkl"),
        _one("npy", SEEDS / "array.npy"),
        _one("npy", SEEDS / "fortran.npy"),
        _one("npz", SEEDS / "arrays.npz"),
        _one("npz", SEEDS / "compressed.npz"),
        _one("hdf5", SEEDS / "tiny.weights.h5"),
        _one("hdf5", SEEDS / "generic.h5"),
        _one("hdf5", ROOT / "fixtures" / "keras" / "tfkeras" / "model.h5"),
        _one("keras", SEEDS / "tiny.keras"),
        _tf("tf1_misc"),
        _tf("tf2_checkpoint"),
        _tf("tf1_cells", "model.ckpt.index"),
        _one("onnx", SEEDS / "tiny.onnx"),
        _folder("dcp", ROOT / "fixtures" / "dcp" / "torch-2.5.1" / "dist2", lambda p: p.name != "reference.pt"),
        _folder("hf-sharded", SEEDS / "sharded_st"),
        _folder("hf-sharded", SEEDS / "sharded_pt"),
    ]
    return seeds


def _folder(fmt: str, folder: Path, keep=lambda p: True) -> Seed:
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and keep(p)}
    return Seed(fmt, folder.name, files, "")


FORMATS = ("safetensors", "pytorch", "pytorch-legacy", "torchscript", "pickle", "npy", "npz", "hdf5", "keras", "tensorflow", "onnx", "dcp",
           "hf-sharded")
