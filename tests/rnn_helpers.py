"""Helpers for the recurrent tests: fixtures' recorded values and conversions held in memory."""
from __future__ import annotations

import json

import numpy as np

import ckptsurgeon
from ckptsurgeon.index import memory_index
from ckptsurgeon.rnn.convert import TARGETS, ConvertOptions, convert_index
from ckptsurgeon.rnn.recognize import recognize
from conftest import FIXTURES

TF = FIXTURES / "tensorflow"


def tf_outputs(folder: str) -> dict[str, np.ndarray]:
    arrays = np.load(TF / folder / "reference.npz")
    return {k[4:]: arrays[k] for k in arrays.files if k.startswith("out/")}


def tf_meta(folder: str) -> dict:
    return json.loads((TF / folder / "reference.json").read_text())


def convert(index, target: str, **options):
    """Convert every group of ``index`` to ``target``; returns (index of the result, {name: array}).

    The result index carries the conversions' self-descriptions as a file written by ckptsurgeon would."""
    rows, done = convert_index(index, target, ConvertOptions(**options))
    arrays = {key: (v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else np.asarray(v)) for _, key, v in rows}
    sep = TARGETS[target].sep
    out = memory_index(((k.replace(sep, "/"), k, a) for k, a in arrays.items()), format=target, file="<memory>")
    out.metadata["__metadata__"] = {k: v for c in done for k, v in c.stated().items()}
    return out, arrays


def only_group(index, **kw):
    groups = recognize(index, **kw)
    assert len(groups) == 1, [g.scope for g in groups]
    return groups[0]


def open_scope(path, scope):
    return ckptsurgeon.open(path).select(scope)
