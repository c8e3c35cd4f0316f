"""One pass over a tensor's values in bounded chunks: the exact moments, extremes and counts that statistics
and initializer guesses need, and a fixed-seed sample for distribution tests.

No float64 copy of the whole tensor is ever made: each chunk of ``CHUNK`` values is widened on its own, so
``stats`` of a 1 GB tensor needs the tensor plus a few chunks, not 2 to 4 times the tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Summary", "summarize", "CHUNK", "MAX_SAMPLE", "widen"]

CHUNK = 1 << 20  # values widened to float64 at a time (8 MiB)
MAX_SAMPLE = 50_000  # distribution tests use a fixed-seed subsample; exact properties use every value
MAX_DISTINCT = 3  # "constant blocks" are told by at most this many distinct values


@dataclass(frozen=True)
class Summary:
    size: int
    nonfinite: int  # NaN and inf values
    zeros: int  # exact zeros
    mean: float  # of the finite values
    std: float  # population standard deviation of the finite values
    min: float
    max: float
    amax: float  # max |x| of the finite values
    l2: float  # of the finite values
    distinct: tuple[float, ...] | None  # every distinct value, when there are at most MAX_DISTINCT; else None
    sample: np.ndarray  # float64; every value when size <= MAX_SAMPLE, else MAX_SAMPLE of them (seed 0)


def widen(values: np.ndarray) -> np.ndarray:
    """float64 values of a chunk (float16, bfloat16 and float8 through float32)."""
    with np.errstate(invalid="ignore"):  # a signaling NaN raises "invalid" when cast; it stays a NaN, counted as one
        if values.dtype.kind == "V" or values.dtype.name.startswith(("bfloat16", "float8")):
            values = values.astype(np.float32)
        return values.astype(np.float64)


def _chunks(flat: np.ndarray):
    for start in range(0, flat.size, CHUNK):
        yield widen(flat[start:start + CHUNK])


def summarize(values: np.ndarray) -> Summary:
    """Two passes of at most ``CHUNK`` float64 values each: counts, extremes and the mean, then the variance
    around that mean (as ``np.std`` computes it, without its float64 copy of everything)."""
    flat = np.asarray(values).reshape(-1)
    n = int(flat.size)
    nonfinite = zeros = 0
    total, lo, hi = 0.0, math.inf, -math.inf
    distinct: set[float] | None = set()
    for x in _chunks(flat):
        ok = np.isfinite(x)
        bad = int(x.size - np.count_nonzero(ok))
        if bad:
            nonfinite += bad
            x = x[ok]
        zeros += int(x.size - np.count_nonzero(x))
        if x.size:
            total += float(np.sum(x))
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        if distinct is not None:
            distinct.update(np.unique(x[:4 * MAX_DISTINCT]).tolist())  # cheap early exit on varied values
            if len(distinct) <= MAX_DISTINCT:
                distinct.update(np.unique(x).tolist())
            if len(distinct) > MAX_DISTINCT:
                distinct = None
    finite = n - nonfinite
    mean = total / finite if finite else math.nan
    squares = centred = 0.0
    if finite:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e38 squared is inf: the statistic says so
            for x in _chunks(flat):
                x = x[np.isfinite(x)] if nonfinite else x
                squares += float(np.dot(x, x))
                d = x - mean
                centred += float(np.dot(d, d))
    std = math.sqrt(centred / finite) if finite else math.nan
    return Summary(n, nonfinite, zeros, mean, std, lo if finite else math.nan, hi if finite else math.nan,
                   max(abs(lo), abs(hi)) if finite else math.nan, math.sqrt(squares),
                   tuple(sorted(distinct)) if distinct is not None and nonfinite == 0 else None, _sample(flat))


def _sample(flat: np.ndarray) -> np.ndarray:
    if flat.size <= MAX_SAMPLE:
        return widen(flat)
    idx = np.random.default_rng(0).choice(flat.size, MAX_SAMPLE, replace=False)  # Floyd's: no permutation of n
    return widen(flat[idx])
