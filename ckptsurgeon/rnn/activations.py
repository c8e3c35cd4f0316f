"""Recurrent activations as data: each name means exactly one formula.

Keras's ``hard_sigmoid`` is two different functions: Keras 1/2 and tf.keras 2 compute
``clip(0.2x + 0.5, 0, 1)``, Keras 3 computes ``relu6(x + 3) / 6`` (slope 1/6). They are named apart
here (``hard_sigmoid_keras2``, ``hard_sigmoid_keras3``) and a file's ``'hard_sigmoid'`` is resolved by
the Keras version that wrote it (``keras_facts``).

ONNX recurrent nodes name their activations with parameters (``activations``, ``activation_alpha``,
``activation_beta``). ``from_onnx`` gives the named formula when one matches (``HardSigmoid(0.2, 0.5)`` is
``hard_sigmoid_keras2``, ``Affine(1, 0)`` is ``linear``), else a parametric name that *is* the formula:
``LeakyRelu(alpha=0.1)``, ``HardSigmoid(alpha=0.3, beta=0.4)``, ``ScaledTanh(alpha=1.7, beta=0.6)``,
``Elu(alpha=1)``, ``ThresholdedRelu(alpha=0.5)``, ``Affine(alpha=2, beta=0)``. ``ACTIVATIONS`` resolves
those names too (``name in ACTIVATIONS``, ``ACTIVATIONS[name]``), so they travel through facts, metadata
and the reference cells like any other. Parameters are float32 values, as ONNX stores them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Activation", "ACTIVATIONS", "activation", "formula", "onnx_activation", "TORCH_ACTIVATIONS", "ONNX_FORMULAS",
           "from_onnx", "parametric_name"]


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    formula: str
    onnx: tuple[str, float | None, float | None] | None  # ONNX activations entry (name, alpha, beta)
    keras: str | None  # the name a Keras 3 layer takes for exactly this formula, if any


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_NAMED: dict[str, Activation] = {a.name: a for a in (
    Activation("sigmoid", _sigmoid, "1 / (1 + exp(-x))", ("Sigmoid", None, None), "sigmoid"),
    Activation("tanh", np.tanh, "tanh(x)", ("Tanh", None, None), "tanh"),
    # Keras 1, Keras 2, tf.keras 2 (keras/backend.py hard_sigmoid); ONNX HardSigmoid's own defaults
    Activation("hard_sigmoid_keras2", lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0), "clip(0.2 * x + 0.5, 0, 1)",
               ("HardSigmoid", 0.2, 0.5), None),
    # Keras 3 (keras.ops.hard_sigmoid)
    Activation("hard_sigmoid_keras3", lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0, "relu6(x + 3) / 6",
               ("HardSigmoid", 1.0 / 6.0, 0.5), "hard_sigmoid"),
    Activation("relu", lambda x: np.maximum(x, 0.0), "max(x, 0)", ("Relu", None, None), "relu"),
    Activation("linear", lambda x: x, "x", ("Affine", 1.0, 0.0), "linear"),
    Activation("softsign", lambda x: x / (1.0 + np.abs(x)), "x / (1 + |x|)", ("Softsign", None, None), "softsign"),
    Activation("softplus", lambda x: np.logaddexp(0.0, x), "log(1 + exp(x))", ("Softplus", None, None), "softplus"),
)}


# The ONNX recurrent operators' activation functions (onnx/defs/rnn/defs.cc): (alpha, beta) -> formula.
# Each entry: (takes alpha, takes beta, fn(x, alpha, beta), formula text with {a} and {b}).
ONNX_FORMULAS: dict[str, tuple[bool, bool, Callable[..., np.ndarray], str]] = {
    "Relu": (False, False, lambda x, a, b: np.maximum(x, 0.0), "max(x, 0)"),
    "Tanh": (False, False, lambda x, a, b: np.tanh(x), "tanh(x)"),
    "Sigmoid": (False, False, lambda x, a, b: _sigmoid(x), "1 / (1 + exp(-x))"),
    "Affine": (True, True, lambda x, a, b: a * x + b, "{a} * x + {b}"),
    "LeakyRelu": (True, False, lambda x, a, b: np.where(x >= 0, x, a * x), "x if x >= 0 else {a} * x"),
    "ThresholdedRelu": (True, False, lambda x, a, b: np.where(x > a, x, 0.0), "x if x > {a} else 0"),
    "ScaledTanh": (True, True, lambda x, a, b: a * np.tanh(b * x), "{a} * tanh({b} * x)"),
    "HardSigmoid": (True, True, lambda x, a, b: np.clip(a * x + b, 0.0, 1.0), "clip({a} * x + {b}, 0, 1)"),
    "Elu": (True, False, lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0))), "x if x >= 0 else {a} * (exp(x) - 1)"),
    "Softsign": (False, False, lambda x, a, b: x / (1.0 + np.abs(x)), "x / (1 + |x|)"),
    "Softplus": (False, False, lambda x, a, b: np.logaddexp(0.0, x), "log(1 + exp(x))"),
}


def _num(v: float) -> str:
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


def parametric_name(op: str, alpha: float | None, beta: float | None) -> str:
    """``LeakyRelu(alpha=0.1)``: the name of an ONNX activation with its parameters (float32)."""
    takes_a, takes_b = ONNX_FORMULAS[op][:2]
    args = ([f"alpha={_num(alpha)}"] if takes_a else []) + ([f"beta={_num(beta)}"] if takes_b else [])
    return f"{op}({', '.join(args)})" if args else op


_PARAMETRIC = re.compile(r"^(\w+)\((?:alpha=([^,()]+))?(?:, ?)?(?:beta=([^,()]+))?\)$")


def _parse(name: str) -> Activation | None:
    m = _PARAMETRIC.match(name)
    if not m or m.group(1) not in ONNX_FORMULAS:
        return None
    op, a_text, b_text = m.groups()
    takes_a, takes_b, fn, text = ONNX_FORMULAS[op]
    if (a_text is not None) != takes_a or (b_text is not None) != takes_b:
        return None
    try:
        a = float(np.float32(a_text)) if takes_a else None
        b = float(np.float32(b_text)) if takes_b else None
    except ValueError:
        return None
    if parametric_name(op, a, b) != name:
        return None  # one spelling per formula, so equal names mean equal formulas
    return Activation(name, lambda x: fn(x, a, b), text.format(a=_num(a or 0), b=_num(b or 0)), (op, a, b), None)


class _Activations(dict):
    """The named activations, plus every parametric ONNX name (``LeakyRelu(alpha=0.1)``) on lookup."""

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and _parse(name) is not None)

    def __missing__(self, name: str) -> Activation:
        found = _parse(name) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        return found

    def get(self, name, default=None):  # type: ignore[override]
        return self[name] if name in self else default


ACTIVATIONS: dict[str, Activation] = _Activations(_NAMED)


def from_onnx(op: str, alpha: float | None, beta: float | None) -> str:
    """The activation name for an ONNX node's entry (``op`` with its alpha/beta, float32): a named formula
    when one is exactly this function, else the parametric name."""
    takes_a, takes_b = ONNX_FORMULAS[op][:2]
    key = (op, np.float32(alpha) if takes_a else None, np.float32(beta) if takes_b else None)
    for a in _NAMED.values():
        if a.onnx is not None and (a.onnx[0], *(None if v is None else np.float32(v) for v in a.onnx[1:])) == key:
            return a.name
    return parametric_name(op, alpha, beta)


# What nn.LSTM/GRU and TF1's cells compute (TF1 cells take activation= but never store it).
TORCH_ACTIVATIONS = ("sigmoid", "tanh")


def activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"activation {name!r} has no reference formula here (known: {', '.join(ACTIVATIONS)})") from None


def formula(name: str | None) -> str:
    if name is None:
        return "not known"
    return ACTIVATIONS[name].formula if name in ACTIVATIONS else "no formula known"


def onnx_activation(name: str) -> tuple[str, float | None, float | None] | None:
    return ACTIVATIONS[name].onnx if name in ACTIVATIONS else None
