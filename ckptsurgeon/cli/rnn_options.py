"""Options shared by the commands that recognize recurrent groups."""
from __future__ import annotations

import functools
from collections.abc import Callable

import click

from ..rnn.activations import ACTIVATIONS
from ..rnn.convert import ConvertOptions
from ..rnn.group import MERGE_MODES

__all__ = ["rnn_options", "fact_options", "build_options"]


def rnn_options(f: Callable) -> Callable:
    f = click.option("--forget-bias", type=float, default=None,
                     help="TF1 LSTMCell/BasicLSTMCell/LSTMBlockCell run-time forget bias (not stored; default 1.0, "
                          "the constructors' default).")(f)
    f = click.option("--orientation", type=click.Choice(["xw", "wx"]), default=None,
                     help="Hand-built cells whose input size equals hidden size: x @ W (in, H) or W @ x (H, in). "
                          "Required for those: the shapes cannot tell.")(f)
    f = click.option("--gate-names", multiple=True, metavar="GATE=NAME[,NAME]",
                     help="Declare custom per-gate scope names, GATE one of i,f,g,o (g = cell candidate).")(f)
    return click.option("--var-names", multiple=True, metavar="ROLE=NAME[,NAME]",
                        help="Declare custom per-gate variable names, ROLE one of x (input), h (recurrent), b (bias).")(f)


def _decl(values: tuple[str, ...], allowed: str, option: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for value in values:
        key, sep, names = value.partition("=")
        if not sep or key not in allowed or not names:
            raise click.BadParameter(f"{value!r}: expected one of {', '.join(allowed)}=NAME[,NAME]", param_hint=option)
        out[key] = tuple(n for n in names.split(",") if n)
    return out


_FACTS = ("reset_after", "activation", "recurrent_activation", "go_backwards", "merge_mode", "cell_clip", "proj_clip")


def fact_options(f: Callable) -> Callable:
    """Facts a file may not state: declared here, used only where the file is silent (``rnn`` shows the source).

    The command receives them together as ``facts`` (a dict for ``build_options``)."""
    names = sorted(ACTIVATIONS)

    @functools.wraps(f)
    def command(*args, **kwargs):
        return f(*args, facts={name: kwargs.pop(name) for name in _FACTS}, **kwargs)

    g: Callable = command
    g = click.option("--reset-after/--reset-before", "reset_after", default=None,
                     help="GRU family, for GRUs whose file does not state it (no bias and no config, ONNX weights).")(g)
    g = click.option("--activation", type=click.Choice(names), default=None,
                     help="Cell/output activation, for files that do not state it (weights-only Keras 1/2 ...).")(g)
    g = click.option("--recurrent-activation", type=click.Choice(names), default=None,
                     help="Gate activation, for files that do not state it. hard_sigmoid_keras2 = clip(0.2x+0.5, 0, 1) "
                          "(Keras 1/2, tf.keras 2), hard_sigmoid_keras3 = relu6(x+3)/6 (Keras 3).")(g)
    g = click.option("--go-backwards/--no-go-backwards", "go_backwards", default=None,
                     help="Keras go_backwards, for weights-only files (default: Keras's False).")(g)
    g = click.option("--merge-mode", type=click.Choice(list(MERGE_MODES)), default=None,
                     help="Keras Bidirectional merge_mode, for weights-only files (default: Keras's concat; "
                          "none = Keras's None, two outputs).")(g)
    g = click.option("--cell-clip", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="TF1 LSTMCell/LSTMBlockCell cell_clip (not stored; default: none).")(g)
    return click.option("--proj-clip", type=click.FloatRange(min=0, min_open=True), default=None,
                        help="TF1 LSTMCell proj_clip, with num_proj (not stored; default: none).")(g)


def build_options(forget_bias: float | None, orientation: str | None, gate_names: tuple[str, ...],
                  var_names: tuple[str, ...], **extra) -> ConvertOptions:
    return ConvertOptions(forget_bias=forget_bias, orientation=orientation,
                          gate_names=_decl(gate_names, "ifgo", "--gate-names"),
                          var_names=_decl(var_names, "xhb", "--var-names"), **extra)
