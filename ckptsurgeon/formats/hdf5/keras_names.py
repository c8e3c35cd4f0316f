"""Keras variable names by layer class, for files that store variables by index (Keras 3 ``vars/0``).

Keys are the snake-case class names Keras 3 uses for its groups (``lstm``, ``cu_dnnlstm``);
a recurrent layer's variables live in its ``cell`` group under ``<class>_cell``.
"""
from __future__ import annotations

import re

__all__ = ["VAR_NAMES", "var_names", "class_key"]

VAR_NAMES: dict[str, tuple[str, ...]] = {
    "lstm_cell": ("kernel", "recurrent_kernel", "bias"),  # Keras 2/3 LSTMCell
    "gru_cell": ("kernel", "recurrent_kernel", "bias"),  # Keras 2/3 GRUCell (bias (2,3H) when reset_after)
    "simple_rnn_cell": ("kernel", "recurrent_kernel", "bias"),
    "cu_dnnlstm": ("kernel", "recurrent_kernel", "bias"),  # tf.keras 2 CuDNNLSTM (bias 8H)
    "cu_dnngru": ("kernel", "recurrent_kernel", "bias"),  # tf.keras 2 CuDNNGRU (bias 6H)
    "conv_lstm_cell": ("kernel", "recurrent_kernel", "bias"),
    "cell": ("kernel", "recurrent_kernel", "bias"),  # any Keras RNN cell whose class is not stored
    "dense": ("kernel", "bias"),
    "einsum_dense": ("kernel", "bias"),
    "embedding": ("embeddings",),
    "conv1d": ("kernel", "bias"),
    "conv2d": ("kernel", "bias"),
    "conv3d": ("kernel", "bias"),
    "conv1d_transpose": ("kernel", "bias"),
    "conv2d_transpose": ("kernel", "bias"),
    "layer_normalization": ("gamma", "beta"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "p_re_lu": ("alpha",),
}

# Recurrent layer classes whose weights live in a "cell" subgroup, and that cell's class key.
CELL_OF = {"lstm": "lstm_cell", "gru": "gru_cell", "simple_rnn": "simple_rnn_cell", "conv_lstm1d": "conv_lstm_cell",
           "conv_lstm2d": "conv_lstm_cell", "conv_lstm3d": "conv_lstm_cell"}


def class_key(group_name: str) -> str:
    """``lstm_1`` -> ``lstm``: Keras 3 deduplicates group names with a numeric suffix."""
    return re.sub(r"_\d+$", "", group_name)


def var_names(cls: str, count: int, use_bias: bool | None = None) -> tuple[str, ...] | None:
    """Variable names for ``count`` stored variables of class ``cls``, or None when unknown."""
    names = VAR_NAMES.get(cls)
    if names is None:
        return None
    if len(names) == count:
        return names
    if use_bias is False or (use_bias is None and "bias" in names and len(names) - 1 == count):
        trimmed = tuple(n for n in names if n != "bias")
        return trimmed if len(trimmed) == count else None
    return None
