"""Write a TF1 name-based checkpoint of N small variables (dense_i/kernel, dense_i/bias).

    python bench/tf_write.py PREFIX N          # with ckptsurgeon's bundle writer (no TensorFlow needed)
    python bench/tf_write.py PREFIX N --tf     # with TensorFlow (tf.raw_ops.SaveV2, TF1 names)
"""
from __future__ import annotations

import sys

import numpy as np

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


def write_by_hand(prefix: str, n: int) -> None:
    """The bundle ckptsurgeon's own writer makes (byte-identical to TensorFlow's SaveV2, tests/test_tf_writer.py)."""
    from ckptsurgeon.formats.tensorflow.writer import write_bundle

    write_bundle(dict(variables(n)), prefix)


def main() -> None:
    prefix, n = sys.argv[1], int(sys.argv[2])
    (write_with_tf if "--tf" in sys.argv[3:] else write_by_hand)(prefix, n)


if __name__ == "__main__":
    main()
