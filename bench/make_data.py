"""Build the benchmark checkpoints in a data folder outside the repository (never committed).

    python bench/make_data.py DATA_DIR [--gb 4.3]

Files (each made once and reused while the parameters in ``manifest.json`` stay the same):
  big.safetensors, big.pt   ~GB of float32 tensors of 40 MB, with a 2-layer nn.LSTM(256, 256) under
                            encoder/lstm in the middle of the file (the .pt is the same weights, torch.save)
  small20.safetensors       20 small tensors (cold start-up)
  many{N}.safetensors/.pt   N small tensors, N in 10k and 100k (growth)
  tf1_10k/model.ckpt        a TF1 name-based bundle of 10,000 variables (TensorFlow when /work/tfvenv or
                            $CKPTSURGEON_TF_PYTHON has it, else by ckptsurgeon's writer: bench/tf_write.py)
  lstm4bi.pt                torch.save of nn.LSTM(1024, 1024, num_layers=4, bidirectional=True) under rnn. (370 MB;
                            P6, P11)
  lstm4bi_tf1/model.ckpt    the same weights as a TF1 checkpoint (stack_bidirectional_rnn LSTMCells): written by
                            ckptsurgeon --to tf1, then re-saved by TensorFlow's SaveV2 when TensorFlow is here
  rlimit2g.safetensors      (tests make their own)

The big safetensors file is written by streaming one tensor at a time; the .pt is ``torch.save`` of
tensors that are views of that file's mmap, so neither needs the checkpoint's size in memory.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from tfenv import tf_interpreter

HERE = Path(__file__).resolve().parent
BIG_NUMEL = 10_000_000  # 40 MB of float32 per tensor
GROWTH = (10_000, 100_000)
TF_VARS = 10_000


def _write_safetensors(path: Path, tensors: list[tuple[str, np.ndarray]] | None = None, *,
                       lazy: list[tuple[str, tuple[int, ...], object]] | None = None) -> None:
    """A safetensors file, tensors streamed in the given order (``lazy``: name, shape, maker)."""
    rows = lazy if lazy is not None else [(k, a.shape, (lambda a=a: a)) for k, a in tensors]
    header, offset = {}, 0
    for name, shape, _ in rows:
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for _name, _shape, make in rows:
            fh.write(np.ascontiguousarray(make(), dtype="<f4").tobytes())
    os.replace(tmp, path)


def _torch_save_from(st_path: Path, pt_path: Path) -> None:
    """torch.save the safetensors file's tensors (views of its mmap: no copy in memory)."""
    import torch

    with open(st_path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    (n,) = struct.unpack("<Q", mm[:8])
    header = json.loads(mm[8:8 + n])
    base = 8 + n
    state = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer on a read-only buffer: torch.save only reads it
        for name, info in header.items():
            a, b = info["data_offsets"]
            state[name] = torch.frombuffer(mm, dtype=torch.float32, count=(b - a) // 4, offset=base + a).view(info["shape"])
        tmp = pt_path.with_suffix(".tmp")
        torch.save(state, tmp)
    del state
    os.replace(tmp, pt_path)


def make_big(data: Path, gb: float) -> None:
    import torch

    n_big = max(2, round(gb * 1e9 / (BIG_NUMEL * 4)))
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(256, 256, num_layers=2)
    lstm_rows = [(f"encoder.lstm.{k}", tuple(v.shape), (lambda v=v: v.detach().numpy())) for k, v in lstm.state_dict().items()]
    rng = np.random.default_rng(0)
    base = rng.standard_normal(BIG_NUMEL, dtype=np.float32)

    def block(i: int):
        return lambda: base + np.float32(i)

    half = n_big // 2
    rows = [(f"blocks.{i}.weight", (2500, 4000), block(i)) for i in range(half)]
    rows += lstm_rows
    rows += [(f"blocks.{i}.weight", (2500, 4000), block(i)) for i in range(half, n_big)]
    _write_safetensors(data / "big.safetensors", lazy=rows)
    _torch_save_from(data / "big.safetensors", data / "big.pt")


def make_small(data: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [(f"model.layer_{i}.weight", rng.standard_normal((64, 64), dtype=np.float32)) for i in range(20)]
    _write_safetensors(data / "small20.safetensors", rows)


def make_many(data: Path, n: int) -> None:
    rng = np.random.default_rng(2)
    small = rng.standard_normal(16, dtype=np.float32)
    rows = [(f"model.blocks.{i // 10}.layer_{i % 10}.weight", small.reshape(4, 4) + np.float32(i)) for i in range(n)]
    st = data / f"many{n}.safetensors"
    _write_safetensors(st, rows)
    _torch_save_from(st, data / f"many{n}.pt")


def make_tf(data: Path) -> str:
    """The 10,000-variable TF1 bundle: with TensorFlow when available, else crafted by hand."""
    folder = data / "tf1_10k"
    folder.mkdir(exist_ok=True)
    tf_python = tf_interpreter()
    writer = HERE / "tf_write.py"
    if tf_python:
        subprocess.run([tf_python, str(writer), str(folder / "model.ckpt"), str(TF_VARS), "--tf"], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        return "TensorFlow"
    subprocess.run([sys.executable, str(writer), str(folder / "model.ckpt"), str(TF_VARS)], check=True)
    return "bench/tf_write.py (ckptsurgeon's bundle writer)"


def make_rnn(data: Path) -> str:
    """P6: a 4-layer bidirectional nn.LSTM(1024, 1024) .pt, and the same weights as a TF1 checkpoint."""
    import shutil

    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(1024, 1024, num_layers=4, bidirectional=True)
    tmp = data / "lstm4bi.tmp"
    torch.save({f"rnn.{k}": v.detach() for k, v in lstm.state_dict().items()}, tmp)
    os.replace(tmp, data / "lstm4bi.pt")
    del lstm
    folder = data / "lstm4bi_tf1"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    cli = str(Path(sys.executable).parent / "ckptsurgeon")
    ours = data / "lstm4bi_tf1_ours"
    shutil.rmtree(ours, ignore_errors=True)
    ours.mkdir()
    subprocess.run([cli, "extract", str(data / "lstm4bi.pt"), "--scope", "rnn", "--rename", "rnn/=",
                    "--to", "tf1", "--format", "tensorflow", "-o", str(ours / "model.ckpt")], check=True,
                   stdout=subprocess.DEVNULL)
    tf_python = tf_interpreter()
    if tf_python:
        subprocess.run([tf_python, str(HERE / "anchors" / "tf_resave.py"), str(ours / "model.ckpt"),
                        str(folder / "model.ckpt")], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
        shutil.rmtree(ours)
        return "TensorFlow SaveV2"
    shutil.rmtree(folder)
    os.replace(ours, folder)
    return "ckptsurgeon"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--gb", type=float, default=4.3)
    args = ap.parse_args()
    data: Path = args.data
    data.mkdir(parents=True, exist_ok=True)
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    want_big = {"gb": args.gb, "numel": BIG_NUMEL, "version": 1}
    if manifest.get("big") != want_big or not (data / "big.pt").exists():
        print(f"writing big.safetensors / big.pt ({args.gb} GB) ...", flush=True)
        make_big(data, args.gb)
        manifest["big"] = want_big
    if not (data / "small20.safetensors").exists():
        make_small(data)
    for n in GROWTH:
        if manifest.get(f"many{n}") != 1 or not (data / f"many{n}.pt").exists():
            print(f"writing many{n} ...", flush=True)
            make_many(data, n)
            manifest[f"many{n}"] = 1
    if manifest.get("rnn") is None or not (data / "lstm4bi_tf1" / "model.ckpt.index").exists():
        print("writing lstm4bi.pt and lstm4bi_tf1 ...", flush=True)
        manifest["rnn"] = {"version": 1, "tf1_writer": make_rnn(data)}
    if not (data / "tf1_10k" / "model.ckpt.index").exists() or manifest.get("tf_writer") is None:
        print("writing tf1_10k ...", flush=True)
        manifest["tf_writer"] = make_tf(data)
    manifest_path.write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
