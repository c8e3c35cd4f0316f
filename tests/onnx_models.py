"""ONNX test models: made by the onnx helper API and by torch.onnx.export, in a temporary folder.

Also the reference listing: every tensor of a model as ``onnx.load`` + ``onnx.numpy_helper.to_array``
give it, at the scope path ckptsurgeon promises (graph scope + name split at '/' and '.').
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np

onnx = __import__("pytest").importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(7)


def segs(name: str) -> list[str]:
    return [s for s in name.replace(".", "/").split("/") if s] or ["_"]


def reference_tensors(path: str | Path) -> dict[str, np.ndarray | list[str]]:
    """{scope path: array} for every tensor of the model, by onnx's own reader."""
    model = onnx.load(str(path), load_external_data=False)
    base = os.path.dirname(str(path))
    out: dict[str, object] = {}

    def arr(t: TensorProto) -> object:
        a = numpy_helper.to_array(t, base_dir=base)
        return [str(s) for s in a.reshape(-1)] if t.data_type == TensorProto.STRING else a

    def sparse(sp) -> np.ndarray:
        return _dense(sp, base)

    def walk(graph, scope: str) -> None:
        pre = [scope] if scope else []
        for t in graph.initializer:
            out["/".join(pre + segs(t.name))] = arr(t)
        for sp in graph.sparse_initializer:
            out["/".join(pre + segs(sp.values.name))] = sparse(sp)
        for i, node in enumerate(graph.node):
            npath = "/".join(pre + (segs(node.name) if node.name else [f"{node.op_type}_{i}"]))
            for a in node.attribute:
                if node.op_type == "Constant":
                    key = "/".join(pre + segs(node.output[0]))
                    if a.type == a.TENSOR:
                        out[key] = arr(a.t)
                    elif a.type == a.SPARSE_TENSOR:
                        out[key] = sparse(a.sparse_tensor)
                    elif a.name == "value_float":
                        out[key] = np.array(a.f, np.float32)
                    elif a.name == "value_floats":
                        out[key] = np.array(a.floats, np.float32)
                    elif a.name == "value_int":
                        out[key] = np.array(a.i, np.int64)
                    elif a.name == "value_ints":
                        out[key] = np.array(a.ints, np.int64)
                    elif a.name == "value_string":
                        out[key] = a.s.decode()
                    elif a.name == "value_strings":
                        out[key] = [s.decode() for s in a.strings]
                elif a.type == a.TENSOR:
                    out[f"{npath}/{a.name}"] = arr(a.t)
                if a.type == a.GRAPH:
                    walk(a.g, f"{npath}/{a.name}")
                for k, g in enumerate(a.graphs):
                    walk(g, f"{npath}/{a.name}/{k}")

    walk(model.graph, "")
    return out


def _dense(sp, base: str) -> np.ndarray:
    values = numpy_helper.to_array(sp.values, base_dir=base)
    dense = np.zeros(int(np.prod(sp.dims)), dtype=values.dtype)
    idx = numpy_helper.to_array(sp.indices, base_dir=base)
    if idx.ndim == 2:
        idx = np.ravel_multi_index(idx.T, tuple(sp.dims))
    dense[idx] = values
    return dense.reshape(tuple(sp.dims))


# ---------------------------------------------------------------- helper-made models

def _values(dtype, shape):
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return RNG.random(shape) > 0.5
    if dt.kind in "iu" and dt.itemsize >= 1 and dt.name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
        info = np.iinfo(dt)
        return RNG.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dt)
    if dt.kind == "c":
        return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dt)
    if dt.name in ("int4", "uint4", "int2", "uint2"):
        lo, hi = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}[dt.name]
        return RNG.integers(lo, hi, shape, endpoint=True).astype(dt)
    return (RNG.standard_normal(shape) * 3).astype(dt)


