"""Sources, made by the real frameworks: PyTorch modules and Keras 3 layers built from a ``Config`` and saved as
users save them, and the committed TF-made fixtures (TF1 grid, tf.keras 2 grid) with TensorFlow's outputs.

A ``Source`` is a file plus, for each recurrent group in it, what the source framework computed on an
input (``want``), what that group really computes (``Truth``, for the rule table) and how to run a
round-tripped copy of its weights in the source framework again (``load_back``).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cf_frameworks import (keras_layer, keras_weights, load_torch_state, run_keras_layer, run_torch, torch_module)
from cf_rules import Truth
from cf_space import KERAS_FORMULA, Config, layer_name

__all__ = ["Layer", "Source", "build", "tf1_grid_source", "tfkeras_source", "ROOT", "TF1_GRID", "KERAS_GRID",
           "tf1_grid_cases", "tfkeras_grid_cases"]

ROOT = Path(__file__).resolve().parents[2]
TF1_GRID = ROOT / "fixtures" / "tensorflow" / "tf1_grid"
KERAS_GRID = ROOT / "fixtures" / "keras" / "tfkeras_grid"
STEPS, BATCH = 5, 2


@dataclass
class Layer:
    """One recurrent group of a source and what the source framework computed with it."""

    truth: Truth
    x: np.ndarray | None  # (T, B, F) input of this group
    want: np.ndarray | None  # the source framework's output (T, B, F), as it returns it (merged, own time order)
    width: int  # one direction's output width
    scope: str | None = None  # None: the source's groups pair with its layers in file order
    load_back: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None  # weights (source layout) -> output
    bias: bool = True
    options: dict = field(default_factory=dict)  # flags for this group only (weights-only files: per layer)
    select: str | None = None  # the --scope a user passes when it is not the group's own (both halves of a layer)


@dataclass
class Source:
    label: str
    path: Path
    layout: str | None  # the source's own layout as a target (round trips go back to it)
    options: dict  # ConvertOptions a user passes: the facts the file does not state
    layers: list[Layer]
    config: Config | None = None
    notes: list[str] = field(default_factory=list)


def _drop_zero_biases(arrays: dict[str, np.ndarray], keep: bool, words=("bias",)) -> dict[str, np.ndarray]:
    """A layout that always stores a bias gives zeros to a source without one: those must be zeros, then go."""
    if keep:
        return arrays
    out = {}
    for key, value in arrays.items():
        if any(w in key.rsplit("/", 1)[-1] for w in words):
            assert not np.any(value), f"{key}: a bias where the source had none, and not zero"
            continue
        out[key] = value
    return out


# --- PyTorch ------------------------------------------------------------------------------------------------

def _torch(cfg: Config, tmp: Path) -> Source:
    import torch

    torch.manual_seed(cfg.seed)
    cell = cfg.source == "torch-cell"
    ctor = dict(kind=cfg.kind, input_size=cfg.input_size, hidden=cfg.hidden, layers=cfg.layers,
                bidirectional=cfg.bidirectional, bias=cfg.bias, proj=cfg.proj, cell=cell)
    module = torch_module(**ctor)
    rng = np.random.default_rng(cfg.seed)  # numpy's generator: the same values on every machine and torch version
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.6, 0.6, tuple(p.shape)).astype(np.float32)))
    scope = "cell" if cell else "rnn"
    state = {f"{scope}.{k}": v.contiguous() for k, v in module.state_dict().items()}
    if cfg.extra == "layernorm":  # what a LayerNorm LSTM/GRU cell adds to nn.LSTMCell's names: another function
        gates = (4 if cfg.kind == "lstm" else 3) * cfg.hidden
        state.update({f"{scope}.ln_ih.weight": torch.ones(gates), f"{scope}.ln_ih.bias": torch.zeros(gates),
                      f"{scope}.ln_hh.weight": torch.ones(gates), f"{scope}.ln_hh.bias": torch.zeros(gates)})
    elif cfg.extra == "gap":  # layers 0 and 2 of three: torch itself refuses to load these names
        state = {k: v for k, v in state.items() if k.split(".")[-1].split("_l1")[-1] not in ("", "_reverse")}
    path = tmp / f"source.{cfg.file}"
    if cfg.file == "safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    x = rng.standard_normal((STEPS, BATCH, cfg.input_size)).astype(np.float32)
    want = run_torch(module, x)

    def load_back(arrays: dict[str, np.ndarray]) -> np.ndarray:
        again = torch_module(**ctor)
        load_torch_state(again, _drop_zero_biases(arrays, cfg.bias, ("bias_",)))
        return run_torch(again, x)

    truth = Truth(cfg.kind, layers=1 if cell else cfg.layers, directions=2 if cfg.bidirectional and not cell else 1,
                  proj=cfg.proj, unexplained=cfg.extra != "none")
    if truth.unexplained:  # what it computes is not nn.LSTM's: every target must refuse
        return Source(str(cfg), path, None, {}, [Layer(truth, None, None, cfg.proj or cfg.hidden, scope)], cfg)
    layer = Layer(truth, x, want, cfg.proj or cfg.hidden, scope, load_back, cfg.bias)
    return Source(str(cfg), path, "torch-cell" if cell else "torch", {}, [layer], cfg)


# --- Keras 3 ------------------------------------------------------------------------------------------------

def _backward(cfg: Config) -> tuple[bool, dict | None]:
    """(forward layer's go_backwards, explicit backward layer's overrides)."""
    if not cfg.bidirectional:
        return cfg.go_backwards, None
    return {"default": (False, None), "explicit": (False, {"go_backwards": True}),
            "explicit_relu": (False, {"go_backwards": True, "activation": "tanh" if cfg.activation == "relu" else "relu"}),
            "explicit_units": (False, {"go_backwards": True, "units": cfg.hidden + 1}),
            "swapped": (True, {"go_backwards": False})}[cfg.backward]


def _keras_truth(cfg: Config) -> Truth:
    forward_backwards, back = _backward(cfg)
    missing = ("reset_after",) if (cfg.weights_only and cfg.kind == "gru" and not cfg.bias
                                   and not cfg.declare_family) else ()
    return Truth(cfg.kind, directions=2 if cfg.bidirectional else 1, reset_after=cfg.reset_after,
                 go_backwards=forward_backwards, forward_backwards=cfg.bidirectional and forward_backwards,
                 merge_mode=cfg.merge_mode if cfg.bidirectional else None, activation=KERAS_FORMULA[cfg.activation],
                 recurrent_activation=KERAS_FORMULA[cfg.recurrent_activation],
                 halves_differ=cfg.backward in ("explicit_relu", "explicit_units"), missing=missing,
                 allow_concat_merge=cfg.allow_concat_merge)


def _keras_options(cfg: Config) -> dict:
    """What a user declares for a weights-only file: every fact it does not store (the config says it otherwise)."""
    if not cfg.weights_only:
        return {"allow_concat_merge": cfg.allow_concat_merge}
    opts = {"activation": KERAS_FORMULA[cfg.activation], "recurrent_activation": KERAS_FORMULA[cfg.recurrent_activation],
            "go_backwards": _backward(cfg)[0], "allow_concat_merge": cfg.allow_concat_merge}
    if cfg.bidirectional:
        opts["merge_mode"] = cfg.merge_mode
    if cfg.kind == "gru" and not cfg.bias and cfg.declare_family:
        opts["reset_after"] = cfg.reset_after
    return opts


def _keras(cfg: Config, tmp: Path) -> Source:
    import keras

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    forward_backwards, back = _backward(cfg)
    args = dict(activation=cfg.activation, recurrent_activation=cfg.recurrent_activation, use_bias=cfg.bias,
                reset_after=cfg.reset_after, go_backwards=forward_backwards, bidirectional=cfg.bidirectional,
                merge_mode=cfg.merge_mode, backward=back)
    layers, x0 = [], rng.standard_normal((BATCH, STEPS, cfg.input_size)).astype(np.float32)
    inp = keras.Input((STEPS, cfg.input_size))
    y, outs = inp, []
    for k in range(cfg.layers):
        layer = keras_layer(cfg.kind, cfg.hidden, name=layer_name(cfg, k), **args)
        y = layer(y)
        layers.append(layer)
        outs.extend(y if isinstance(y, (list, tuple)) else [y])
    model = keras.Model(inp, outs)
    if cfg.nest != "none":  # the layers inside a model used as a layer of the saved one
        inner = keras.Sequential([keras.Input((STEPS, cfg.input_size)), *layers], name="enc") \
            if cfg.nest == "sequential" else keras.Model(inp, outs, name="enc")
        outer_in = keras.Input((STEPS, cfg.input_size))
        model = keras.Model(outer_in, inner(outer_in))
    for w in model.weights:
        w.assign(rng.uniform(-0.5, 0.5, tuple(w.shape)).astype("float32"))
    path = tmp / f"source.{cfg.file}"
    model.save(path) if cfg.file in ("keras", "h5") else model.save_weights(path)
    truth = _keras_truth(cfg)
    found, x = [], x0.transpose(1, 0, 2)
    for k, layer in enumerate(layers):
        want = run_keras_layer(layer, x)
        width = want.shape[-1]

        def load_back(arrays, x=x, width=width):
            again = keras_layer(cfg.kind, cfg.hidden, **args)
            kept = _drop_zero_biases(arrays, cfg.bias)
            return run_keras_layer(again, x, keras_weights(kept, cfg.bidirectional, cfg.bias))

        if cfg.backward == "explicit_units":  # two groups: halves of different widths
            # (named forward_layer/backward_layer in .keras files, by the layers' own names in .h5 files)
            found += [Layer(truth, None, None, cfg.hidden, None, None, cfg.bias, select="..") for _ in range(2)]
        else:
            scope = ("enc/" if cfg.nest != "none" else "") + layer_name(cfg, k)
            found.append(Layer(truth, x, want, cfg.hidden, scope, load_back, cfg.bias))
        x = want
    return Source(str(cfg), path, "keras", _keras_options(cfg), found, cfg)


def build(cfg: Config, tmp: Path) -> Source:
    return _keras(cfg, tmp) if cfg.source == "keras" else _torch(cfg, tmp)


# --- TF1 grid (recorded TensorFlow outputs) -----------------------------------------------------------------

def _case(grid: Path, name: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    return json.loads((grid / name / "case.json").read_text()), np.load(grid / name / "reference.npz")


def _time_major(arr: np.ndarray, layout: str) -> np.ndarray:
    return arr if layout.startswith("[time") else arr.transpose(1, 0, 2)


def tf1_grid_cases() -> list[str]:
    return [c["name"] for c in json.loads((TF1_GRID / "manifest.json").read_text())["cases"]]


def tf1_declared(meta: dict) -> dict:
    """The facts TF1 used that its checkpoint does not store, declared as a user would; nothing for a case saved
    with its MetaGraph, which states them."""
    if meta["spec"].get("meta_graph"):
        return {}
    config = meta["layers"][0]["config"]
    fb, act = config.get("forget_bias"), config.get("activation")
    opts = {"forget_bias": None if fb in (None, 1.0) else fb, "activation": None if act in (None, "tanh") else act,
            "orientation": "xw" if meta["structure"] == "hand_built" else None,
            "cell_clip": config.get("cell_clip"), "proj_clip": config.get("proj_clip")}
    return {k: v for k, v in opts.items() if v is not None}


# cases whose MetaGraph shows facts no one group holds (cells that disagree, an op with no formula): nothing settles them
_META_MISSING = {"meta_gru_relu6": ("activation",)}


def tf1_truth(meta: dict) -> Truth:
    layer = meta["layers"][0]
    config, args = layer["config"], layer.get("args", {})
    widths = {lay["config"].get("num_units") for lay in meta["layers"]}
    act = config.get("activation", "tanh")
    return Truth("gru" if layer["class"] == "GRUCell" else "lstm", layers=meta["num_layers"],
                 directions=len(meta["directions"]), reset_after=False,
                 peepholes=bool(config.get("use_peepholes") or args.get("use_peephole")),
                 proj=config.get("num_proj") or 0, activation={"relu": "relu", "relu6": None}.get(str(act), "tanh"),
                 topology="independent" if meta["structure"] == "bidirectional_dynamic_rnn(MultiRNNCell, MultiRNNCell)"
                 else "interleaved", clip=bool(config.get("cell_clip") or config.get("proj_clip")),
                 widths_differ=len(widths) > 1, missing=_META_MISSING.get(meta["name"], ()),
                 cells_differ=meta["name"] == "meta_multi2_lstm_fb_mixed")


def tf1_want(meta: dict, arrays) -> np.ndarray:
    outs = meta["outputs"]
    if "outputs" in outs:
        return _time_major(arrays[outs["outputs"]["npz"]], outs["outputs"]["layout"])
    fw, bw = (_time_major(arrays[outs[f"outputs/{d}"]["npz"]], outs[f"outputs/{d}"]["layout"]) for d in ("fw", "bw"))
    return np.concatenate([fw, bw], -1)


def tf1_grid_source(name: str) -> Source:
    meta, arrays = _case(TF1_GRID, name)
    x, want = _time_major(arrays["out/x"], meta["inputs"]["x"]["layout"]), tf1_want(meta, arrays)
    if meta.get("sequence_length"):  # outputs past a sequence's length are zeros: keep the full-length one
        full = [b for b, n in enumerate(meta["sequence_length"]) if n == x.shape[0]]
        x, want = x[:, full], want[:, full]
    truth = tf1_truth(meta)
    layout = None if meta["structure"] == "hand_built" else "tf1"
    width = truth.proj or meta["hidden_size"] or 1
    return Source(f"tf1_grid/{name}", TF1_GRID / name / meta["prefix"], layout, tf1_declared(meta),
                  [Layer(truth, x, want, width)])


# --- tf.keras 2 grid (recorded tf.keras outputs; Keras 3 stands in for round trips) -------------------------

_TFK = {"recurrent_activation": "sigmoid", "activation": "tanh", "go_backwards": False, "reset_after": True,
        "use_bias": True}


def tfkeras_grid_cases() -> list[str]:
    return [c["name"] for c in json.loads((KERAS_GRID / "manifest.json").read_text())["cases"]]


def _tfk_formula(name: str) -> str:
    return "hard_sigmoid_keras2" if name == "hard_sigmoid" else name  # tf.keras 2: clip(0.2x + 0.5, 0, 1)


def _tfk_layer(spec: list) -> dict:
    cls, kw = spec
    out = {k: kw.get(k, v) for k, v in _TFK.items()}
    out.update(kind=cls.lower(), units=kw["units"], activation=_tfk_formula(out["activation"]),
               recurrent_activation=_tfk_formula(out["recurrent_activation"]))
    return out


def tfkeras_source(name: str, file: str) -> Source:
    meta, arrays = _case(KERAS_GRID, name)
    x = arrays["out/x"].transpose(1, 0, 2)
    layers = []
    for cls, kw in meta["spec"]["layers"]:
        options: dict = {}
        bi = cls == "Bidirectional"
        inner = _tfk_layer(kw["layer"] if bi else [cls, kw])
        back = _tfk_layer(kw["backward_layer"]) if bi and kw.get("backward_layer") else None
        differ = back is not None and any(back[k] != inner[k] for k in ("kind", "units", "activation",
                                                                         "recurrent_activation", "reset_after", "use_bias"))
        mode = kw.get("merge_mode", "concat") if bi else None
        mode = "none" if bi and mode is None else mode
        key = f"out/layers/{kw['name']}"
        if bi:
            fw = arrays[f"{key}/forward_layer"].transpose(1, 0, 2)
            bw = arrays[f"{key}/backward_layer"].transpose(1, 0, 2)
            both = np.concatenate([fw, bw[::-1]], -1) if fw.shape == bw.shape else None
            want = both if mode in ("concat", "none") else (arrays[key].transpose(1, 0, 2) if key in arrays.files else None)
        else:
            want = arrays[key].transpose(1, 0, 2)
        truth = Truth(inner["kind"], directions=2 if bi else 1, reset_after=inner["reset_after"],
                      go_backwards=inner["go_backwards"], forward_backwards=bi and inner["go_backwards"], merge_mode=mode,
                      activation=inner["activation"], recurrent_activation=inner["recurrent_activation"],
                      halves_differ=differ)
        if file != "model.h5":
            if differ and back["units"] == inner["units"] and back["kind"] == inner["kind"]:
                return Source(f"tfkeras_grid/{name}/{file}", KERAS_GRID / name / file, "keras", {}, [],
                              notes=["a weights-only Bidirectional whose halves differ in what they compute: no flag "
                                     "can declare that (model.h5 covers it)"])
            options.update(activation=inner["activation"], recurrent_activation=inner["recurrent_activation"],
                           go_backwards=inner["go_backwards"])
            if inner["kind"] == "gru" and not inner["use_bias"]:
                options["reset_after"] = inner["reset_after"]
            if bi:
                options["merge_mode"] = mode

        def load_back(arrays_, x=x, inner=inner, bi=bi, mode=mode, back=back):
            over = None if back is None else {"go_backwards": back["go_backwards"]}
            layer = keras_layer(inner["kind"], inner["units"], activation=inner["activation"],
                                recurrent_activation=inner["recurrent_activation"], use_bias=inner["use_bias"],
                                reset_after=inner["reset_after"], go_backwards=inner["go_backwards"], bidirectional=bi,
                                merge_mode=mode or "concat", backward=over)
            return run_keras_layer(layer, x, keras_weights(_drop_zero_biases(arrays_, inner["use_bias"]), bi,
                                                           inner["use_bias"]))

        if differ and (back["units"] != inner["units"] or back["kind"] != inner["kind"]):
            layers += [Layer(truth, None, None, inner["units"], select=".."), Layer(truth, None, None, back["units"], select="..")]
        else:
            layers.append(Layer(truth, x, want, inner["units"], None, load_back if want is not None else None,
                                inner["use_bias"], options))
        x = arrays[key].transpose(1, 0, 2) if key in arrays.files else None
    return Source(f"tfkeras_grid/{name}/{file}", KERAS_GRID / name / file, "keras", {}, layers)


# --- files other frameworks wrote, with their own recorded forward passes (issue 24) --------------------------

FIXTURES = ROOT / "fixtures"
_T = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))  # noqa: E731  (B, T, F) as recorded -> (T, B, F)


def _recorded(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def new_format_sources() -> dict[str, Callable[[], Source]]:
    """Flax (linen, written by flax 0.12.8), PaddlePaddle (paddle.save, 3.3.1) and TFLite (the converter and TF's
    schema, 2.21) files, each group with the framework's own recorded output on its recorded input."""
    def flax() -> Source:
        rec = _recorded(FIXTURES / "flax" / "rnn_linen.forward.npz")
        x = _T(rec["x"])
        layers = [Layer(Truth("lstm", directions=2), x, _T(rec["bilstm"]), 3, scope="params/bilstm"),
                  Layer(Truth("gru"), x, _T(rec["gru"]), 3, scope="params/gru"),
                  Layer(Truth("lstm"), x, _T(rec["olstm"]), 3, scope="params/olstm"),
                  Layer(Truth("gru", directions=2), x, _T(rec["bigru"]), 3, scope="params/bigru")]
        return Source("flax/rnn_linen.msgpack", FIXTURES / "flax" / "rnn_linen.msgpack", "flax", {}, layers)

    def paddle() -> Source:
        rec = _recorded(FIXTURES / "paddle" / "lstm.forward.npz")
        layers = [Layer(Truth("lstm", layers=2, directions=2), _T(rec["x"]), _T(rec["lstm"]), 2, scope="lstm"),
                  Layer(Truth("gru"), _T(rec["lstm"]), _T(rec["gru"]), 2, scope="gru")]
        return Source("paddle/lstm.pdparams", FIXTURES / "paddle" / "lstm.pdparams", "paddle", {}, layers)

    def tflite(name: str, truth: Truth, width: int, key: str = "y") -> Callable[[], Source]:
        def make() -> Source:
            rec = _recorded(FIXTURES / "tflite" / f"{name}.forward.npz")
            return Source(f"tflite/{name}.tflite", FIXTURES / "tflite" / f"{name}.tflite", None, {},
                          [Layer(truth, _T(rec["x"]), _T(rec[key]), width)])
        return make

    return {"flax": flax, "paddle": paddle,
            "tflite_bidi": tflite("bidi", Truth("lstm", directions=2), 4),
            "tflite_lstm": tflite("lstm", Truth("lstm", clip=True), 3, key="lstm"),
            "tflite_peephole_proj": tflite("useq_peephole_proj", Truth("lstm", peepholes=True, proj=3, clip=True), 3)}
