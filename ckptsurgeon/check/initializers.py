"""Guess how a weight tensor was initialized, with evidence.

Candidates whose parameters follow from the tensor's fans (PyTorch's default U(+-1/sqrt(H)), Glorot,
He, LeCun, uniform/normal/truncated) are tested with a Kolmogorov-Smirnov fit and their support;
fitted generic distributions come next; a tensor nothing explains is "not an initializer (trained)".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .summary import CHUNK, Summary, summarize, widen

__all__ = ["Guess", "guess_initializer", "orthogonality", "ks_pvalue"]

TRUNC = 0.8796256610342398  # std of a standard normal truncated to +-2
P_FIXED, P_FITTED = 0.01, 0.05
TINY = 32  # below this many values every candidate that fits is listed: the data cannot single one out
MARGIN = 2.0  # above it, candidates whose log-likelihood is within this many nats of the best are listed too
# Hand-set initializer parameters are round numbers (stddev=0.1, minval=-0.5, Keras's 0.05 defaults).
ROUND = sorted(m * 10.0 ** k for m in (1, 2, 5) for k in range(-4, 2))


def _round_near(value: float, lo: float, hi: float) -> float | None:
    """A round number in [lo, hi] closest to ``value``, if any."""
    inside = [r for r in ROUND if lo <= r <= hi]
    return min(inside, key=lambda r: abs(r - value)) if inside else None


@dataclass(frozen=True)
class Guess:
    name: str
    evidence: str
    p_value: float | None = None
    candidates: tuple[str, ...] = ()  # every initializer that fits, when the values cannot tell them apart

    def __str__(self) -> str:
        return self.name


def ks_pvalue(sample: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """Two-sided one-sample KS test (asymptotic Kolmogorov distribution, Stephens' correction)."""
    x = np.sort(sample.astype(np.float64).ravel())
    n = x.size
    f = cdf(x)
    d = max(float(np.max(np.arange(1, n + 1) / n - f)), float(np.max(f - np.arange(n) / n)))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    return float(min(1.0, max(0.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101)))))


def _uniform(a: float):
    cdf = lambda x: np.clip((x + a) / (2 * a), 0.0, 1.0)  # noqa: E731
    logpdf = lambda x: np.where(np.abs(x) <= a * (1 + 1e-6), -math.log(2 * a), -np.inf)  # noqa: E731
    return cdf, logpdf


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[float])(x)


def _normal(mu: float, sigma: float):
    cdf = lambda x: 0.5 * (1 + _erf((x - mu) / (sigma * math.sqrt(2))))  # noqa: E731
    logpdf = lambda x: -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))  # noqa: E731
    return cdf, logpdf