DTYPES = {  # onnx data type -> numpy dtype for the generated values
    TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.BFLOAT16: ml_dtypes.bfloat16,
    TensorProto.DOUBLE: np.float64, TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16, TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32,
    TensorProto.UINT32: np.uint32, TensorProto.INT64: np.int64, TensorProto.UINT64: np.uint64,
    TensorProto.BOOL: np.bool_, TensorProto.COMPLEX64: np.complex64, TensorProto.COMPLEX128: np.complex128,
    TensorProto.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn, TensorProto.FLOAT8E5M2: ml_dtypes.float8_e5m2,
    TensorProto.INT4: ml_dtypes.int4, TensorProto.UINT4: ml_dtypes.uint4, TensorProto.FLOAT4E2M1: ml_dtypes.float4_e2m1fn,
    TensorProto.INT2: ml_dtypes.int2, TensorProto.UINT2: ml_dtypes.uint2,
}


def _tensor(name: str, dtype: int, shape, raw: bool) -> TensorProto:
    arr = _values(DTYPES[dtype], shape)
    if raw:
        t = numpy_helper.from_array(arr, name)
        assert t.HasField("raw_data") and t.data_type == dtype
        return t
    if dtype in (TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1, TensorProto.INT2, TensorProto.UINT2):
        vals = arr.astype(np.float32 if dtype == TensorProto.FLOAT4E2M1 else np.int8).reshape(-1).tolist()
    elif dtype in (TensorProto.BFLOAT16, TensorProto.FLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2):
        vals = arr.astype(np.float32).reshape(-1).tolist()
    else:
        vals = arr.reshape(-1).tolist()
    t = helper.make_tensor(name, dtype, list(shape), vals, raw=False)
    assert not t.HasField("raw_data")
    return t


def all_storage_model(path: Path) -> Path:
    """Every dtype as raw_data and as typed fields, strings, sparse initializers, every Constant form,
    ConstantOfShape, an If with initializers and Constants in both branches, a Loop holding an If."""
    inits = []
    for dt in DTYPES:
        name = TensorProto.DataType.Name(dt).lower()
        inits.append(_tensor(f"raw.{name}", dt, (3, 5), raw=True))
        inits.append(_tensor(f"typed.{name}", dt, (2, 3) if dt not in (TensorProto.INT4, TensorProto.UINT4) else (7,), raw=False))
    inits.append(_tensor("raw.odd_int4", TensorProto.INT4, (5,), raw=True))
    inits.append(numpy_helper.from_array(np.zeros((0, 4), np.float32), "empty"))
    inits.append(numpy_helper.from_array(np.float32(2.5), "scalar"))
    inits.append(helper.make_tensor("labels", TensorProto.STRING, [2], [b"yes", b"no"]))
    inits.append(helper.make_tensor("label", TensorProto.STRING, [1], [b"one"]))
    sp1 = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.5, -2.0, 3.0], np.float32), "sparse.linear"),
                                    numpy_helper.from_array(np.array([1, 5, 11], np.int64), "sparse.linear_idx"), [3, 4])
    sp2 = helper.make_sparse_tensor(numpy_helper.from_array(np.array([7, 9], np.int32), "sparse.coo"),
                                    numpy_helper.from_array(np.array([[0, 1], [2, 3]], np.int64), "sparse.coo_idx"), [3, 4])
    consts = [
        helper.make_node("Constant", [], ["c_value"], value=numpy_helper.from_array(RNG.standard_normal((2, 2)).astype(np.float16))),
        helper.make_node("Constant", [], ["c_float"], value_float=0.25),
        helper.make_node("Constant", [], ["c_floats"], value_floats=[1.0, -2.5, 3.25]),
        helper.make_node("Constant", [], ["c_int"], value_int=-7),
        helper.make_node("Constant", [], ["c_ints"], value_ints=[4, -5, 1 << 40]),
        helper.make_node("Constant", [], ["c_string"], value_string="hello"),
        helper.make_node("Constant", [], ["c_strings"], value_strings=["a", "bc"]),
        helper.make_node("Constant", [], ["c_sparse"], sparse_value=sp1),
        helper.make_node("ConstantOfShape", ["shape"], ["filled"], name="fill",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
    ]
    then_g = helper.make_graph(
        [helper.make_node("Constant", [], ["t_c"], value=numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3))),
         helper.make_node("Add", ["t_w", "t_c"], ["t_out"])], "then",
        [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(RNG.standard_normal((2, 3)).astype(np.float32), "t_w")])
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["e_w"], ["e_out"])], "else",
        [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(RNG.standard_normal((2, 3)).astype(np.float64), "e_w")])
    inner_if = helper.make_node("If", ["cond"], ["i_out"], name="inner/If", then_branch=then_g, else_branch=else_g)
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["b_c"], value=numpy_helper.from_array(np.array([1, 2, 3], np.int8))), inner_if],
        "body", [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [numpy_helper.from_array(np.array([[1, 2]], np.uint16), "b.w")])
    loop = helper.make_node("Loop", ["trip", "cond0"], [], name="", body=body)
    nodes = consts + [loop]
    graph = helper.make_graph(nodes, "all_storage", [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("filled", TensorProto.FLOAT, None)], inits,
                              sparse_initializer=[sp1, sp2])
    model = helper.make_model(graph, producer_name="ckptsurgeon-tests", producer_version="1.0",
                              opset_imports=[helper.make_opsetid("", 21)], doc_string="all storage forms")
    helper.set_model_props(model, {"author": "tests", "purpose": "reader"})
    onnx.save(model, str(path))
    return path


