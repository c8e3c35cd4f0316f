"""The real frameworks, as a user drives them: read a written file with the format's own library, build
PyTorch modules, Keras 3 layers and ONNX nodes from what a conversion reports, load, run.

Every function takes and returns time-major numpy arrays ``(T, B, F)``; bidirectional outputs are the
two directions concatenated (forward first, both aligned with the input), as PyTorch returns them.
"""
from __future__ import annotations

import json
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

__all__ = ["read_output", "relative", "torch_module", "run_torch", "run_torch_cell", "keras_activation",
           "keras_layer", "run_keras_layer", "keras_weights", "run_onnx", "merge", "load_torch_state"]


def read_output(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a written file (keys as stored) and its string metadata, with the format's own reader."""
    path = str(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(path, "np") as f:
            meta = dict(f.metadata() or {})
        return dict(load_file(path)), meta
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__metadata__"}
            meta = json.loads(str(z["__metadata__"])) if "__metadata__" in z.files else {}
        return arrays, meta
    if head[:4] == b"\x89HDF":
        import h5py

        arrays: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
            meta = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
        return arrays, meta
    import torch

    state = torch.load(path, weights_only=True)
    meta = dict(getattr(state, "_metadata", {}).get("ckptsurgeon", {}))
    return {k: v.numpy() for k, v in state.items()}, meta


def relative(arrays: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    """``scope.weight_ih_l0`` / ``scope/cell/kernel`` -> names relative to the group scope, '/'-separated."""
    out = {}
    for key, value in arrays.items():
        key = key.replace(".", "/")
        if scope and not key.startswith(scope + "/"):
            continue
        out[key[len(scope) + 1:] if scope else key] = value
    return out


def merge(mode: str | None, y: np.ndarray, width: int) -> np.ndarray:
    """What Keras's Bidirectional returns from the two directions (``none``: both, concatenated here)."""
    fw, bw = y[..., :width], y[..., width:]
    return {"sum": lambda: fw + bw, "mul": lambda: fw * bw, "ave": lambda: (fw + bw) / 2}.get(mode, lambda: y)()


# --- PyTorch ------------------------------------------------------------------------------------------------

def torch_module(kind: str, input_size: int, hidden: int, layers: int = 1, bidirectional: bool = False,
                 bias: bool = True, proj: int = 0, cell: bool = False):
    import torch

    if cell:
        return (torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell)(input_size, hidden, bias=bias)
    if kind == "lstm":
        return torch.nn.LSTM(input_size, hidden, num_layers=layers, bias=bias, bidirectional=bidirectional, proj_size=proj)
    return torch.nn.GRU(input_size, hidden, num_layers=layers, bias=bias, bidirectional=bidirectional)


def load_torch_state(module, arrays: dict[str, np.ndarray]) -> None:
    import torch

    module.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in arrays.items()}, strict=True)


def run_torch(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        if isinstance(module, (torch.nn.LSTMCell, torch.nn.GRUCell)):
            return run_torch_cell(module, x)
        return module(torch.tensor(np.asarray(x, np.float32)))[0].numpy()


def run_torch_cell(cell, x: np.ndarray) -> np.ndarray:
    import torch

    h = c = torch.zeros(x.shape[1], cell.hidden_size)
    outs = []
    with torch.no_grad():
        for step in torch.tensor(np.asarray(x, np.float32)):
            if isinstance(cell, torch.nn.LSTMCell):
                h, c = cell(step, (h, c))
            else:
                h = cell(step, h)
            outs.append(h)
    return torch.stack(outs).numpy()


# --- Keras 3 ------------------------------------------------------------------------------------------------

def keras_activation(name: str):
    """A formula name (or a Keras name) -> what a Keras 3 layer takes to compute exactly that formula."""
    import keras

    from ckptsurgeon.rnn.activations import ACTIVATIONS

    if name == "hard_sigmoid_keras2":  # Keras 1/2's formula; Keras 3's 'hard_sigmoid' is another function
        return lambda x: keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)
    if name in ACTIVATIONS and ACTIVATIONS[name].keras:
        return ACTIVATIONS[name].keras
    return name  # a Keras name ('elu'): as the source framework was given it


def keras_layer(kind: str, units: int, *, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                use_bias: bool = True, reset_after: bool = True, go_backwards: bool = False, name: str | None = None,
                bidirectional: bool = False, merge_mode: str = "concat", backward: dict | None = None):
    """One Keras 3 LSTM/GRU (return_sequences) or a Bidirectional of it; ``backward``: an explicit backward layer's
    arguments (overrides of the forward layer's)."""
    import keras

    def rnn(**over):
        args = dict(units=units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                    go_backwards=go_backwards, return_sequences=True)
        if kind == "gru":
            args["reset_after"] = reset_after
        args.update(over)
        for key in ("activation", "recurrent_activation"):
            args[key] = keras_activation(args[key])
        return (keras.layers.LSTM if kind == "lstm" else keras.layers.GRU)(**args)

    if not bidirectional:
        return rnn(name=name)
    back = None if backward is None else rnn(**backward)
    return keras.layers.Bidirectional(rnn(), merge_mode=None if merge_mode == "none" else merge_mode,
                                      backward_layer=back, name=name)


def keras_weights(arrays: dict[str, np.ndarray], bidirectional: bool, use_bias: bool) -> list[np.ndarray]:
    """Keras's own weight order from names relative to a layer (``cell/kernel``, ``forward_layer/cell/...``)."""
    names = ("kernel", "recurrent_kernel") + (("bias",) if use_bias else ())
    halves = ("forward_layer/", "backward_layer/") if bidirectional else ("",)
    return [np.asarray(arrays[f"{h}cell/{n}"]) for h in halves for n in names]


def run_keras_layer(layer, x: np.ndarray, weights: list[np.ndarray] | None = None) -> np.ndarray:
    """Build the layer on x (time-major), set its weights, run it; merge_mode None's pair comes back concatenated."""
    import keras

    xb = np.asarray(x, np.float32).transpose(1, 0, 2)
    if not layer.built:
        layer(xb)
    if weights is not None:
        layer.set_weights(weights)
    y = layer(xb)
    if isinstance(y, (list, tuple)):
        y = np.concatenate([keras.ops.convert_to_numpy(t) for t in y], -1)
    return np.asarray(keras.ops.convert_to_numpy(y)).transpose(1, 0, 2)


# --- ONNX ---------------------------------------------------------------------------------------------------

def run_onnx(kind: str, arrays: dict[str, np.ndarray], attrs: dict, x: np.ndarray, runtime: str = "onnxruntime") -> np.ndarray:
    """One real ONNX LSTM/GRU node; returns Y as (T, B, D*H) (directions concatenated, each aligned with X).

    onnxruntime implements every attribute; onnx.reference ignores ``activations``/``clip`` (default ones only)."""
    from onnx import TensorProto, helper

    names = [n for n in ("W", "R", "B") if n in arrays]
    inputs = ["X"] + names
    if "P" in arrays:
        inputs = ["X", "W", "R", "B" if "B" in arrays else "", "", "", "", "P"]
    node = helper.make_node(kind.upper(), inputs, ["Y"], **attrs)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, arrays[n].shape, np.asarray(arrays[n], np.float32).ravel())
             for n in names + (["P"] if "P" in arrays else [])]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    xf = np.asarray(x, np.float32)
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = session.run(None, {"X": xf})[0]
    else:
        from onnx.reference import ReferenceEvaluator

        y = ReferenceEvaluator(model).run(None, {"X": xf})[0]
    T, D, B, H = y.shape
    return y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
