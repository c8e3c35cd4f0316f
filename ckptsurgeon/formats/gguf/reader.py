"""GGUF files (llama.cpp): metadata and every tensor listed from the header; plain tensors read byte-exact.

Plain tensors (f32, f16, bf16, f64, i8 ... i64) are ``TensorRef``s at their byte range. Quantized tensors
(q4_0, q6_k, iq2_xs ...) are ``QuantizedRef``s: listed with their logical shape, their ggml type as
dtype name and their stored size, and decoded to float32 only inside ``dequantizing()`` (through the
``gguf`` package's ``gguf.quants``, imported then); reading one outside it is refused, saying why.
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import FormatError, MissingDependencyError, OutputError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, _as_dataclass, _Fields, check_shape, lazy_range_sha256
from ...scopes import key_path
from ...source import open_source, read_exact
from .ggml_types import GGML_TYPES, PLAIN_DTYPES, GGMLType
from ..magic import sniff_gguf as sniff
from .header import parse_header

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["sniff", "read", "QuantizedRef", "dequantizing", "FORMAT"]

FORMAT = "gguf"
_DEQUANTIZE: ContextVar[bool] = ContextVar("ckptsurgeon_gguf_dequantize", default=False)



@contextlib.contextmanager
def dequantizing(allow: bool = True) -> Iterator[None]:
    """Within this block, quantized GGUF tensors are read as float32 (dequantized by ``gguf.quants``)."""
    token = _DEQUANTIZE.set(allow)
    try:
        yield
    finally:
        _DEQUANTIZE.reset(token)


class QuantizedRef(TensorRef):
    """A quantized GGUF tensor: ``dtype`` is what reading it gives (float32, dequantized), ``ggml`` the
    stored type's name (shown as its dtype), ``stored`` its size in the file (what ``nbytes`` reports)."""

    __slots__ = ("ggml", "stored")

    def __init__(self, *args: Any, ggml: str = "", stored: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ggml, self.stored = ggml, stored

    def _fields(self) -> tuple[Any, ...]:
        return (*super()._fields(), self.ggml, self.stored)

    def _init_kwargs(self) -> dict[str, Any]:
        return {**super()._init_kwargs(), "ggml": self.ggml, "stored": self.stored}

    @property
    def dtype_name(self) -> str:
        return self.ggml

    @property
    def nbytes(self) -> int:
        return self.stored


@dataclass
class _QuantizedFields(_Fields):
    ggml: str = ""
    stored: int = 0


_as_dataclass(QuantizedRef, _QuantizedFields)


def _dequantizer(file: str, key: str, path: str, info: GGMLType, offset: int, shape: tuple[int, ...], stored: int,
                 byteorder: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if not _DEQUANTIZE.get():
            raise OutputError(
                f"{file}: tensor {key!r} is quantized ({info.describe()}); its bytes are not an array of any dtype. "
                "Read it dequantized to float32 (--dequantize; in Python: within ckptsurgeon.formats.gguf.dequantizing()), "
                f"or leave it out (--exclude '{path}')")
        if byteorder != "<":
            raise OutputError(f"{file}: tensor {key!r}: dequantizing {info.name} from a big-endian GGUF file is not supported")
        try:
            from gguf.constants import GGMLQuantizationType
            from gguf.quants import dequantize
        except ImportError:
            raise MissingDependencyError("gguf", "gguf", f"dequantizing GGUF {info.name} tensors") from None
        raw = np.frombuffer(read_exact(file, offset, stored), dtype=np.uint8)
        rows = shape[:-1] + (shape[-1] // info.block * info.block_bytes,)
        try:
            out = dequantize(raw.reshape(rows), GGMLQuantizationType(info.code))
        except (NotImplementedError, ValueError) as exc:
            raise OutputError(f"{file}: tensor {key!r}: the gguf package cannot dequantize {info.name}: {exc}") from None
        return np.ascontiguousarray(out, dtype=np.float32).reshape(shape)

    return load


def read(path: str) -> CheckpointIndex:
    src = open_source(path)
    header = parse_header(src)
    data_size = src.size - header.data_start
    if data_size < 0:
        raise FormatError(f"{path}: truncated GGUF file: the data section would start at byte {header.data_start:,}")
    builder = IndexBuilder(path)
    spans = []
    quantized: Counter[str] = Counter()
    for t in header.tensors:
        info = GGML_TYPES.get(t.ggml_type)
        if info is None:
            raise FormatError(f"{path}: tensor {t.name!r} has ggml type {t.ggml_type}, unknown to ckptsurgeon "
                              "(a type newer than this version?); its size cannot be known, so the file cannot be listed")
        shape = tuple(reversed(t.dims))  # numpy order: slowest first
        check_shape(path, t.name, np.dtype(np.uint8), shape)
        numel = math.prod(shape)
        if t.dims and t.dims[0] % info.block:
            raise FormatError(f"{path}: tensor {t.name!r}: rows of {t.dims[0]} weights are not whole {info.name} "
                              f"blocks of {info.block}")
        stored = numel // info.block * info.block_bytes
        if t.offset % header.alignment:
            raise FormatError(f"{path}: tensor {t.name!r} at data offset {t.offset} is not aligned to {header.alignment}")
        if t.offset + stored > data_size:
            raise FormatError(f"{path}: tensor {t.name!r} ({stored:,} bytes at data offset {t.offset:,}) runs past the "
                              f"end of the file (truncated?)")
        spans.append((t.offset, t.offset + stored, t.name))
        offset = header.data_start + t.offset
        p = key_path(t.name, ".")
        if not info.quantized:
            dtype = PLAIN_DTYPES[t.ggml_type]
            if dtype.itemsize > 1 and header.byteorder == ">":
                dtype = dtype.newbyteorder(">")
            builder.add(TensorRef(path=p, key=t.name, dtype=dtype, shape=shape, file=path, offset=offset))
        else:
            quantized[info.name] += 1
            loader = _dequantizer(path, t.name, p, info, offset, shape, stored, header.byteorder)
            builder.add(QuantizedRef(path=p, key=t.name, dtype=np.dtype(np.float32), shape=shape, file=path,
                                     offset=offset, loader=loader, ggml=info.name, stored=stored))
    _check_overlaps(path, spans)
    metadata = {"GGUF.version": header.version, "GGUF.alignment": header.alignment, **header.metadata}
    notes = []
    if quantized:
        kinds = ", ".join(f"{n} {name}" for name, n in sorted(quantized.items()))
        layouts = "; ".join(GGML_TYPES[c].describe() for c in sorted({i.code for i in GGML_TYPES.values() if i.name in quantized}))
        n = sum(quantized.values())
        notes.append(f"{n} quantized tensor{'s' if n > 1 else ''} ({kinds}): stored as blocks, not arrays; reading "
                     f"{'them' if n > 1 else 'it'} needs dequantization to float32. {layouts}")
    if header.summarized:
        notes.append(f"long metadata arrays are summarized (length and type): {', '.join(header.summarized)}")
    if header.byteorder == ">":
        notes.append("big-endian GGUF file")
    return CheckpointIndex(builder.refs, format=FORMAT, files=[path], metadata=metadata, notes=notes, key_sep=".",
                           header_sha256=lazy_range_sha256(path, 0, header.data_start))


def _check_overlaps(path: str, spans: list[tuple[int, int, str]]) -> None:
    last_end, last_name = 0, ""
    for begin, end, name in sorted(spans):
        if begin < last_end and end > begin:
            raise FormatError(f"{path}: tensors {last_name!r} and {name!r} overlap in the data section")
        if end > last_end:
            last_end, last_name = end, name
