"""Coverage-guided fuzzing with atheris (libFuzzer for Python), one reader per run, in process.

    .venv/bin/python -m tests.fuzz.coverage FORMAT CORPUS_DIR [libFuzzer flags]

Each input is written to a file of FORMAT's kind, opened as ``ls`` opens it, every tensor up to
64 MiB is read, and ``scan`` runs on it. Anything but a ``CheckpointError`` is a crash; libFuzzer's
``-rss_limit_mb`` and ``-timeout`` catch memory blow-ups and hangs. ``campaign.py`` runs it (when
atheris is installed: ``pip install atheris``) and replays every artifact through the CLI harness.

Why it is here: in its first minutes it found a 15-byte pickle whose memo index made the C unpickler
allocate 10 GB, which the mutation fuzzer's gadgets had not tried. HDF5 and Keras are left to the
mutation fuzzer: their parser is libhdf5 (C, not instrumented here) and runs in a child process.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# format -> (file suffix, extra files next to it)
TARGETS: dict[str, tuple[str, tuple[Path, ...]]] = {
    "safetensors": (".safetensors", ()),
    "pytorch": (".pt", ()),
    "pytorch-legacy": (".pt", ()),
    "torchscript": (".pt", ()),
    "pickle": (".pkl", ()),
    "npy": (".npy", ()),
    "npz": (".npz", ()),
    "onnx": (".onnx", ()),
    "tensorflow": (".index", tuple(ROOT / "fixtures" / "tensorflow" / "tf1_misc" / f"model.ckpt.data-0000{i}-of-00002"
                                   for i in (0, 1))),
}


def main() -> None:  # pragma: no cover - runs under libFuzzer
    import atheris

    fmt = sys.argv.pop(1)
    with atheris.instrument_imports(include=["ckptsurgeon"]):
        import ckptsurgeon
        from ckptsurgeon.check.scan import scan_file
        from ckptsurgeon.errors import CheckpointError
    suffix, extra = TARGETS[fmt]
    folder = tempfile.mkdtemp(prefix="ckcov-", dir=os.environ.get("CKCOV_DIR"))  # the campaign removes its own
    for p in extra:
        shutil.copy(p, folder)
    path = os.path.join(folder, "model.ckpt.index" if fmt == "tensorflow" else "input" + suffix)

    def one(data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            for ref in ckptsurgeon.open(path).values():
                if ref.nbytes <= 1 << 26:
                    ref.numpy()
        except CheckpointError:
            pass
        try:
            scan_file(path)
        except CheckpointError:
            pass

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
