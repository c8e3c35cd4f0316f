"""Recurrent activations as data: each name means exactly one formula.

Keras's ``hard_sigmoid`` is two different functions: Keras 1/2 and tf.keras 2 compute
``clip(0.2x + 0.5, 0, 1)``, Keras 3 computes ``relu6(x + 3) / 6`` (slope 1/6). They are named apart
here (``hard_sigmoid_keras2``, ``hard_sigmoid_keras3``) and a file's ``'hard_sigmoid'`` is resolved by
the Keras version that wrote it (``keras_facts``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Activation", "ACTIVATIONS", "activation", "formula", "onnx_activation", "TORCH_ACTIVATIONS"]


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    formula: str
    onnx: tuple[str, float | None, float | None] | None  # ONNX activations entry (name, alpha, beta)
    keras: str | None  # the name a Keras 3 layer takes for exactly this formula, if any


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
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
