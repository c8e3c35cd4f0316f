"""Options shared by the commands that recognize recurrent groups."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..rnn.convert import ConvertOptions

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


class _Activation(click.ParamType):
    """An activation name of ``rnn.activations`` (checked when used, so ``--help`` loads no recurrent code)."""

    name = "activation"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        from ..rnn.activations import ACTIVATIONS

        if value not in ACTIVATIONS:
            self.fail(f"{value!r} is not one of {', '.join(sorted(ACTIVATIONS))}", param, ctx)
        return value


# Keras Bidirectional merge modes (rnn.group.MERGE_MODES; a test checks they agree), listed here so that
# `--help` imports no recurrent code
_MERGE_MODES = ("concat", "sum", "mul", "ave", "none")
_FACTS = ("reset_after", "activation", "recurrent_activation", "go_backwards", "merge_mode", "cell_clip", "proj_clip")


def fact_options(f: Callable) -> Callable:
    """Facts a file may not state: declared here, used only where the file is silent (``rnn`` shows the source).

    The command receives them together as ``facts`` (a dict for ``build_options``)."""

    @functools.wraps(f)
    def command(*args, **kwargs):
        return f(*args, facts={name: kwargs.pop(name) for name in _FACTS}, **kwargs)

    g: Callable = command
    g = click.option("--reset-after/--reset-before", "reset_after", default=None,
                     help="GRU family, for GRUs whose file does not state it (no bias and no config, ONNX weights).")(g)
    g = click.option("--activation", type=_Activation(), default=None, metavar="NAME",
                     help="Cell/output activation, for files that do not state it (weights-only Keras 1/2 ...): "
                          "tanh, relu, linear, sigmoid ...")(g)
    g = click.option("--recurrent-activation", type=_Activation(), default=None, metavar="NAME",
                     help="Gate activation, for files that do not state it: sigmoid, hard_sigmoid_keras2 = "
                          "clip(0.2x+0.5, 0, 1) (Keras 1/2, tf.keras 2), hard_sigmoid_keras3 = relu6(x+3)/6 (Keras 3).")(g)
    g = click.option("--go-backwards/--no-go-backwards", "go_backwards", default=None,
                     help="Keras go_backwards, for weights-only files (default: Keras's False).")(g)
    g = click.option("--merge-mode", type=click.Choice(_MERGE_MODES), default=None,
                     help="Keras Bidirectional merge_mode, for weights-only files (default: Keras's concat; "
                          "none = Keras's None, two outputs).")(g)
    g = click.option("--cell-clip", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="TF1 LSTMCell/LSTMBlockCell cell_clip (not stored; default: none).")(g)
    return click.option("--proj-clip", type=click.FloatRange(min=0, min_open=True), default=None,
                        help="TF1 LSTMCell proj_clip, with num_proj (not stored; default: none).")(g)


def build_options(forget_bias: float | None, orientation: str | None, gate_names: tuple[str, ...],
                  var_names: tuple[str, ...], **extra) -> ConvertOptions:
    from ..rnn.convert import ConvertOptions  # the recurrent machinery loads only for commands that use it

    return ConvertOptions(forget_bias=forget_bias, orientation=orientation,
                          gate_names=_decl(gate_names, "ifgo", "--gate-names"),
                          var_names=_decl(var_names, "xhb", "--var-names"), **extra)
