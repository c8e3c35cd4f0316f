"""Load converted weights straight into a Keras 3 model (needs keras).

>>> from ckptsurgeon.keras import load_into
>>> report = load_into(model, "pretrained.pt", scope=["encoder/rnn"], map=["encoder/rnn=bi"])

The model's own weights file is the graft template, so names, layouts and dtypes follow the model;
recurrent groups are converted (PyTorch -> Keras ...) with the same checks and refusals as ``graft``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from .graft import GraftReport, graft
from .scopes import as_patterns

__all__ = ["load_into"]


def load_into(model: Any, source: Any, *, scope: Sequence[str] = (), map: Sequence[str] = (),  # noqa: A002
              rules: str | None = None, strict: bool = False, options: Any = None) -> GraftReport:
    """Graft ``source`` into ``model``'s current weights and load the result; nothing loads on any misfit."""
    scope, map = as_patterns(scope, "scope"), as_patterns(map, "map")  # noqa: A001
    with tempfile.TemporaryDirectory(prefix="ckptsurgeon-") as tmp:
        template = os.path.join(tmp, "template.weights.h5")
        model.save_weights(template)
        out = os.path.join(tmp, "grafted.weights.h5")
        report = graft(source, template, out, scope=scope, map=map, rules=rules, strict=strict, options=options)
        model.load_weights(out)
    report.out = None
    return report
