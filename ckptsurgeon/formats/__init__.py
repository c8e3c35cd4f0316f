"""The format registry: detection by content, and one reader / writer entry per format.

Formats are named once, here. Detection never trusts the file extension: magic bytes decide, and
for zip containers their member names do. A format's module is imported only when a file is
detected as that format (or when detection needs its sniffer), so listing a safetensors file never
loads h5py or the pickle machinery.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointNotFoundError, FormatError, OutputError, UnsafeCheckpointError
from .. import location
from ..source import ByteSource, open_source
from .tensorflow.tf_paths import prefix_of

if TYPE_CHECKING:
    from ..index import CheckpointIndex

__all__ = ["detect", "open_checkpoint", "READERS", "WRITERS", "writer_for", "Writer", "load_all", "no_cycle_collection",
           "freeze_after_reads"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _is_tar(src: ByteSource) -> bool:
    return src.size > 262 and bytes(src.read(257, 5)) == b"ustar"


def _module(name: str) -> ModuleType:
    """``ckptsurgeon.formats.<name>``, imported on first use (detection asks for a few per file: the lookup first)."""
    full = f"{__name__}.{name}"
    return sys.modules.get(full) or import_module(full)


def detect(path: str) -> str:
    """Name the format of ``path`` (a file, a folder or a URL) from its content."""
    kind = location.entry_kind(path)
    if kind == "link":
        raise UnsafeCheckpointError(f"{path}: is a symbolic link; ckptsurgeon follows no links (pass the real file)")
    if kind != "file":  # a folder (remote folders cannot be told from missing names: probe what they hold)
        if _module("magic").sniff_dcp_folder(path):
            return "dcp"
        if _module("sharded.hf_index").sniff_folder(path):
            return "hf-sharded"
        if _module("orbax.reader").sniff_folder(path):  # _METADATA: read through tensorstore (an optional extra)
            return "orbax"
    if prefix_of(path, kind) is not None:
        return "tensorflow"  # the reader verifies the index's magic and every checksum
    if kind is None:
        raise CheckpointNotFoundError(f"{path}: no such file or directory")
    if kind == "directory":
        raise FormatError(f"{path}: is a directory, but holds no .metadata (DCP), {_module('sharded.hf_index').INDEX_NAMES[0]}, "
                          "TensorFlow checkpoint state file or SavedModel")
    src = open_source(path)
    size = src.size
    head = bytes(src.read(0, min(64, size)))
    if not head:
        raise FormatError(f"{path}: empty file")
    # safetensors first: the commonest format, and its sniffer cannot match the magic bytes below
    if _module("safetensors.safetensors_fmt").sniff(head, size):
        return "safetensors"
    if _module("magic").sniff_gguf(head):  # before the pickle sniffers: a GGUF listing imports no pickle code
        return "gguf"
    if head.startswith(ZIP_MAGICS):
        names = _module("zipsafe").SafeZip(path, hand_off=True).names()
        if _module("pytorch.torch_zip").sniff_names(names):
            return "pytorch"
        if _module("npy.numpy_fmt").sniff_names(names):
            return "npz"
        if _module("hdf5.keras_zip").sniff_names(names):
            return "keras"
        raise FormatError(f"{path}: a zip archive that is neither a PyTorch checkpoint, a .keras model nor an .npz")
    if _module("sharded.hf_index").sniff_index(head):
        return "hf-sharded"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if _module("npy.numpy_fmt").sniff_npy(head):
        return "npy"
    if _is_tar(src):
        return "pytorch-tar"
    if _module("magic").sniff_tflite(head):
        return "tflite"
    if _module("magic").sniff_flax(head):
        return "flax"
    if _module("paddle.pdparams").sniff(head, src):
        return "paddle"
    if _module("paddle.inference").sniff(head, path):
        return "paddle-inference"
    if _module("pytorch.torch_legacy").sniff(head):
        return "pytorch-legacy"
    if _module("magic").sniff_onnx(head, size):
        return "onnx"
    known = next((name for magic, at, name in _NOT_READ if head[at:at + len(magic)] == magic), None)
    if known:
        raise FormatError(f"{path}: {known}, a format ckptsurgeon does not read")
    raise FormatError(f"{path}: unrecognized checkpoint format (first bytes {head[:8]!r})")


# Model formats recognized only to say what they are (magic bytes, offset, name).
_NOT_READ: tuple[tuple[bytes, int, str], ...] = ()


def _refuse_tar(path: str, **_: Any) -> CheckpointIndex:
    raise UnsafeCheckpointError(
        f"{path}: tar-based legacy PyTorch file; refused (the CVE-2025-32434 class). "
        "Re-save it with a current torch.save from a trusted environment"
    )


@dataclass(frozen=True)
class _Reader:
    """A reader named by module path: ``ckptsurgeon.formats.<module>.<function>``, imported when called.

    ``options``: whether the function takes the keyword options (``allow_globals``) itself.
    """

    module: str
    function: str
    options: bool = True

    def load(self) -> Callable[..., CheckpointIndex]:
        return getattr(_module(self.module), self.function)

    def __call__(self, path: str, **options: Any) -> CheckpointIndex:
        return self.load()(path, **options) if self.options else self.load()(path)


READERS: Mapping[str, Callable[..., CheckpointIndex]] = {
    "pytorch": _Reader("pytorch.torch_zip", "read"),
    "pytorch-legacy": _Reader("pytorch.torch_legacy", "read"),
    "pytorch-tar": _refuse_tar,
    "safetensors": _Reader("safetensors.safetensors_fmt", "read", options=False),
    "npz": _Reader("npy.numpy_fmt", "read_npz", options=False),
    "npy": _Reader("npy.numpy_fmt", "read_npy", options=False),
    "tensorflow": _Reader("tensorflow.tf_bundle", "read"),
    "hdf5": _Reader("hdf5.h5", "read"),
    "keras": _Reader("hdf5.keras_zip", "read"),
    "onnx": _Reader("onnx.onnx_fmt", "read"),
    "hf-sharded": _Reader("sharded.hf_index", "read"),
    "dcp": _Reader("dcp.dcp_reader", "read"),
    "gguf": _Reader("gguf.reader", "read", options=False),
    "flax": _Reader("flax.reader", "read", options=False),
    "paddle": _Reader("paddle.pdparams", "read"),
    "paddle-inference": _Reader("paddle.inference", "read"),
    "tflite": _Reader("tflite.reader", "read", options=False),
    "orbax": _Reader("orbax.reader", "read", options=False),
}


def load_all() -> None:
    """Import every reader and writer module now (for audits that must see no import later)."""
    for reader in READERS.values():
        if isinstance(reader, _Reader):
            reader.load()
    for name in ["zipsafe"] + [w.module for w in WRITERS.values()]:
        _module(name)


def open_checkpoint(path: str, *, allow_globals: Sequence[str] = (), detected: str | None = None) -> CheckpointIndex:
    """Detect and open ``path``; returns a lazy index (no tensor bytes read). ``detected``: what ``detect(path)``
    returned just now (``scan`` detects every file first), not detected again."""
    fmt = detected
    if fmt is None:
        with no_cycle_collection():  # detection parses a zip's directory: 100,000 members' worth of tuples
            fmt = detect(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise FormatError(f"{path}: {fmt} files are not supported yet")
    try:
        with no_cycle_collection():
            return reader(path, allow_globals=allow_globals)
    except (FormatError, UnsafeCheckpointError) as exc:
        if path in str(exc) or type(exc) not in (FormatError, UnsafeCheckpointError):
            raise
        raise type(exc)(f"{path}: {exc}") from None  # every message names the file
    except (OSError, MemoryError) as exc:
        raise FormatError(f"{path}: cannot read: {exc}") from exc
    except RecursionError:
        raise FormatError(f"{path}: structures nest too deeply to be read; refusing") from None


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector while an index is built or a header written: ~10 objects per tensor
    and no garbage cycles, and the collector's repeated passes over them tripled the time of a
    100,000-tensor listing. Reference counting still frees everything; the collector resumes after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _FREEZE_AFTER_READS:
            gc.freeze()
        if was:
            gc.enable()


_FREEZE_AFTER_READS = False


def freeze_after_reads() -> None:
    """For a process that lives as long as what it reads (the CLI, not a library user): after each read,
    move every object alive to the collector's permanent generation (``gc.freeze``), so that the command's
    later allocations do not make it walk a 100,000-tensor index again and again (0.1 s of ``ls``).
    Reference counting still frees them."""
    global _FREEZE_AFTER_READS
    _FREEZE_AFTER_READS = True


@dataclass(frozen=True)
class Writer:
    """An output format: the suffixes it owns and the function (``formats.<module>.<function>``, imported
    when first used) writing tensors to an open file: ``write(tensors, fh, metadata)``.

    ``streams``: the function also takes ``TensorRef`` values (and a ``progress`` callback) and copies
    their bytes itself; other writers get arrays, read one at a time.
    ``files``: the output is a set of files named from the output path (a TensorFlow prefix): the function
    is ``write(tensors, path, metadata, force=, inputs=, max_shard_size=, progress=)`` and commits them itself.
    """

    name: str
    suffixes: tuple[str, ...]
    module: str
    function: str = "write"
    streams: bool = False
    files: bool = False

    def write(self, tensors: Mapping[str, Any], fh: Any, metadata: Mapping[str, str], **options: Any) -> None:
        getattr(_module(self.module), self.function)(tensors, fh, metadata, **options)


WRITERS: Mapping[str, Writer] = {
    "safetensors": Writer("safetensors", (".safetensors",), "safetensors.writer", streams=True),
    "npz": Writer("npz", (".npz",), "npy.numpy_fmt", "write_npz"),
    "pt": Writer("pt", (".pt", ".pth", ".bin", ".ckpt"), "pytorch.torch_writer"),  # imports torch only when called
    "h5": Writer("h5", (".h5", ".hdf5"), "hdf5.h5"),
    "flax": Writer("flax", (".msgpack",), "flax.writer"),  # what flax.serialization.from_bytes/msgpack_restore read
    "paddle": Writer("paddle", (".pdparams",), "paddle.writer"),  # what paddle.load + Layer.set_state_dict read
    # a name-based bundle: PREFIX.index + PREFIX.data-*; `.ckpt` is PyTorch Lightning's too (see writer_for)
    "tensorflow": Writer("tensorflow", (".ckpt", ".index"), "tensorflow.writer", "write_bundle", streams=True, files=True),
}

# Output names that a framework claims but ckptsurgeon cannot lay out for it: (suffix, why and what to do).
_NOT_WRITTEN = (
    (".weights.h5", "Keras's load_weights reads a .weights.h5 only in the layer structure its own model saved"),
    (".keras", "a .keras file is a whole Keras model (its config and its weights in that model's structure)"),
    (".onnx", "an ONNX model is a graph as well as its weights"),
)
_KERAS_FIX = ("save your model's weights once (model.save_weights('template.weights.h5')) and graft into it: "
              "ckptsurgeon graft SRC --into template.weights.h5 -o out.weights.h5, or load into the live model with "
              "ckptsurgeon.keras.load_into(model, SRC)")


def writer_for(path: str, format: str | None, to: str | None = None) -> Writer:
    """The writer named by ``format``, else the one owning the output's suffix.

    An output named for a framework that would not load what a plain writer makes (``.weights.h5``,
    ``.keras``, ``.onnx``) is refused with the way that works; ``.ckpt``, claimed by TensorFlow and by
    PyTorch Lightning, needs ``format`` unless the conversion target (``to``: tf1) settles it.
    """
    low = path.lower()
    for suffix, why in _NOT_WRITTEN:
        if low.endswith(suffix):
            fix = ("graft into that model's own file: ckptsurgeon graft SRC --into model.onnx -o out.onnx"
                   if suffix == ".onnx" else _KERAS_FIX)
            raise OutputError(f"{path}: {why}, which ckptsurgeon cannot make without the model; {fix}")
    if format:
        if format not in WRITERS:
            raise OutputError(f"unknown output format {format!r}; choose one of: {', '.join(WRITERS)}")
        return WRITERS[format]
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; give a file name inside it ({os.path.join(path, 'out.safetensors')}, "
                          f"or a TensorFlow prefix {os.path.join(path, 'model.ckpt')} with --format tensorflow)")
    suffix = os.path.splitext(path)[1].lower()
    if to == "tf1" and (suffix in ("", ".ckpt", ".index") or _tf_data_name(path)):
        return WRITERS["tensorflow"]
    if suffix == ".ckpt":
        raise OutputError(f"{path}: '.ckpt' names both TensorFlow checkpoints and PyTorch Lightning files; "
                          "pass --format tensorflow (writes .index + .data-00000-of-00001) or --format pt")
    for writer in WRITERS.values():
        if suffix in writer.suffixes:
            return writer
    if _tf_data_name(path):
        return WRITERS["tensorflow"]
    hint = " (a TensorFlow checkpoint prefix: --format tensorflow)" if not suffix else ""
    raise OutputError(f"{path}: cannot tell the output format from {suffix or 'no suffix'!r}; pass --format "
                      f"({', '.join(WRITERS)}){hint}")


def _tf_data_name(path: str) -> bool:
    import re

    return re.search(r"\.data-\d{5}-of-\d{5}$", path) is not None
