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


def run_onnx(kind: str, arrays: dict[str, np.ndarray], attrs: dict, x: np.ndarray, *, runtime: str = "reference"):
    """Run one real ONNX LSTM/GRU node on ``x`` [T, B, in]; returns Y [T, D, B, H].

    ``runtime``: "reference" (onnx.reference; it ignores ``activations``, so only default activations),
    or "onnxruntime" (honours activations, HardSigmoid alpha/beta, direction)."""
    from onnx import TensorProto, helper

    names = [n for n in ("W", "R", "B") if n in arrays]
    inputs = ["X"] + names + (["", "", "", "P"] if "P" in arrays and kind == "lstm" else [])
    if "P" in arrays and "B" not in arrays:
        raise ValueError("P without B")
    node = helper.make_node(kind.upper(), inputs, ["Y"], **attrs)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, arrays[n].shape, arrays[n].astype(np.float32).ravel())
             for n in names + (["P"] if "P" in inputs else [])]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    x = np.asarray(x, np.float32)
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"X": x})[0]
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {"X": x})[0]
