"""Make the fuzzer's seed files with the real libraries (torch, Keras 3, numpy, safetensors, h5py).

    KERAS_BACKEND=torch .venv/bin/python tests/fuzz/make_seeds.py

Seeds are small on purpose (mutations then hit structure, not bulk data) and committed, so the
fuzzer needs none of these libraries at run time. TensorFlow seeds are the bundles in
``fixtures/tensorflow`` (written by TensorFlow itself), DCP folders from ``fixtures/dcp`` (written by
torch.distributed.checkpoint). ``recorded`` copies small files recorded by Orbax, Paddle and TFLite (``fixtures/``)
into ``orbax/``, ``paddle_jit/`` and ``tflite_rnn/``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

SEEDS = Path(__file__).resolve().parent / "seeds"


def torch_seeds() -> None:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 2)
    emb = torch.nn.Embedding(4, 2)
    opt = torch.optim.Adam(lstm.parameters())
    lstm(torch.zeros(1, 1, 3))[0].sum().backward()
    opt.step()
    obj = {
        "state_dict": {**lstm.state_dict(), "emb.weight": emb.weight, "head.weight": emb.weight},
        "views": {"t": torch.arange(6.0).reshape(2, 3).t(), "half": torch.ones(2, dtype=torch.bfloat16),
                  "expand": torch.ones(1).expand(3, 2)},
        "optimizer_states": [opt.state_dict()],
        "epoch": 3,
        "hyper_parameters": {"lr": 0.1, "names": ["a", "b"]},
    }
    torch.save(obj, SEEDS / "torch.pt")
    torch.save(lstm.state_dict(), SEEDS / "torch_legacy.pt", _use_new_zipfile_serialization=False)


def torchscript_seeds() -> None:
    """A scripted module: data.pkl of ``__torch__`` classes, constants.pkl with a tensor constant, code/."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 2)
            self.register_buffer("scale", torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0] * self.scale + torch.tensor([0.5, -0.5])

    torch.manual_seed(0)
    torch.jit.script(Tiny()).save(str(SEEDS / "tiny.jit"))


def numpy_seeds() -> None:
    arrays = {"w": np.arange(12, dtype="<f4").reshape(3, 4), "b": np.array([1, 2], dtype=">i8"),
              "f": np.asfortranarray(np.arange(6, dtype="f8").reshape(2, 3)), "m": np.array([True, False])}
    np.save(SEEDS / "array.npy", arrays["w"])
    np.save(SEEDS / "fortran.npy", arrays["f"])
    np.savez(SEEDS / "arrays.npz", **arrays)
    np.savez_compressed(SEEDS / "compressed.npz", **arrays)


def safetensors_seeds() -> None:
    from safetensors.numpy import save_file

    save_file({"enc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "enc.bias": np.zeros(2, np.float16),
               "ids": np.array([1, 2, 3], np.int64), "empty": np.zeros((0, 3), np.float32)},
              str(SEEDS / "model.safetensors"), metadata={"format": "pt"})


def hdf5_seeds() -> None:
    import h5py

    with h5py.File(SEEDS / "generic.h5", "w") as f:
        f.attrs["note"] = "seed"
        g = f.create_group("block/inner")
        g.create_dataset("contiguous", data=np.arange(8, dtype="<f4"))
        g.create_dataset("chunked", data=np.arange(64, dtype="<i4").reshape(8, 8), chunks=(4, 4), compression="gzip")
        f.create_dataset("compact", data=np.arange(3, dtype=">f8"),
                         dcpl=_compact_dcpl(h5py))
        f["block"].attrs["names"] = np.array([b"a", b"bb"])


def _compact_dcpl(h5py):
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    return dcpl


def keras_seeds() -> None:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 3))
    x = keras.layers.LSTM(2, name="enc")(inp)
    out = keras.layers.Dense(1, name="head")(x)
    model = keras.Model(inp, out)
    model.save(SEEDS / "tiny.keras")
    model.save_weights(SEEDS / "tiny.weights.h5")
    with zipfile.ZipFile(SEEDS / "tiny.keras") as zf:  # Keras stores members uncompressed: check it still does
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


def onnx_seeds() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    hidden, inputs = 2, 3
    w = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, inputs)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    b = helper.make_tensor("B", TensorProto.FLOAT, [1, 8 * hidden], rng.standard_normal(8 * hidden).tolist())  # float_data
    half = numpy_helper.from_array(np.arange(4, dtype=np.float16), "half")
    lstm = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="lstm", hidden_size=hidden)
    graph = helper.make_graph([lstm], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 1, inputs])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [w, r, b, half])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), SEEDS / "tiny.onnx")


