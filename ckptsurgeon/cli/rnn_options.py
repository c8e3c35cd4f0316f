"""Options shared by the commands that recognize recurrent groups."""
from __future__ import annotations

from collections.abc import Callable

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..rnn.convert import ConvertOptions

__all__ = ["rnn_options", "build_options"]


def rnn_options(f: Callable) -> Callable:
    f = click.option("--forget-bias", type=float, default=1.0, show_default=True,
                     help="TF1 LSTMCell/BasicLSTMCell/LSTMBlockCell run-time forget bias.")(f)
    f = click.option("--orientation", type=click.Choice(["xw", "wx"]), default="xw", show_default=True,
                     help="Hand-built cells whose input size equals hidden size: x @ W (in, H) or W @ x (H, in).")(f)
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


def build_options(forget_bias: float, orientation: str, gate_names: tuple[str, ...], var_names: tuple[str, ...],
                  **extra) -> ConvertOptions:
    from ..rnn.convert import ConvertOptions  # the recurrent machinery loads only for commands that use it

    return ConvertOptions(forget_bias=forget_bias, orientation=orientation,
                          gate_names=_decl(gate_names, "ifgo", "--gate-names"),
                          var_names=_decl(var_names, "xhb", "--var-names"), **extra)