def _truncated(mu: float, sigma: float):
    lo, hi = 0.5 * (1 + math.erf(-2 / math.sqrt(2))), 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    cdf = lambda x: np.clip((0.5 * (1 + _erf((x - mu) / (sigma * math.sqrt(2)))) - lo) / (hi - lo), 0.0, 1.0)  # noqa: E731
    base = _normal(mu, sigma)[1]
    logpdf = lambda x: np.where(np.abs(x - mu) <= 2 * sigma * (1 + 1e-6), base(x) - math.log(hi - lo), -np.inf)  # noqa: E731
    return cdf, logpdf


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # inf/nan/1e38 weights: no warnings on stderr
def orthogonality(m: np.ndarray) -> tuple[float, float]:
    """(max |M^T M / g^2 - I|, gain g) with M the tall orientation of a matrix.

    The Gram matrix is built in column blocks from float64 row chunks, so neither a float64 copy of ``m`` nor
    a whole k x k Gram matrix of a big square matrix is ever held."""
    m = np.asarray(m)
    tall = m if m.shape[0] >= m.shape[1] else m.T
    n, k = tall.shape
    step = max(1, CHUNK // max(k, 1))  # rows, and Gram columns, per block
    diag = np.zeros(k)
    for r in range(0, n, step):
        c = widen(tall[r:r + step])
        diag += np.einsum("ij,ij->j", c, c)
    gain2 = float(np.mean(diag))
    if gain2 <= 0 or not math.isfinite(gain2):  # all zeros, or values so large that their squares overflow
        return float("inf"), 0.0
    worst = 0.0
    for j in range(0, k, step):
        block = np.zeros((k, min(step, k - j)))
        for r in range(0, n, step):
            c = widen(tall[r:r + step])
            block += c.T @ c[:, j:j + step]
        block /= gain2
        block[np.arange(j, j + block.shape[1]), np.arange(block.shape[1])] -= 1.0
        worst = max(worst, float(np.max(np.abs(block))))
    return worst, math.sqrt(gain2)


# Which parameter-free initializers each framework family offers (None: any).
FAMILY_CANDIDATES = {
    "torch": {"PyTorch default U(+-1/sqrt(H))", "PyTorch nn.Linear default U(+-1/sqrt(fan_in))", "Glorot/Xavier uniform",
              "He/Kaiming uniform", "Glorot/Xavier normal", "He/Kaiming normal"},
    "keras": {"Glorot/Xavier uniform", "He/Kaiming uniform", "LeCun uniform / TF1 uniform_unit_scaling",
              "Glorot/Xavier normal (Keras, truncated)", "He/Kaiming normal (Keras, truncated)", "LeCun normal (Keras, truncated)"},
    "tf1": {"Glorot/Xavier uniform", "LeCun uniform / TF1 uniform_unit_scaling", "He/Kaiming uniform",
            "Glorot/Xavier normal", "He/Kaiming normal"},
}


def _fixed_candidates(fans: Sequence[tuple[int, int]], hidden: int | None, family: str | None = None):
    """(name, evidence, (cdf, logpdf), uniform bound or None) for initializers with no free parameter."""
    allowed = FAMILY_CANDIDATES.get(family or "")
    return [c for c in _all_fixed(fans, hidden) if allowed is None or c[0] in allowed]


def _all_fixed(fans: Sequence[tuple[int, int]], hidden: int | None):
    out = []
    if hidden:
        a = 1 / math.sqrt(hidden)
        out.append(("PyTorch default U(+-1/sqrt(H))", f"uniform within +-{a:.4g} = 1/sqrt({hidden})", _uniform(a), a))
    for fan_in, fan_out in fans:
        tag = f"fan_in={fan_in}, fan_out={fan_out}"
        for name, bound, formula in (
            ("Glorot/Xavier uniform", math.sqrt(6 / (fan_in + fan_out)), "sqrt(6/(fan_in+fan_out))"),
            ("He/Kaiming uniform", math.sqrt(6 / fan_in), "sqrt(6/fan_in)"),
            ("LeCun uniform / TF1 uniform_unit_scaling", math.sqrt(3 / fan_in), "sqrt(3/fan_in)"),
            ("PyTorch nn.Linear default U(+-1/sqrt(fan_in))", 1 / math.sqrt(fan_in), "1/sqrt(fan_in)"),
        ):
            out.append((name, f"uniform within +-{bound:.4g} = {formula}, {tag}", _uniform(bound), bound))
        for label, var in (("Glorot/Xavier", 2 / (fan_in + fan_out)), ("He/Kaiming", 2 / fan_in), ("LeCun", 1 / fan_in)):
            sd = math.sqrt(var)
            out.append((f"{label} normal", f"normal, stddev {sd:.4g}, {tag}", _normal(0, sd), None))
            out.append((f"{label} normal (Keras, truncated)", f"normal truncated at +-2 sigma, sample stddev {sd:.4g}, {tag}",
                        _truncated(0, sd / TRUNC), None))
    return out


def _rounds(value: float, rel: float) -> list[float]:
    """Round numbers within ``value * (1 -+ rel)`` (a parameter's 3-sigma sampling window), nearest first."""
    inside = [r for r in ROUND if value * (1 - rel) <= r <= value * (1 + rel)]
    return sorted(inside, key=lambda r: abs(r - value))


def _fitted_candidates(n: int, mu: float, sd: float, amax: float, lo: float, hi: float):
    """Uniform / truncated normal / normal whose parameters are round numbers consistent with the data.

    Hand-set initializers take round parameters (``truncated_normal_initializer(mean=-0.1, stddev=0.01)``): every
    round mean (of either sign) and stddev within its 3-sigma sampling window is a candidate, so a small tensor is
    not called trained because its sample stddev strayed from the round one. The size, extremes and moments are
    exact (of every value, not of the sample).
    """
    out = []
    a = _round_near(amax, amax * (1 - 1e-6), amax * (1 + 4.0 / n))
    se_mu = 3 * sd / math.sqrt(n)
    if a is not None and abs(mu) < se_mu:
        out.append((f"uniform(+-{a:g})", f"uniform within a round bound +-{a:g} (max |x| {amax:.3g})", _uniform(a), 1))
    means = [0.0] if abs(mu) < se_mu else [math.copysign(r, mu) for r in ROUND if abs(abs(mu) - r) <= se_mu]
    rel = min(0.9, 3 / math.sqrt(2 * max(n - 1, 1)))  # sampling error of a stddev estimate, 3 sigma
    for m in means:
        dev = max(hi - m, m - lo)
        for r in _rounds(sd / TRUNC, rel):
            if dev <= 2 * r * (1 + 1e-6):
                out.append((f"truncated normal (mean {m:g}, stddev {r:g})",
                            f"normal truncated at +-2 sigma, round stddev {r:g} (fitted {sd / TRUNC:.3g})", _truncated(m, r), 2))
        for r in _rounds(sd, rel):
            out.append((f"normal (mean {m:g}, stddev {r:g})", f"normal, round stddev {r:g} (fitted {sd:.3g})", _normal(m, r), 2))
    return out


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # huge values overflow the likelihoods: no warnings
def guess_initializer(values: np.ndarray, *, fans: Sequence[tuple[int, int]] = (), hidden: int | None = None,
                      gate: str | None = None, matrix: np.ndarray | None = None, family: str | None = None,
                      summary: Summary | None = None) -> Guess:
    """The best explanation of ``values`` (a tensor or one gate's slice of it).

    Candidates must pass a KS test and their support; among those the highest log-likelihood wins,
    fitted ones paying a BIC penalty for their free parameters. ``summary`` is ``summarize(values)``,
    when the caller has it already.
    """
    s = summary or summarize(values)
    if s.size == 0:
        return Guess("empty", "no values")
    if s.nonfinite:
        return Guess("not finite", f"{s.nonfinite} NaN/inf values")
    if s.zeros == s.size:
        return Guess("zeros", "every value is 0")
    mu, sd, n = s.mean, s.std, s.size
    if n == 1 and not (float(s.min).is_integer() or abs(float(s.min)) in ROUND):
        # one value is "constant" whatever it is: only a hand-set one (1, 10, 0.5) says initializer
        return Guess("too few values to tell", f"one value ({s.min:.6g}): a constant initializer sets a round number")
    if s.min == s.max or sd <= 1e-5 * abs(mu):
        note = " (Keras unit_forget_bias)" if abs(mu - 1.0) < 1e-6 and gate in ("f", "forget") else ""
        return Guess(f"constant {mu:.6g}{note}", "every value is " + (f"{s.min:g}" if s.min == s.max else f"~{mu:.6g}"))
    if s.distinct is not None and n >= 4 * len(s.distinct):
        return Guess("constant blocks " + ", ".join(f"{v:g}" for v in s.distinct),
                     "few distinct values, e.g. zeros with a forget-gate block of 1.0 (Keras unit_forget_bias)")
    m = matrix if matrix is not None else (np.asarray(values) if np.ndim(values) == 2 else None)
    if m is not None and min(m.shape) > 1:
        dist, gain = orthogonality(m)
        # Random columns are nearly orthogonal too, off by about 1/sqrt(rows): a very tall random matrix passes 1e-3
        if dist < min(1e-3, 0.1 / math.sqrt(max(m.shape))):
            return Guess(f"orthogonal (gain {gain:.3g})", f"max |M^T M/g^2 - I| = {dist:.2g}")
    amax, sample = s.amax, s.sample
    scored: list[tuple[float, int, str, str, float]] = []
    overflowed: list[str] = []
    for rank, (name, evidence, (cdf, logpdf), bound) in enumerate(_fixed_candidates(fans, hidden, family)):
        if bound is not None and amax > bound * (1 + 1e-6):
            if amax <= bound * 1.1:
                overflowed.append(name)
            continue
        ll = float(np.sum(logpdf(sample)))
        p = ks_pvalue(sample, cdf) if math.isfinite(ll) else 0.0
        if p > P_FIXED:
            scored.append((round(ll, 6), -rank, name, evidence, p))  # equal likelihood: the first listed wins
    if not overflowed and n >= 8:  # fitting a round parameter to fewer values would invent one
        fitted = _fitted_candidates(n, mu, sd, amax, s.min, s.max)
        for name, evidence, (cdf, logpdf), k in fitted:
            ll = float(np.sum(logpdf(sample)))
            p = ks_pvalue(sample, cdf) if math.isfinite(ll) else 0.0
            if p > P_FITTED:
                scored.append((round(ll - 0.5 * k * math.log(sample.size), 6), -1000, name, evidence, p))
    if scored:
        best = max(scored)[0]
        close = scored if n < TINY else [c for c in scored if best - c[0] < MARGIN]
        return _all_that_fit(close, n)
    if n < 8:
        return Guess("too few values to tell", f"{n} values: no initializer's support holds them all")
    near = f"; values just beyond the bound of {overflowed[0]}" if overflowed else ""
    return Guess("not an initializer (trained)", f"no initializer fits: mean {mu:.3g}, std {sd:.3g}, max |x| {amax:.3g}{near}")


def _all_that_fit(scored: list[tuple[float, int, str, str, float]], n: int) -> Guess:
    """The candidates given, most likely first, as one guess; one name when only one remains.

    Candidates with the same likelihood and KS p-value are the same distribution under two names
    (PyTorch's LSTM default and nn.Linear's with fan_in = H): the first listed stands for both.
    """
    seen_names: set[str] = set()
    seen_dist: set[tuple[float, float]] = set()
    kept = []
    for ll, rank, name, evidence, p in sorted(scored, reverse=True):
        if name in seen_names or (ll, round(p, 9)) in seen_dist:
            continue
        seen_names.add(name)
        seen_dist.add((ll, round(p, 9)))
        kept.append((name, evidence, p))
    if len(kept) == 1:
        name, evidence, p = kept[0]
        return Guess(name, f"{evidence}; KS p={p:.2g}", p)
    names = tuple(k[0] for k in kept)
    return Guess("one of: " + ", ".join(names), f"{n} values fit {len(names)} initializers about equally well, most likely "
                 f"first (too few values to tell them apart): " + "; ".join(f"{k[0]}: {k[1]}" for k in kept), None, names)
