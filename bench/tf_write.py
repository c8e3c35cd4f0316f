"""Write a TF1 name-based checkpoint of N small variables (dense_i/kernel, dense_i/bias).

    python bench/tf_write.py PREFIX N          # by hand: a bundle laid out as TensorFlow lays it out
    python bench/tf_write.py PREFIX N --tf     # with TensorFlow (tf.raw_ops.SaveV2, TF1 names)

The hand-written bundle follows tensorflow/core/util/tensor_bundle and core/lib/io/table_builder:
256 KiB blocks, a restart point every 16 keys, shared key prefixes, masked crc32c per block.
It stays in bench/: the package only reads bundles.
"""
from __future__ import annotations

import struct
import sys

import numpy as np

BLOCK = 256 * 1024
RESTART = 16
DT_FLOAT = 1


def variables(n: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n // 2):
        out.append((f"dense_{i}/kernel", rng.standard_normal((32, 32), dtype=np.float32)))
        out.append((f"dense_{i}/bias", rng.standard_normal(32, dtype=np.float32)))
    return out


def write_with_tf(prefix: str, n: int) -> None:
    import tensorflow as tf

    rows = variables(n)
    names = [k for k, _ in rows]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(v) for _, v in rows])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


class _Table:
    def __init__(self) -> None:
        self.out = bytearray()
        self.index: list[tuple[bytes, bytes]] = []
        self._block: list[tuple[bytes, bytes]] = []
        self._size = 0

    def _encode(self, pairs: list[tuple[bytes, bytes]]) -> bytes:
        body, restarts, last = bytearray(), [], b""
        for i, (k, v) in enumerate(pairs):
            shared = 0
            if i % RESTART:
                while shared < min(len(k), len(last)) and k[shared] == last[shared]:
                    shared += 1
            else:
                restarts.append(len(body))
            body += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
            last = k
        restarts = restarts or [0]
        return bytes(body) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))

    def _emit(self, block: bytes) -> bytes:
        from ckptsurgeon.formats.tensorflow.sstable import masked_crc32c  # here: the TF venv has no ckptsurgeon
        handle = _varint(len(self.out)) + _varint(len(block))
        self.out += block + b"\x00" + struct.pack("<I", masked_crc32c(block + b"\x00"))
        return handle

    def add(self, key: bytes, value: bytes) -> None:
        self._block.append((key, value))
        self._size += len(key) + len(value) + 8
        if self._size >= BLOCK:
            self.flush()

    def flush(self) -> None:
        if self._block:
            self.index.append((self._block[-1][0], self._emit(self._encode(self._block))))
            self._block, self._size = [], 0

    def finish(self) -> bytes:
        from ckptsurgeon.formats.tensorflow.sstable import MAGIC
        self.flush()
        meta = self._emit(self._encode([]))
        index = self._emit(self._encode(self.index))
        footer = (meta + index).ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
        return bytes(self.out + footer)


def write_by_hand(prefix: str, n: int) -> None:
    from ckptsurgeon.formats.tensorflow.sstable import masked_crc32c
    rows = sorted(variables(n))
    data = bytearray()
    table = _Table()
    table.add(b"", _field(1, 1) + _field(3, _field(1, 1)))  # num_shards 1, little-endian, version 1
    for key, arr in rows:
        raw = arr.astype("<f4").tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in arr.shape)
        entry = (_field(1, DT_FLOAT) + _field(2, shape) + (_field(4, len(data)) if data else b"") + _field(5, len(raw))
                 + _varint(6 << 3 | 5) + struct.pack("<I", masked_crc32c(raw)))
        table.add(key.encode(), entry)
        data += raw
    with open(prefix + ".index", "wb") as fh:
        fh.write(table.finish())
    with open(prefix + ".data-00000-of-00001", "wb") as fh:
        fh.write(data)


def main() -> None:
    prefix, n = sys.argv[1], int(sys.argv[2])
    (write_with_tf if "--tf" in sys.argv[3:] else write_by_hand)(prefix, n)


if __name__ == "__main__":
    main()
