"""Make the fuzzer's recurrent-group seeds (issue 23): LSTM/GRU groups whose tensors do not fit their layout, and
groups holding inf / nan / 1e38 weights, in every format that stores recurrent groups.

    KERAS_BACKEND=torch .venv/bin/python tests/fuzz/make_rnn_seeds.py

Each file is written by the format's own library (torch.save, safetensors, numpy, h5py, onnx) or, for TensorFlow
bundles, by ``tests/tf_craft.py``, which writes the bundle format byte for byte; the shapes are wrong on purpose,
which the frameworks' layer classes would refuse to build. Seeds land in ``seeds/rnn/`` (bad shapes) and
``seeds/nonfinite/`` (bad values) and are committed, so the fuzzer needs none of these libraries at run time.
"""
from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
RNN, NONFINITE = HERE / "seeds" / "rnn", HERE / "seeds" / "nonfinite"
H, IN = 2, 3  # hidden size, input size
BAD = np.array([np.inf, -np.inf, np.nan, 1e38, -1e38, 3.4e38], np.float32)


def _rng() -> np.random.Generator:
    return np.random.default_rng(23)


def torch_lstm(gates: int = 4, prefix: str = "", **broken: tuple[int, ...]) -> dict[str, np.ndarray]:
    """PyTorch nn.LSTM (gates=4) / nn.GRU (gates=3) state_dict names; ``broken`` replaces a tensor's shape."""
    rng = _rng()
    shapes = {"weight_ih_l0": (gates * H, IN), "weight_hh_l0": (gates * H, H), "bias_ih_l0": (gates * H,),
              "bias_hh_l0": (gates * H,)}
    shapes.update(broken)
    return {prefix + k: np.asarray(rng.uniform(-0.5, 0.5, s), np.float32) for k, s in shapes.items()}


