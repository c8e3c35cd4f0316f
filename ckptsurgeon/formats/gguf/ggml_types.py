"""The ggml tensor types a GGUF file names by number: data, one row per type.

Each row: the type's number in the file, its name as ckptsurgeon shows it (ggml's own name, lower case),
the weights per block, the bytes per block, and the block's layout (from ggml's ``ggml-common.h``).
Plain types (one weight per "block") map to a numpy dtype and are read byte-exact; the others are
quantized blocks, listed with their layout and decoded to float32 only when asked (``dequantizing``).
The sizes are checked against the ``gguf`` package's own ``GGML_QUANT_SIZES`` by the tests.
"""
from __future__ import annotations

from typing import NamedTuple


from ...dtypes import DtypeTable

__all__ = ["GGMLType", "GGML_TYPES", "PLAIN_DTYPES"]


class GGMLType(NamedTuple):
    code: int
    name: str
    block: int  # weights per block
    block_bytes: int
    layout: str

    @property
    def quantized(self) -> bool:
        return self.code not in PLAIN_DTYPES

    def describe(self) -> str:
        """``q4_0: blocks of 32 weights in 18 bytes (...)``."""
        return f"{self.name}: blocks of {self.block} weights in {self.block_bytes} bytes ({self.layout})"


_ROWS = (
    # plain types, byte-exact
    GGMLType(0, "f32", 1, 4, "IEEE float32"),
    GGMLType(1, "f16", 1, 2, "IEEE float16"),
    GGMLType(24, "i8", 1, 1, "int8"),
    GGMLType(25, "i16", 1, 2, "int16"),
    GGMLType(26, "i32", 1, 4, "int32"),
    GGMLType(27, "i64", 1, 8, "int64"),
    GGMLType(28, "f64", 1, 8, "IEEE float64"),
    GGMLType(30, "bf16", 1, 2, "bfloat16"),
    # legacy block quants: w = d * q (+ m)
    GGMLType(2, "q4_0", 32, 18, "f16 scale d, 16 bytes of 4-bit quants q; w = d*(q-8)"),
    GGMLType(3, "q4_1", 32, 20, "f16 scale d, f16 min m, 16 bytes of 4-bit quants q; w = d*q + m"),
    GGMLType(6, "q5_0", 32, 22, "f16 scale d, 4 bytes of 5th bits, 16 bytes of low nibbles; w = d*(q-16)"),
    GGMLType(7, "q5_1", 32, 24, "f16 scale d, f16 min m, 4 bytes of 5th bits, 16 bytes of low nibbles; w = d*q + m"),
    GGMLType(8, "q8_0", 32, 34, "f16 scale d, 32 int8 quants q; w = d*q"),
    GGMLType(9, "q8_1", 32, 40, "f32 scale d, f32 sum s, 32 int8 quants q; w = d*q"),
    # k-quants: super-blocks of 256 weights with quantized sub-block scales
    GGMLType(10, "q2_k", 256, 84, "16 bytes of 4-bit sub-block scales and mins, 64 bytes of 2-bit quants, f16 d, f16 dmin"),
    GGMLType(11, "q3_k", 256, 110, "32 bytes of high-bit mask, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, f16 d"),
    GGMLType(12, "q4_k", 256, 144, "f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks, 128 bytes of 4-bit quants"),
    GGMLType(13, "q5_k", 256, 176, "f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 32 bytes of 5th bits, 128 bytes of nibbles"),
    GGMLType(14, "q6_k", 256, 210, "128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 sub-block scales, f16 d"),
    GGMLType(15, "q8_k", 256, 292, "f32 d, 256 int8 quants, 16 int16 sums of 16-weight groups"),
    # i-quants: codebook (lattice) quants of llama.cpp
    GGMLType(16, "iq2_xxs", 256, 66, "f16 d, 2.06-bit codebook indices and signs"),
    GGMLType(17, "iq2_xs", 256, 74, "f16 d, 2.31-bit codebook indices, 4-bit scales"),
    GGMLType(18, "iq3_xxs", 256, 98, "f16 d, 3.06-bit codebook indices, signs and scales"),
    GGMLType(19, "iq1_s", 256, 50, "f16 d, 1.56-bit codebook indices, 3-bit scales"),
    GGMLType(20, "iq4_nl", 32, 18, "f16 d, 16 bytes of 4-bit indices into a non-linear table"),
    GGMLType(21, "iq3_s", 256, 110, "f16 d, 3.44-bit codebook indices, signs and scales"),
    GGMLType(22, "iq2_s", 256, 82, "f16 d, 2.5-bit codebook indices, signs and scales"),
    GGMLType(23, "iq4_xs", 256, 136, "f16 d, 6-bit sub-block scales, 4-bit indices into a non-linear table"),
    GGMLType(29, "iq1_m", 256, 56, "1.75-bit codebook indices and scales (d packed in the scales)"),
    # ternary and microscaling formats
    GGMLType(34, "tq1_0", 256, 54, "ternary weights, 1.69 bits each (base-3 packed), f16 d"),
    GGMLType(35, "tq2_0", 256, 66, "ternary weights, 2 bits each, f16 d"),
    GGMLType(39, "mxfp4", 32, 17, "e8m0 shared exponent, 16 bytes of fp4 (e2m1) weights"),
    GGMLType(40, "nvfp4", 64, 36, "fp4 (e2m1) weights with fp8 sub-block scales"),
    GGMLType(41, "q1_0", 128, 18, "f16 scale, 16 bytes of 1-bit signs"),
)

GGML_TYPES: dict[int, GGMLType] = {row.code: row for row in _ROWS}

# The plain types' numpy dtypes (little-endian; a big-endian file's are swapped by the reader).
PLAIN_DTYPES = DtypeTable({
    0: "<f4",
    1: "<f2",
    24: "i1",
    25: "<i2",
    26: "<i4",
    27: "<i8",
    28: "<f8",
    30: "bfloat16",
})