def external_model(folder: Path, one_file: bool = True) -> Path:
    """A model whose initializers live in external data (one shared file or one file per tensor)."""
    inits = [numpy_helper.from_array(_values(np.float32, (16, 8)), "enc.w"),
             numpy_helper.from_array(_values(np.float16, (8,)), "enc.b"),
             numpy_helper.from_array(_values(ml_dtypes.bfloat16, (4, 4)), "dec.w"),
             numpy_helper.from_array(_values(np.int8, (33,)), "q.w"),
             numpy_helper.from_array(_values(np.bool_, (5,)), "mask"),
             numpy_helper.from_array(_values(np.float64, (3, 3)), "dbl")]
    graph = helper.make_graph([helper.make_node("Identity", ["enc.w"], ["y"])], "ext", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    path = folder / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=one_file,
                    location="ext.weights" if one_file else None, size_threshold=0)
    return path


# ---------------------------------------------------------------- recurrent models (helper API)

def rnn_model(path: Path, op: str, *, hidden=4, inp=3, direction="forward", extra_attrs=None, peepholes=False,
              external=False, layout=0, seq=5, batch=2, with_initial=True) -> tuple[Path, dict[str, np.ndarray]]:
    """One LSTM/GRU/RNN node with W/R/B (and P) initializers; returns the path and the weights."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    D = 2 if direction == "bidirectional" else 1
    w = {"W": _values(np.float32, (D, gates * hidden, inp)) * 0.3,
         "R": _values(np.float32, (D, gates * hidden, hidden)) * 0.3,
         "B": _values(np.float32, (D, 2 * gates * hidden)) * 0.3}
    if peepholes:
        w["P"] = _values(np.float32, (D, 3 * hidden)) * 0.3
    names = {"W": "rnn.W", "R": "rnn.R", "B": "rnn.B", "P": "rnn.P"}
    inputs = ["X", names["W"], names["R"], names["B"], "", "h0" if with_initial else ""]
    if op == "LSTM":
        inputs += ["c0" if with_initial else "", names["P"] if peepholes else ""]
    while inputs and inputs[-1] == "":
        inputs.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attrs = dict(hidden_size=hidden, direction=direction, **(extra_attrs or {}))
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, inputs, outs, name="enc/rnn", **attrs)
    xs = [seq, batch, inp] if not layout else [batch, seq, inp]
    hs = [D, batch, hidden] if not layout else [batch, D, hidden]
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xs)]
    if with_initial:
        ins.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, hs))
        if op == "LSTM":
            ins.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, hs))
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    inits = [numpy_helper.from_array(v, names[k]) for k, v in w.items()]
    graph = helper.make_graph([node], "rnn", ins, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14 if layout else 13)])
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path, w


def chain_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """An LSTM fed by chains: W = Unsqueeze(Concat(Slice(Transpose(Wt)))) (a gate reorder from a transposed
    source), R = Reshape(Identity(Cast(R16))) from a float16 Constant, B = Concat of two Gathers and a Split
    output; all constant."""
    H, I = 3, 2  # noqa: E741  (ONNX names the input size I)
    wt = _values(np.float32, (I, 4 * H))  # transposed source
    r16 = _values(np.float16, (4 * H * H,))
    b_parts = _values(np.float32, (2, 4 * H))
    nodes = [
        helper.make_node("Transpose", ["src.wt"], ["w_t"], perm=[1, 0]),
        helper.make_node("Constant", [], ["s0"], value_ints=[0]), helper.make_node("Constant", [], ["e0"], value_ints=[H]),
        helper.make_node("Constant", [], ["s1"], value_ints=[3 * H]), helper.make_node("Constant", [], ["e1"], value_ints=[4 * H]),
        helper.make_node("Constant", [], ["s2"], value_ints=[H]), helper.make_node("Constant", [], ["e2"], value_ints=[3 * H]),
        helper.make_node("Constant", [], ["ax0"], value_ints=[0]),
        helper.make_node("Slice", ["w_t", "s0", "e0", "ax0"], ["w_i"]),
        helper.make_node("Slice", ["w_t", "s1", "e1", "ax0"], ["w_o"]),
        helper.make_node("Slice", ["w_t", "s2", "e2", "ax0"], ["w_fg"]),
        helper.make_node("Concat", ["w_i", "w_o", "w_fg"], ["w_cat"], axis=0),
        helper.make_node("Unsqueeze", ["w_cat", "ax0"], ["W"]),
        helper.make_node("Constant", [], ["r16"], value=numpy_helper.from_array(r16)),
        helper.make_node("Cast", ["r16"], ["r32"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["r32"], ["r_id"]),
        helper.make_node("Constant", [], ["r_shape"], value_ints=[1, 4 * H, H]),
        helper.make_node("Reshape", ["r_id", "r_shape"], ["R"]),
        helper.make_node("Constant", [], ["g0"], value_ints=[0]),
        helper.make_node("Gather", ["src.b", "g0"], ["b_first"], axis=0),
        helper.make_node("Split", ["src.b", "split"], ["b_a", "b_b"], axis=0),
        helper.make_node("Concat", ["b_first", "b_b"], ["B2"], axis=1),
        helper.make_node("LSTM", ["X", "W", "R", "B2"], ["Y", "Y_h", "Y_c"], name="lstm", hidden_size=H),
    ]
    # B2 = [b_parts[0], b_parts[1]] of shape [1, 8H]: Gather keeps a [1, 4H] row, Split's second part is [1, 4H]
    inits = [numpy_helper.from_array(wt, "src.wt"), numpy_helper.from_array(b_parts, "src.b"),
             numpy_helper.from_array(np.array([1, 1], np.int64), "split")]
    nodes[-4] = helper.make_node("Gather", ["src.b", "g0"], ["b_first"], axis=0)  # indices [0] -> [1, 4H]
    graph = helper.make_graph(nodes, "chains", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 1, I])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path, {"src.wt": wt, "r16": r16, "src.b": b_parts}


# ---------------------------------------------------------------- torch exports

def torch_export(module, args, path: Path, **kw) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), **kw)
    return path