def sharded_seeds() -> None:
    import shutil

    import ckptsurgeon

    tensors = {f"layer_{i}.weight": np.full((4, 4), i, np.float32) for i in range(3)}
    for fmt, folder in (("safetensors", "sharded_st"), ("pt", "sharded_pt")):
        shutil.rmtree(SEEDS / folder, ignore_errors=True)
        ckptsurgeon.save_sharded(tensors, SEEDS / folder, max_shard_size=100, format=fmt)


def gguf_seeds() -> None:
    """A llama.cpp GGUF file (written by the ``gguf`` package): metadata of several types, f32/f16 tensors and a
    q8_0-quantized one."""
    import gguf

    w = gguf.GGUFWriter(str(SEEDS / "tiny.gguf"), "llama")
    w.add_block_count(1)
    w.add_context_length(8)
    w.add_string("general.name", "seed")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_float32("seed.scale", 0.5)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((4, 8)).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(8, np.float16))
    w.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(rng.standard_normal((2, 32)).astype(np.float32),
                                                              gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# Files recorded by their own frameworks (fixtures/, made by fixtures/*/make_*_fixtures.py), copied small: an Orbax
# folder of each storage (OCDBT, zarr3 in OCDBT), a paddle.jit.save pair and TFLite recurrent ops.
RECORDED = {
    "orbax/rnn_ocdbt": "orbax/rnn_ocdbt",  # OCDBT: manifest.ocdbt + d/ data files, flax linen LSTM/GRU/bidirectional
    "orbax/misc_zarr3": "orbax/misc_zarr3",  # zarr3 arrays in OCDBT, bf16/int8/0-d/optimizer state
    "paddle_jit/model.json": "paddle/jit/model.json",  # paddle.jit.save: the program
    "paddle_jit/model.pdiparams": "paddle/jit/model.pdiparams",  # ... and its parameters
    "tflite_rnn/bidi.tflite": "tflite/bidi.tflite",  # BIDIRECTIONAL_SEQUENCE_LSTM
    "tflite_rnn/lstm_full_peephole_proj.tflite": "tflite/lstm_full_peephole_proj.tflite",  # LSTM op, peephole+proj
    "tflite_rnn/useq_cifg.tflite": "tflite/useq_cifg.tflite",  # UNIDIRECTIONAL_SEQUENCE_LSTM, CIFG
    "tflite_rnn/useq_layer_norm.tflite": "tflite/useq_layer_norm.tflite",  # layer-norm LSTM
}


def recorded_seeds() -> None:
    import shutil

    fixtures = SEEDS.parent.parent.parent / "fixtures"
    for dest, src in RECORDED.items():
        target, source = SEEDS / dest, fixtures / src
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def keras_stacked_seeds() -> None:
    """``RNN(StackedRNNCells(...))`` of two LSTM cells, then of two GRU cells: layers whose cells are a stack
    (keras_layout's ``_stacked``)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 3))
    cells = keras.layers.StackedRNNCells([keras.layers.LSTMCell(2), keras.layers.LSTMCell(2)])
    x = keras.layers.RNN(cells, return_sequences=True, name="stack")(inp)
    x = keras.layers.RNN(keras.layers.StackedRNNCells([keras.layers.GRUCell(2), keras.layers.GRUCell(2)]),
                         name="gstack")(x)
    model = keras.Model(inp, keras.layers.Dense(1, name="head")(x))
    (SEEDS / "stacked").mkdir(exist_ok=True)
    model.save(SEEDS / "stacked" / "stacked.keras")
    model.save_weights(SEEDS / "stacked" / "stacked.weights.h5")


MAKERS = {"torch": torch_seeds, "torchscript": torchscript_seeds, "numpy": numpy_seeds, "safetensors": safetensors_seeds,
          "hdf5": hdf5_seeds, "keras": keras_seeds, "onnx": onnx_seeds, "sharded": sharded_seeds, "gguf": gguf_seeds,
          "recorded": recorded_seeds, "keras_stacked": keras_stacked_seeds}


def main() -> None:
    """All seeds, or only those named: ``make_seeds.py gguf`` (the others are not made again)."""
    import sys

    SEEDS.mkdir(exist_ok=True)
    for name in sys.argv[1:] or MAKERS:
        MAKERS[name]()
    for path in sorted(SEEDS.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
