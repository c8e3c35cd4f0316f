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

__all__ = ["Seed", "load_seeds", "FORMATS", "CLASSES", "NEW_CLASSES", "REMOTE_KINDS"]


@dataclass
class Seed:
    fmt: str
    name: str
    files: dict[str, bytes] = field(repr=False)
    target: str  # the file (or "" for the folder) the CLI is given
    mutator: str = ""  # the format whose mutators apply, when ``fmt`` is a class of seeds (rnn, nonfinite, remote)

    @property
    def kind(self) -> str:
        return self.mutator or self.fmt


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
        _one("gguf", SEEDS / "tiny.gguf"),
        _one("flax", SEEDS / "rnn_linen.msgpack"),  # recorded by flax (fixtures/flax), an LSTM and a GRU
        _one("paddle", SEEDS / "lstm_p3.pdparams"),  # recorded by paddle (fixtures/paddle), pickle protocol 3
        _one("tflite", SEEDS / "lstm.tflite"),  # made by the TFLite converter (fixtures/tflite), an LSTM op
    ]
    return seeds + class_seeds()


# Seed classes beyond one format each (issue 23): their files are of many formats, mutated as their own format.
_BY_SUFFIX = ((".safetensors", "safetensors"), (".pt", "pytorch"), (".npz", "npz"), (".h5", "hdf5"), (".keras", "keras"),
              (".onnx", "onnx"))
# What ``remote`` serves over loopback HTTP: one file of each format that can be read by ranges.
REMOTE_KINDS = (("model.safetensors", "safetensors"), ("torch.pt", "pytorch"), ("arrays.npz", "npz"),
                ("tiny.keras", "keras"), ("tiny.onnx", "onnx"), ("tiny.weights.h5", "hdf5"), ("tiny.gguf", "gguf"),
                ("rnn/lstm_ih_rows.safetensors", "safetensors"), ("nonfinite/lstm_specials.pt", "pytorch"))


def _kind(name: str) -> str:
    return next(k for suffix, k in _BY_SUFFIX if name.endswith(suffix))


def class_seeds() -> list[Seed]:
    """``rnn``: recurrent groups whose tensors do not fit their layout; ``nonfinite``: inf/nan/1e38 weights (both
    from ``make_rnn_seeds.py``); ``remote``: files the campaign serves from a loopback server, honest or lying."""
    out = []
    for fmt in ("rnn", "nonfinite"):
        mine = []
        for path in sorted((SEEDS / fmt).iterdir()):
            if path.is_dir():  # a TensorFlow bundle
                mine.append(Seed(fmt, path.name, {p.name: p.read_bytes() for p in sorted(path.iterdir())}, "",
                                 "tensorflow"))
            else:
                mine.append(Seed(fmt, path.name, {path.name: path.read_bytes()}, path.name, _kind(path.name)))
        out += _round_robin(mine)
    for rel, kind in REMOTE_KINDS:
        name = rel.rsplit("/", 1)[-1]
        out.append(Seed("remote", rel, {name: (SEEDS / rel).read_bytes()}, name, kind))
    return out + recorded_seeds()


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def recorded_seeds() -> list[Seed]:
    """Issue 24's classes (``make_seeds.py recorded keras_stacked``): ``orbax`` folders (their JSON metadata, OCDBT
    manifests and data files mutated inside the folder), ``paddle-jit`` pairs (the program JSON and its
    ``.pdiparams``; the CLI given either), ``tflite-rnn`` recurrent ops, ``keras-stacked`` RNN(StackedRNNCells)."""
    out = [Seed("orbax", p.name, _tree(p), "", "orbax") for p in sorted((SEEDS / "orbax").iterdir())]
    pair = _tree(SEEDS / "paddle_jit")
    out += [Seed("paddle-jit", name, pair, name, "paddle-jit") for name in ("model.pdiparams", "model.json")]
    out += [Seed("tflite-rnn", p.name, {p.name: p.read_bytes()}, p.name, "tflite")
            for p in sorted((SEEDS / "tflite_rnn").iterdir())]
    out += [Seed("keras-stacked", p.name, {p.name: p.read_bytes()}, p.name, _kind(p.name))
            for p in sorted((SEEDS / "stacked").iterdir())]
    return out


def _folder(fmt: str, folder: Path, keep=lambda p: True) -> Seed:
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and keep(p)}
    return Seed(fmt, folder.name, files, "")


FORMATS = ("safetensors", "pytorch", "pytorch-legacy", "torchscript", "pickle", "npy", "npz", "hdf5", "keras", "tensorflow", "onnx", "dcp",
           "hf-sharded", "gguf", "flax", "paddle", "tflite", "rnn", "nonfinite", "remote", "orbax", "paddle-jit",
           "tflite-rnn", "keras-stacked")
CLASSES = ("rnn", "nonfinite", "remote", "orbax", "paddle-jit", "tflite-rnn", "keras-stacked")
NEW_CLASSES = CLASSES[3:]  # issue 24


def _round_robin(seeds: list[Seed]) -> list[Seed]:
    """One seed of each format, then the next of each ...: the first few cases of a class span every format."""
    queues: dict[str, list[Seed]] = {}
    for s in seeds:
        queues.setdefault(s.kind, []).append(s)
    out = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                out.append(q.pop(0))
    return out