def keras_lstm(gates: int = 4, **broken: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Keras LSTM (4) / GRU (3, reset_after: a (2, 3H) bias) cell variables: kernel, recurrent_kernel, bias."""
    rng = _rng()
    shapes = {"kernel": (IN, gates * H), "recurrent_kernel": (H, gates * H),
              "bias": (gates * H,) if gates == 4 else (2, gates * H)}
    shapes.update(broken)
    return {k: np.asarray(rng.uniform(-0.5, 0.5, s), np.float32) for k, s in shapes.items()}


def poison(arrays: dict[str, np.ndarray], names: tuple[str, ...] | None = None, fill: float | None = None) -> dict:
    """Put inf, -inf, nan, 1e38, -1e38, 3.4e38 (or ``fill`` everywhere) into the named tensors (default: all)."""
    out = {}
    for k, a in arrays.items():
        a = a.copy()
        if names is None or k in names:
            flat = a.reshape(-1)
            if fill is not None:
                flat[:] = fill
            else:
                flat[:len(BAD)] = BAD[:flat.size]
        out[k] = a
    return out


# ---- the cases: name -> tensors (torch names) or keras cell variables -------------------------------------------

TORCH_CASES = {
    "lstm_ih_rows": lambda: torch_lstm(weight_ih_l0=(4 * H - 1, IN)),
    "lstm_hh_cols": lambda: torch_lstm(weight_hh_l0=(4 * H, H + 1)),
    "lstm_bias_len": lambda: torch_lstm(bias_ih_l0=(4 * H + 1,)),
    "lstm_rank3": lambda: torch_lstm(weight_ih_l0=(4 * H, IN, 1)),
    "lstm_bias_rank2": lambda: torch_lstm(bias_hh_l0=(4 * H, 1)),
    "lstm_empty": lambda: torch_lstm(weight_hh_l0=(0, H)),
    "gru_hh_rows": lambda: torch_lstm(3, weight_hh_l0=(3 * H + 1, H)),
    "gru_scalar_bias": lambda: torch_lstm(3, bias_ih_l0=()),
}
NONFINITE_CASES = {
    "lstm_specials": lambda: poison(torch_lstm()),
    "lstm_1e38": lambda: poison(torch_lstm(), fill=1e38),
    "gru_nan_bias": lambda: poison(torch_lstm(3), ("bias_hh_l0",), fill=float("nan")),
    "lstm_inf_kernel": lambda: poison(torch_lstm(), ("weight_hh_l0",), fill=float("inf")),
}
KERAS_CASES = {
    "lstm_kernel_cols": lambda: keras_lstm(kernel=(IN, 4 * H - 1)),
    "lstm_bias_len": lambda: keras_lstm(bias=(4 * H + 2,)),
    "lstm_rank3": lambda: keras_lstm(recurrent_kernel=(H, 4 * H, 1)),
    "gru_bias_rows": lambda: keras_lstm(3, bias=(3, 3 * H)),
}
KERAS_NONFINITE = {
    "lstm_specials": lambda: poison(keras_lstm()),
    "lstm_1e38": lambda: poison(keras_lstm(), fill=1e38),
}


def _save_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({f"rnn.{k}": v for k, v in arrays.items()}, str(path))


def _save_torch(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import torch

    torch.save({"state_dict": {f"rnn.{k}": torch.from_numpy(v.copy()) for k, v in arrays.items()}}, path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **{f"rnn.{k}": v for k, v in arrays.items()})


def _keras2_h5(arrays: dict[str, np.ndarray], gates: int) -> bytes:
    """A tf.keras 2 weights-only file: root ``layer_names``, the layer's ``weight_names``, one dataset each."""
    import h5py

    layer, cell = ("lstm", "lstm_cell") if gates == 4 else ("gru", "gru_cell")
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.15.0"
        g = f.create_group(layer)
        names = [f"{layer}/{cell}/{k}:0" for k in arrays]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        for n, (_k, v) in zip(names, arrays.items()):
            g.create_dataset(n, data=v)
    return buf.getvalue()


def _keras3_h5(arrays: dict[str, np.ndarray]) -> bytes:
    """A Keras 3 ``.weights.h5`` like ``seeds/tiny.weights.h5``: layers/lstm/cell/vars/0..2."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers/input_layer/vars").attrs["name"] = "input_layer"
        f.create_group("layers/lstm/vars").attrs["name"] = "enc"
        cell = f.create_group("layers/lstm/cell/vars")
        cell.attrs["name"] = "lstm_cell"
        for i, v in enumerate(arrays.values()):
            cell.create_dataset(str(i), data=v)
        f.create_group("vars").attrs["name"] = "functional"
    return buf.getvalue()


def _keras_zip(weights_h5: bytes) -> bytes:
    """``seeds/tiny.keras`` (an LSTM 'enc' with 2 units on 3 inputs) with its weights file replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(HERE / "seeds" / "tiny.keras") as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model.weights.h5":
                import h5py

                with h5py.File(io.BytesIO(weights_h5)) as new:
                    cell = {k: new["layers/lstm/cell/vars"][k][()] for k in new["layers/lstm/cell/vars"]}
                buf = io.BytesIO(data)
                with h5py.File(buf, "r+") as f:
                    vars_ = f["layers/lstm/cell/vars"]
                    for k, v in cell.items():
                        del vars_[k]
                        vars_.create_dataset(k, data=v)
                data = buf.getvalue()
            dst.writestr(info, data)
    return out.getvalue()


def _tf_bundle(folder: Path, arrays: dict[str, np.ndarray], gates: int) -> None:
    """A TF1 ``rnn/lstm_cell/{kernel,bias}`` (x@W, (IN+H, 4H)) or GRU gates/candidate bundle, hand-written."""
    sys.path.insert(0, str(HERE.parent))
    from tf_craft import write_bundle

    folder.mkdir(parents=True, exist_ok=True)
    write_bundle(folder / "model.ckpt", arrays)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')


def tf_cases() -> dict[str, tuple[dict[str, np.ndarray], bool]]:
    """name -> (tensors, non-finite?)."""
    rng = _rng()

    def u(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)

    lstm = {"rnn/lstm_cell/kernel": u(IN + H, 4 * H), "rnn/lstm_cell/bias": u(4 * H)}
    gru = {"rnn/gru_cell/gates/kernel": u(IN + H, 2 * H), "rnn/gru_cell/gates/bias": u(2 * H),
           "rnn/gru_cell/candidate/kernel": u(IN + H, H), "rnn/gru_cell/candidate/bias": u(H)}
    return {
        "tf_lstm_kernel_rows": ({**lstm, "rnn/lstm_cell/kernel": u(IN + H, 4 * H - 1)}, False),
        "tf_lstm_bias_len": ({**lstm, "rnn/lstm_cell/bias": u(4 * H + 3)}, False),
        "tf_lstm_rank3": ({**lstm, "rnn/lstm_cell/kernel": u(IN + H, 4 * H, 1)}, False),
        "tf_gru_mismatch": ({**gru, "rnn/gru_cell/candidate/kernel": u(IN + H + 1, H)}, False),
        "tf_lstm_specials": (poison(lstm), True),
        "tf_gru_1e38": (poison(gru, fill=1e38), True),
    }


def onnx_model(w_shape=(1, 4 * H, IN), b_len=8 * H, values: np.ndarray | None = None) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = _rng()
    w = rng.standard_normal(w_shape).astype(np.float32)
    if values is not None:
        w.reshape(-1)[:len(values)] = values
    r = rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    b = rng.standard_normal((1, b_len)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="lstm", hidden_size=H)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 1, IN])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> None:
    for folder in (RNN, NONFINITE):
        folder.mkdir(parents=True, exist_ok=True)
    # One file format per case, rotating, so every format gets several cases without 40 files per class.
    savers = (("safetensors", _save_safetensors), ("pt", _save_torch), ("npz", _save_npz))
    for cases, folder in ((TORCH_CASES, RNN), (NONFINITE_CASES, NONFINITE)):
        for i, (name, make) in enumerate(cases.items()):
            for j in (i, i + 1):  # two formats per case
                ext, save = savers[j % len(savers)]
                save(folder / f"{name}.{ext}", make())
    for cases, folder in ((KERAS_CASES, RNN), (KERAS_NONFINITE, NONFINITE)):
        for name, make in cases.items():
            arrays = make()
            gates = 3 if name.startswith("gru") else 4
            (folder / f"keras2_{name}.h5").write_bytes(_keras2_h5(arrays, gates))
            if gates == 4:
                (folder / f"keras3_{name}.weights.h5").write_bytes(_keras3_h5(arrays))
                (folder / f"{name}.keras").write_bytes(_keras_zip(_keras3_h5(arrays)))
    for name, (arrays, bad_values) in tf_cases().items():
        _tf_bundle((NONFINITE if bad_values else RNN) / name, arrays, 3 if "gru" in name else 4)
    (RNN / "onnx_w_rows.onnx").write_bytes(onnx_model(w_shape=(1, 4 * H - 1, IN)))
    (RNN / "onnx_b_len.onnx").write_bytes(onnx_model(b_len=8 * H - 2))
    (RNN / "onnx_w_rank2.onnx").write_bytes(onnx_model(w_shape=(4 * H, IN)))
    (NONFINITE / "onnx_specials.onnx").write_bytes(onnx_model(values=BAD))
    for folder in (RNN, NONFINITE):
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                print(f"{path.relative_to(HERE)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
