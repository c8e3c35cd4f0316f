"""safetensors: an 8-byte header length, a JSON header, one contiguous byte buffer.

The header is validated as the reference implementation does (safetensors/src/tensor.rs): size
limits, UTF-8 JSON, no duplicate keys, known dtypes, offsets that tile the buffer exactly, sizes
that agree with dtype x shape, no trailing bytes.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...dtypes import SAFETENSORS_CODES, SAFETENSORS_DTYPES
from ...errors import FormatError, OutputError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...scopes import join_path, split_key
from ...source import open_source
from ..tree import is_optimizer_path

__all__ = ["sniff", "read", "write"]

FORMAT = "safetensors"
MAX_HEADER = 100_000_000


def sniff(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_HEADER, file_size - 8) and head[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"duplicate key {k!r} in header")
        out[k] = v
    return out


def read_header(path: str) -> tuple[dict[str, Any], int]:
    src = open_source(path)
    size = src.size
    if size < 8:
        raise FormatError(f"{path}: too short for safetensors ({size} bytes)")
    (n,) = struct.unpack("<Q", src.read(0, 8))
    if n > MAX_HEADER:
        raise UnsafeCheckpointError(f"{path}: safetensors header declares {n} bytes (limit {MAX_HEADER}); refusing")
    if 8 + n > size:
        raise FormatError(f"{path}: truncated safetensors: header of {n} bytes runs past the end of the file")
    try:
        header = json.loads(bytes(src.read(8, n)).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except FormatError as exc:
        raise FormatError(f"{path}: invalid safetensors header: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: safetensors header is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise FormatError(f"{path}: safetensors header nests too deeply (a header is a flat JSON object)") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + n


def read(path: str) -> CheckpointIndex:
    header, start = read_header(path)
    buffer_len = open_source(path).size - start
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    entries = []
    for key, info in header.items():
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{path}: tensor {key!r}: malformed header entry")
        code = info.get("dtype")
        dtype = SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
        if dtype is None:
            raise FormatError(f"{path}: tensor {key!r}: unsupported dtype {info.get('dtype')!r}")
        shape, offs = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FormatError(f"{path}: tensor {key!r}: invalid shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
            raise FormatError(f"{path}: tensor {key!r}: invalid data_offsets {offs!r}")
        check_shape(path, key, dtype, shape)
        numel = 1
        for d in shape:
            numel *= d
        if numel * dtype.itemsize >= 1 << 64:
            raise UnsafeCheckpointError(f"{path}: tensor {key!r}: shape {shape} overflows")
        if offs[1] - offs[0] != numel * dtype.itemsize:
            raise FormatError(
                f"{path}: tensor {key!r}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, "
                f"but {info['dtype']} x {shape} needs {numel * dtype.itemsize}"
            )
        entries.append((offs[0], offs[1], key, dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype, tuple(shape)))
    entries.sort(key=lambda e: (e[0], e[1]))
    expected = 0
    for begin, end, key, *_ in entries:
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else "leaves a gap before it"
            raise FormatError(f"{path}: tensor {key!r} at byte {begin} {what} (expected {expected})")
        expected = end
    if expected != buffer_len:
        raise FormatError(
            f"{path}: data buffer is {buffer_len} bytes but tensors cover {expected}"
            + (" (truncated file)" if expected > buffer_len else " (trailing bytes)")
        )
    builder = IndexBuilder(path)
    order = {key: i for i, key in enumerate(header)}
    for begin, _end, key, dtype, shape in sorted(entries, key=lambda e: order[e[2]]):
        p = join_path(split_key(key, "."))
        builder.add(TensorRef(path=p, key=key, dtype=dtype, shape=shape, file=path, offset=start + begin,
                              optimizer=is_optimizer_path(p)))
    return CheckpointIndex(builder.refs, format=FORMAT, files=[path], metadata={"__metadata__": meta}, key_sep=".")


def write(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """Write tensors (in the given order) to an open binary file, little-endian, byte-exact.

    Not ``safetensors.serialize_file``: that needs every tensor's bytes in memory at once and reorders
    tensors by dtype; this streams one tensor at a time (``tensors`` may be lazy) and keeps the order.
    The tests read every output back with the safetensors library itself.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    spec = getattr(tensors, "spec", None)  # lazy inputs say dtype and shape without reading the tensor
    for key in tensors:
        dtype, shape = spec(key) if spec is not None else (tensors[key].dtype, tensors[key].shape)
        code = SAFETENSORS_CODES.get(dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype)
        if code is None:
            raise OutputError(f"tensor {key!r}: dtype {dtype.name} has no safetensors code; cast it or use --format npz")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # align the buffer to 8 bytes like the reference writer
    fh.write(struct.pack("<Q", len(blob)))
    fh.write(blob)
    for key in header:
        if key == "__metadata__":
            continue
        arr = tensors[key]
        if list(arr.shape) != header[key]["shape"] or arr.nbytes != header[key]["data_offsets"][1] - header[key]["data_offsets"][0]:
            raise OutputError(f"tensor {key!r}: read {arr.dtype.name} {list(arr.shape)}, expected {header[key]['shape']}")
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False) if arr.dtype.itemsize > 1 else arr
        little = np.ascontiguousarray(little)
        if little.size:
            fh.write(little.reshape(-1).view(np.uint8).data)  # the array's own buffer: no second copy in memory
        del arr, little  # free this tensor before the next one is read: one tensor in memory at a time
