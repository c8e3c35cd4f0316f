"""Load converted weights straight into a Keras 3 model (needs keras).

>>> from ckptsurgeon.keras import load_into
>>> report = load_into(model, "pretrained.pt", scope=["encoder/rnn"], map=["encoder/rnn=bi"])

The model itself, saved as a ``.keras`` (weights + its configuration), is the graft template, so names,
layouts, dtypes *and the layers' own facts* (activations, ``reset_after``, ``go_backwards``) follow the
model; a model Keras cannot serialize falls back to its ``.weights.h5``. Either way the live layers' own
facts are read too (``keras_live``): a subclassed model's template states no layer config, its layers do.
Recurrent groups are converted (PyTorch -> Keras ...) and verified with the same checks and refusals as
``graft``; nothing loads on any misfit.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

from .api import as_maps
from .errors import CheckpointError
from .graft import GraftReport, graft
from .keras_live import template_facts
from .scopes import as_patterns

__all__ = ["load_into"]


def _save_template(model: Any, tmp: str) -> str:
    path = os.path.join(tmp, "template.keras")
    try:
        model.save(path)
        return path
    except Exception:  # noqa: BLE001 - subclassed models without get_config: weights only
        path = os.path.join(tmp, "template.weights.h5")
        model.save_weights(path)
        return path


# CLI options named in graft's messages -> what a caller of load_into passes (other options: ConvertOptions fields)
_ARGUMENTS = {"--map": "map=[...]", "--rules": "rules=", "--strict": "strict=True"}


def _reworded(message: str, tmp: str, model: Any) -> str:
    """A graft message as a caller of ``load_into`` needs it: the model, not its temporary ``.keras`` copy (the
    graft template); ``map=['SRC=DST']``, not ``--map SRC=DST``; ``options=ConvertOptions(allow_approx=True)``,
    not ``--allow-approx``."""
    name = getattr(model, "name", None)
    message = re.sub(re.escape(tmp) + r"[/\\][^\s:;,'\")]*", f"the model {name!r}" if name else "the model", message)
    message = re.sub(r"\btemplate\b", "model", message)
    message = re.sub(r"--map '([^']*)'", r"map=['\1']", message)
    message = re.sub(r"--map ([^\s'\";()]+=[^\s'\";()]*?)(?=[,.]?(?:\s|$|\)))", r"map=['\1']", message)

    def argument(m: re.Match[str]) -> str:
        flag = m.group(0)
        if flag in _ARGUMENTS:
            return _ARGUMENTS[flag]
        option = flag[2:].replace("-", "_")
        return f"options=ConvertOptions({option}={'True' if option.startswith('allow_') else '...'})"

    return re.sub(r"(?<![\w-])--[a-z][a-z-]*", argument, message)


def load_into(model: Any, source: Any, *, scope: Sequence[str] = (), map: str | Sequence[str | tuple[str, str]] = (),  # noqa: A002
              rules: str | None = None, strict: bool = False, options: Any = None,
              verify_atol: float | None = 1e-5) -> GraftReport:
    """Graft ``source`` into ``model``'s current weights and load the result; nothing loads on any misfit.

    Each recurrent group is verified first (``report.checks``; ``verify_atol=None`` skips it). ``map`` takes
    ``"SRC=DST"`` strings or (src, dst) pairs. Errors name the model, never the temporary file it is saved to.
    """
    scope, map = as_patterns(scope, "scope"), as_maps(map)  # noqa: A001
    with tempfile.TemporaryDirectory(prefix="ckptsurgeon-") as tmp:
        template = _save_template(model, tmp)
        out = os.path.join(tmp, "grafted" + (".keras" if template.endswith(".keras") else ".weights.h5"))
        try:
            report = graft(source, template, out, scope=scope, map=map, rules=rules, strict=strict, options=options,
                           verify_atol=verify_atol, template_facts=lambda index: template_facts(model, index))
        except CheckpointError as exc:
            exc.args = (_reworded(str(exc), tmp, model),)
            raise
        model.load_weights(out)
    report.out = None
    return report
