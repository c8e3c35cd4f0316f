"""Write tiny TensorFlow bundles by hand, to craft malformed ones for the refusal tests."""
from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import numpy as np

from ckptsurgeon.formats.tensorflow.sstable import MAGIC, mask, varint


def field(number: int, value) -> bytes:
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def shape_proto(shape) -> bytes:
    return b"".join(field(2, field(1, d)) for d in shape)


def entry(dtype: int, shape, shard: int, offset: int, size: int, crc: int | None, slices: list[bytes] = ()) -> bytes:
    out = field(1, dtype) + field(2, shape_proto(shape)) + field(3, shard) + field(4, offset) + field(5, size)
    if crc is not None:
        out += varint(6 << 3 | 5) + struct.pack("<I", crc)
    return out + b"".join(field(7, s) for s in slices)


def _block(pairs: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in pairs)
    restarts = [0]
    return body + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", mask(google_crc32c.value(block + b"\x00")))


def table(pairs: list[tuple[bytes, bytes]]) -> bytes:
    data = _with_trailer(_block(sorted(pairs)))
    handle = varint(0) + varint(len(data) - 5)
    meta = _with_trailer(_block([]))
    meta_handle = varint(len(data)) + varint(len(meta) - 5)
    index = _with_trailer(_block([(sorted(pairs)[-1][0], handle)]))
    index_handle = varint(len(data) + len(meta)) + varint(len(index) - 5)
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
    return data + meta + index + footer


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], *, tweak=None, num_shards: int = 1) -> None:
    """float32 tensors in shard 0; ``tweak(key, fields)`` may change an entry's fields first."""
    data = bytearray()
    pairs = [(b"", field(1, num_shards) + field(3, field(1, 1)))]
    for key, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        fields = {"dtype": 1, "shape": list(arr.shape), "shard": 0, "offset": len(data), "size": len(raw),
                  "crc": mask(google_crc32c.value(raw)), "slices": []}
        if tweak:
            tweak(key, fields)
        pairs.append((key.encode(), entry(**fields)))
        data += raw
    prefix.with_name(prefix.name + ".index").write_bytes(table(pairs))
    prefix.with_name(prefix.name + f".data-00000-of-{num_shards:05d}").write_bytes(bytes(data))
