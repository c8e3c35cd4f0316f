"""The configuration space of the conformance suite, and the hypothesis strategies that draw from it.

A ``Config`` says what the source framework builds (kind, layers, directions, bias, projection, sizes,
GRU family, activations, go_backwards, Keras Bidirectional merge mode and backward layer), how it is
saved (file kind) and how the user converts it (output format, API or CLI, flags). Everything is
plain data: a failing example prints as one line that rebuilds it (``Config(...)``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["Config", "NAMES", "layer_name", "SOURCES", "TARGETS", "torch_configs", "cell_configs", "keras_configs", "any_config",
           "EXAMPLES", "suite_settings", "KERAS_ACTIVATIONS", "KERAS_FORMULA"]

SOURCES = ("torch", "torch-cell", "keras")  # hypothesis-drawn; the TF-made fixtures are fixed cases
TARGETS = ("torch", "torch-cell", "keras", "tf1", "onnx", "gates", "flax", "paddle")

# Keras 3 activation names -> ckptsurgeon's formula names (None: no reference formula, refused everywhere)
KERAS_FORMULA = {"sigmoid": "sigmoid", "tanh": "tanh", "hard_sigmoid": "hard_sigmoid_keras3", "relu": "relu",
                 "linear": "linear", "softsign": "softsign", "softplus": "softplus", "elu": None}
KERAS_ACTIVATIONS = tuple(KERAS_FORMULA)


@dataclass(frozen=True)
class Config:
    source: str  # torch | torch-cell | keras
    kind: str  # lstm | gru
    layers: int = 1  # torch: num_layers of one module; keras: stacked layers (one group each)
    bidirectional: bool = False
    bias: bool = True
    proj: int = 0  # torch nn.LSTM proj_size
    input_size: int = 3
    hidden: int = 4
    reset_after: bool = True  # Keras GRU family (PyTorch GRUs are reset-after)
    activation: str = "tanh"  # Keras names (KERAS_FORMULA)
    recurrent_activation: str = "sigmoid"
    go_backwards: bool = False  # Keras, one direction
    merge_mode: str = "concat"  # Keras Bidirectional: concat sum mul ave none
    backward: str = "default"  # Keras Bidirectional: default | explicit | explicit_relu | explicit_units | swapped
    file: str = "pt"  # torch: pt | safetensors; keras: keras | weights.h5 | h5
    declare_family: bool = True  # weights-only GRU without bias: the user passes --reset-after/--reset-before
    out_format: str = "safetensors"  # safetensors | npz | h5 | pt
    via: str = "api"  # api | cli
    allow_concat_merge: bool = False
    extra: str = "none"  # PyTorch: none | layernorm (a LayerNorm cell's extra tensors) | gap (layer 1 missing)
    nest: str = "none"  # Keras: none | sequential | functional (the layers inside a model "enc" used as a layer)
    names: str = "default"  # Keras layer names, adversarial ones included (NAMES)
    seed: int = 0

    def __str__(self) -> str:
        default = Config(self.source, self.kind)
        changed = {f.name: getattr(self, f.name) for f in fields(self)
                   if f.name in ("source", "kind") or getattr(self, f.name) != getattr(default, f.name)}
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    def with_(self, **changes) -> Config:
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def weights_only(self) -> bool:
        return self.source == "keras" and self.file == "weights.h5"


_sizes = st.integers(1, 5)
_out = st.sampled_from(("safetensors", "npz", "h5", "pt"))
_via = st.sampled_from(("api", "api", "cli"))
_seed = st.integers(0, 2**16)


@st.composite
def _input_size(draw, hidden: int) -> int:
    return hidden if draw(st.booleans()) else draw(st.integers(1, 6))  # input == hidden is a case of its own


@st.composite
def torch_configs(draw) -> Config:
    kind = draw(st.sampled_from(("lstm", "gru")))
    hidden = draw(_sizes)
    proj = draw(st.integers(0, hidden - 1)) if kind == "lstm" and hidden > 1 and draw(st.booleans()) else 0
    layers = draw(st.integers(1, 3))
    extras = ("none",) * 6 + ("layernorm",) + (("gap",) if layers == 3 else ())
    return Config("torch", kind, layers=layers, bidirectional=draw(st.booleans()),
                  bias=draw(st.booleans()), proj=proj, input_size=draw(_input_size(hidden)), hidden=hidden,
                  file=draw(st.sampled_from(("pt", "safetensors"))), out_format=draw(_out), via=draw(_via),
                  extra=draw(st.sampled_from(extras)), seed=draw(_seed))


@st.composite
def cell_configs(draw) -> Config:
    hidden = draw(_sizes)
    return Config("torch-cell", draw(st.sampled_from(("lstm", "gru"))), bias=draw(st.booleans()),
                  input_size=draw(_input_size(hidden)), hidden=hidden, file=draw(st.sampled_from(("pt", "safetensors"))),
                  out_format=draw(_out), via=draw(_via), extra=draw(st.sampled_from(("none",) * 5 + ("layernorm",))),
                  seed=draw(_seed))


# Layer names users choose, including ones that look like what ckptsurgeon once read from names alone: a forward
# half, a backward half, a stacked layer, a cell. ``{k}``: the layer's position; without it, ``_k`` after the first.
NAMES = {"default": "", "forward_lstm": "forward_lstm", "backward_lstm": "backward_lstm", "layer_k": "layer_{k}",
         "rnn": "rnn", "cell_k": "cell_{k}", "fw": "fw", "bw": "bw", "lstm": "lstm"}


def layer_name(cfg: Config, k: int) -> str:
    """The name of the ``k``-th recurrent layer a Keras source builds."""
    pattern = NAMES[cfg.names]
    if not pattern:
        return f"bi{k}" if cfg.bidirectional else f"rnn{k}"
    return pattern.format(k=k) if "{k}" in pattern else (pattern if k == 0 else f"{pattern}_{k}")


_ACT = st.sampled_from(("tanh",) * 4 + ("relu", "linear", "softsign", "softplus", "sigmoid", "hard_sigmoid", "elu"))
_REC = st.sampled_from(("sigmoid",) * 4 + ("hard_sigmoid", "hard_sigmoid", "tanh", "relu", "softsign", "elu"))


@st.composite
def keras_configs(draw) -> Config:
    kind = draw(st.sampled_from(("lstm", "gru")))
    hidden = draw(_sizes)
    file = draw(st.sampled_from(("keras", "keras", "weights.h5", "h5")))  # h5: Keras 3's legacy full-model .h5
    bidirectional = draw(st.booleans())
    merge = draw(st.sampled_from(("concat", "concat", "sum", "mul", "ave", "none"))) if bidirectional else "concat"
    backward = draw(st.sampled_from(("default", "default", "explicit", "explicit_relu", "explicit_units", "swapped"))) \
        if bidirectional else "default"
    activation, recurrent = draw(_ACT), draw(_REC)
    if file == "weights.h5":
        # A weights-only file states none of these; the user declares them by flag, which only names known formulas,
        # and no flag says that the two halves of a Bidirectional differ in what they compute.
        activation = activation if KERAS_FORMULA[activation] else "tanh"
        recurrent = recurrent if KERAS_FORMULA[recurrent] else "sigmoid"
        backward = "default" if backward == "explicit_relu" else backward
    if backward == "explicit_units":  # halves of different widths: only their concatenation has a shape
        merge = "concat"
    # merge_mode None returns two tensors, halves of different widths: a last layer only
    layers = 1 if merge == "none" or backward == "explicit_units" else draw(st.integers(1, 3))
    return Config("keras", kind, layers=layers, bidirectional=bidirectional, bias=draw(st.booleans()),
                  input_size=draw(_input_size(hidden)), hidden=hidden,
                  reset_after=draw(st.booleans()) if kind == "gru" else True, activation=activation,
                  recurrent_activation=recurrent, go_backwards=False if bidirectional else draw(st.booleans()),
                  merge_mode=merge, backward=backward, file=file, declare_family=draw(st.booleans()) or draw(st.booleans()),
                  out_format=draw(_out), via=draw(_via), allow_concat_merge=merge in ("sum", "mul", "ave") and draw(st.booleans()),
                  nest=draw(st.sampled_from(("none", "none", "sequential", "functional"))) if merge != "none" else "none",
                  names=draw(st.sampled_from(tuple(NAMES))), seed=draw(_seed))


def any_config() -> st.SearchStrategy[Config]:
    return st.one_of(torch_configs(), cell_configs(), keras_configs())


# CI: a fixed, bounded run; CONFORMANCE_EXAMPLES=5000 (and CONFORMANCE_SEED) for a campaign.
EXAMPLES = int(os.environ.get("CONFORMANCE_EXAMPLES", "0") or 0)


def suite_settings(ci_examples: int):
    """Hypothesis settings: ``ci_examples`` derandomized examples in CI, ``CONFORMANCE_EXAMPLES`` in a campaign."""
    campaign = EXAMPLES > 0
    return settings(max_examples=EXAMPLES if campaign else ci_examples, derandomize=not campaign, deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])
