"""The format registry: detection by content, and one reader / writer entry per format.

Formats are named once, here. Detection never trusts the file extension: magic bytes decide, and
for zip containers their member names do.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, OutputError, UnsafeCheckpointError
from ..index import CheckpointIndex
from .. import location
from ..location import islink
from ..source import ByteSource, open_source
from .dcp import dcp_reader
from .hdf5 import h5 as hdf5, keras_zip
from .npy import numpy_fmt
from .onnx import onnx_fmt
from .pytorch import torch_legacy, torch_zip
from .safetensors import safetensors_fmt
from .sharded import hf_index
from .tensorflow import tf_bundle
from .tensorflow.tf_paths import resolve_prefix
from .zipsafe import SafeZip

__all__ = ["detect", "open_checkpoint", "WRITERS", "writer_for", "Writer"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _is_tar(src: ByteSource) -> bool:
    return src.size > 262 and bytes(src.read(257, 5)) == b"ustar"


def detect(path: str) -> str:
    """Name the format of ``path`` (a file, a folder or a URL) from its content."""
    if islink(path):
        raise UnsafeCheckpointError(f"{path}: is a symbolic link; ckptsurgeon follows no links (pass the real file)")
    kind = location.kind(path)
    if kind != "file":  # a folder (remote folders cannot be told from missing names: probe what they hold)
        if dcp_reader.sniff_folder(path):
            return "dcp"
        if hf_index.sniff_folder(path):
            return "hf-sharded"
    if resolve_prefix(path) is not None:
        return "tensorflow"  # the reader verifies the index's magic and every checksum
    if kind is None:
        raise FormatError(f"{path}: no such file or directory")
    if kind == "directory":
        raise FormatError(f"{path}: is a directory, but holds no .metadata (DCP), {hf_index.INDEX_NAMES[0]}, "
                          "TensorFlow checkpoint state file or SavedModel")
    src = open_source(path)
    size = src.size
    head = bytes(src.read(0, min(64, size)))
    if not head:
        raise FormatError(f"{path}: empty file")
    if head.startswith(ZIP_MAGICS):
        names = SafeZip(path).names()
        if torch_zip.sniff_names(names):
            return "pytorch"
        if numpy_fmt.sniff_names(names):
            return "npz"
        if keras_zip.sniff_names(names):
            return "keras"
        raise FormatError(f"{path}: a zip archive that is neither a PyTorch checkpoint, a .keras model nor an .npz")
    if hf_index.sniff_index(head):
        return "hf-sharded"
    if numpy_fmt.sniff_npy(head):
        return "npy"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if safetensors_fmt.sniff(head, size):
        return "safetensors"
    if _is_tar(src):
        return "pytorch-tar"
    if torch_legacy.sniff(head):
        return "pytorch-legacy"
    if onnx_fmt.sniff(head, size):
        return "onnx"
    raise FormatError(f"{path}: unrecognized checkpoint format (first bytes {head[:8]!r})")


def _refuse_tar(path: str, **_: Any) -> CheckpointIndex:
    raise UnsafeCheckpointError(
        f"{path}: tar-based legacy PyTorch file; refused (the CVE-2025-32434 class). "
        "Re-save it with a current torch.save from a trusted environment"
    )


READERS: Mapping[str, Callable[..., CheckpointIndex]] = {
    "pytorch": torch_zip.read,
    "pytorch-legacy": torch_legacy.read,
    "pytorch-tar": _refuse_tar,
    "safetensors": lambda path, **_: safetensors_fmt.read(path),
    "npz": lambda path, **_: numpy_fmt.read_npz(path),
    "npy": lambda path, **_: numpy_fmt.read_npy(path),
    "tensorflow": tf_bundle.read,
    "hdf5": hdf5.read,
    "keras": keras_zip.read,
    "onnx": onnx_fmt.read,
    "hf-sharded": hf_index.read,
    "dcp": dcp_reader.read,
}


def open_checkpoint(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    """Detect and open ``path``; returns a lazy index (no tensor bytes read)."""
    fmt = detect(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise FormatError(f"{path}: {fmt} files are not supported yet")
    try:
        return reader(path, allow_globals=allow_globals)
    except (FormatError, UnsafeCheckpointError) as exc:
        if path in str(exc) or type(exc) not in (FormatError, UnsafeCheckpointError):
            raise
        raise type(exc)(f"{path}: {exc}") from None  # every message names the file
    except (OSError, MemoryError) as exc:
        raise FormatError(f"{path}: cannot read: {exc}") from exc
    except RecursionError:
        raise FormatError(f"{path}: structures nest too deeply to be read; refusing") from None


@dataclass(frozen=True)
class Writer:
    """An output format: the suffixes it owns and a function writing tensors to an open file."""

    name: str
    suffixes: tuple[str, ...]
    write: Callable[[Mapping[str, np.ndarray], Any, Mapping[str, str]], None]


def _write_torch(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    from .pytorch import torch_writer  # imports torch: only when a .pt is asked for

    torch_writer.write(tensors, fh, metadata)


WRITERS: Mapping[str, Writer] = {
    "safetensors": Writer("safetensors", (".safetensors",), safetensors_fmt.write),
    "npz": Writer("npz", (".npz",), numpy_fmt.write_npz),
    "pt": Writer("pt", (".pt", ".pth", ".bin", ".ckpt"), _write_torch),
    "h5": Writer("h5", (".h5", ".hdf5"), hdf5.write),
}


def writer_for(path: str, format: str | None) -> Writer:
    """The writer named by ``format``, else the one owning the output's suffix."""
    if format:
        if format not in WRITERS:
            raise OutputError(f"unknown output format {format!r}; choose one of: {', '.join(WRITERS)}")
        return WRITERS[format]
    suffix = os.path.splitext(path)[1].lower()
    for writer in WRITERS.values():
        if suffix in writer.suffixes:
            return writer
    raise OutputError(f"{path}: cannot tell the output format from {suffix or 'no suffix'!r}; pass --format ({', '.join(WRITERS)})")
