"""The conversion matrix (docs/conversions.md), generated from the suite: source layout x target, exact or refused and why.

Each row is a source the suite builds (a ``Config`` that ``test_conformance`` pins as an ``@example`` and
runs through the real frameworks, or a TF-made fixture that the grid tests run); each cell is what
ckptsurgeon does with it, checked against the suite's rule table while the table is made (a cell that
disagrees with the table is an error, not a cell).

    python tests/conformance/matrix.py            # print the table
    python tests/conformance/matrix.py --write    # replace it in docs/conversions.md (between the markers)
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "torch")

from cf_rules import OVER_REFUSED, expected, label, match_reasons  # noqa: E402
from cf_sources import ROOT, Source, build, new_format_sources, tf1_grid_source, tfkeras_source  # noqa: E402
from cf_space import TARGETS, Config  # noqa: E402

__all__ = ["ROWS", "table", "README", "START", "END"]

README = ROOT / "docs" / "conversions.md"  # the docs page the matrix lives in (the name stays for its users)
START, END = "<!-- conformance-matrix:start -->", "<!-- conformance-matrix:end -->"

K = dict(source="keras", file="keras", input_size=3, hidden=4)
ROWS: list[tuple[str, str, Callable[[Path], Source] | Config]] = [
    ("PyTorch `nn.LSTM`", "2 layers, bidirectional", Config("torch", "lstm", layers=2, bidirectional=True)),
    ("PyTorch `nn.LSTM`", "`proj_size`", Config("torch", "lstm", proj=2)),
    ("PyTorch `nn.LSTM`", "`bias=False`, input == hidden", Config("torch", "lstm", bias=False, input_size=4)),
    ("PyTorch `nn.GRU`", "reset-after (PyTorch's family)", Config("torch", "gru", bidirectional=True)),
    ("PyTorch `nn.LSTMCell`", "", Config("torch-cell", "lstm")),
    ("PyTorch `nn.GRUCell`", "", Config("torch-cell", "gru")),
    ("Keras 3 `LSTM`", "sigmoid / tanh", Config(kind="lstm", **K)),
    ("Keras 3 `GRU`", "`reset_after=True`", Config(kind="gru", **K)),
    ("Keras 3 `GRU`", "`reset_after=False`", Config(kind="gru", reset_after=False, **K)),
    ("Keras 3 `LSTM`", "`recurrent_activation='hard_sigmoid'` (relu6(x+3)/6)",
     Config(kind="lstm", recurrent_activation="hard_sigmoid", **K)),
    ("tf.keras 2 `LSTM`", "`recurrent_activation='hard_sigmoid'` (clip(0.2x+0.5))",
     lambda tmp: tfkeras_source("lstm_hard_sigmoid", "model.h5")),
    ("Keras 3 `LSTM`", "`activation='relu'`", Config(kind="lstm", activation="relu", **K)),
    ("Keras 3 `LSTM`", "`activation='sigmoid'`, `recurrent_activation='tanh'`",
     Config(kind="lstm", activation="sigmoid", recurrent_activation="tanh", **K)),
    ("Keras 3 `LSTM`", "`activation='elu'` (no reference formula)", Config(kind="lstm", activation="elu", **K)),
    ("Keras 3 `LSTM`", "`go_backwards=True`", Config(kind="lstm", go_backwards=True, **K)),
    ("Keras 3 `Bidirectional`", "`merge_mode='concat'`", Config(kind="lstm", bidirectional=True, **K)),
    ("Keras 3 `Bidirectional`", "`merge_mode='sum'` (also mul, ave)",
     Config(kind="lstm", bidirectional=True, merge_mode="sum", **K)),
    ("Keras 3 `Bidirectional`", "`merge_mode='sum'` + `--allow-concat-merge`",
     Config(kind="lstm", bidirectional=True, merge_mode="sum", allow_concat_merge=True, **K)),
    ("Keras 3 `Bidirectional`", "`merge_mode=None`", Config(kind="lstm", bidirectional=True, merge_mode="none", **K)),
    ("Keras 3 `Bidirectional`", "explicit `backward_layer` (same config)",
     Config(kind="lstm", bidirectional=True, backward="explicit", **K)),
    ("Keras 3 legacy `.h5`", "explicit `backward_layer` (stored under its own name)",
     Config(kind="lstm", bidirectional=True, backward="explicit", **{**K, "file": "h5"})),
    ("Keras 3 `Bidirectional`", "`backward_layer` with another activation",
     Config(kind="gru", bidirectional=True, backward="explicit_relu", **K)),
    ("Keras 3 `Bidirectional`", "forward layer `go_backwards=True`",
     Config(kind="lstm", bidirectional=True, backward="swapped", **K)),
    ("Keras 3 `.weights.h5`", "GRU without bias, no `--reset-after/--reset-before`",
     Config(kind="gru", bias=False, declare_family=False, **{**K, "file": "weights.h5"})),
    ("TF1 `LSTMCell`", "forget_bias 1.0 (version default)", lambda tmp: tf1_grid_source("lstm")),
    ("TF1 `LSTMCell`", "peepholes", lambda tmp: tf1_grid_source("lstm_peep")),
    ("TF1 `LSTMCell`", "`num_proj`", lambda tmp: tf1_grid_source("lstm_proj")),
    ("TF1 `LSTMCell`", "`cell_clip`, `proj_clip` (`--cell-clip`, `--proj-clip`)", lambda tmp: tf1_grid_source("lstm_clip")),
    ("TF1 `LSTMCell`", "`activation=relu` (`--activation relu`)", lambda tmp: tf1_grid_source("lstm_relu")),
    ("TF1 `BasicLSTMCell` with its `.meta`", "forget_bias 0 read from the MetaGraph",
     lambda tmp: tf1_grid_source("meta_basic_lstm_fb0")),
    ("TF1 `MultiRNNCell` with its `.meta`", "layers of forget_bias 0 and 1", lambda tmp: tf1_grid_source("meta_multi2_lstm_fb_mixed")),
    ("TF1 `CudnnCompatibleLSTMCell`", "no forget bias", lambda tmp: tf1_grid_source("cudnn_compat_lstm")),
    ("TF1 `GRUCell`", "reset-before", lambda tmp: tf1_grid_source("gru")),
    ("TF1 `MultiRNNCell`", "2 layers", lambda tmp: tf1_grid_source("multi2_lstm")),
    ("TF1 `MultiRNNCell`", "layers of different widths", lambda tmp: tf1_grid_source("multi2_lstm_mixed")),
    ("TF1 `stack_bidirectional_dynamic_rnn`", "interleaved", lambda tmp: tf1_grid_source("stack_bi2_lstm")),
    ("TF1 `bidirectional_dynamic_rnn(MultiRNNCell, ...)`", "independent stacks",
     lambda tmp: tf1_grid_source("bi_multi2_lstm")),
    ("hand-built per-gate TF1 cell", "`--orientation xw`", lambda tmp: tf1_grid_source("handbuilt_lstmcell_in4")),
    ("Flax linen `Bidirectional(LSTMCell)`", "written by flax", lambda tmp: new_format_sources()["flax"]()),
    ("PaddlePaddle `nn.LSTM`", "2 layers, bidirectional, `paddle.save`", lambda tmp: new_format_sources()["paddle"]()),
    ("TFLite `BIDIRECTIONAL_SEQUENCE_LSTM`", "", lambda tmp: new_format_sources()["tflite_bidi"]()),
    ("TFLite `UNIDIRECTIONAL_SEQUENCE_LSTM`", "the converter's `cell_clip` 10", lambda tmp: new_format_sources()["tflite_lstm"]()),
    ("TFLite `UNIDIRECTIONAL_SEQUENCE_LSTM`", "peepholes, projection, clips",
     lambda tmp: new_format_sources()["tflite_peephole_proj"]()),
]

_SHORT = {"missing": "fact not stated (flag)", "halves": "halves differ", "widths": "widths differ",
          "reset_before": "reset-before GRU", "reset_after": "reset-after GRU", "peepholes": "peepholes",
          "projection": "projection", "one_cell": "more than one cell", "independent": "independent stacks",
          "forward_backwards": "forward runs backwards", "go_backwards": "go_backwards", "no_formula": "no formula",
          "clip": "clip", "cells_differ": "cells differ", "merge": "merge (`--allow-concat-merge`)", "activations": "activations (`--allow-approx`)"}


def _cell(source: Source, target: str) -> str:
    """What ckptsurgeon does with the source's first group for ``target``, checked against the rule table."""
    import ckptsurgeon
    from ckptsurgeon.rnn import ConvertOptions, recognize, refusals

    layer = source.layers[0]
    options = {**source.options, **layer.options}
    groups = recognize(ckptsurgeon.open(source.path), ConvertOptions(**options))
    group = groups[0] if layer.scope is None else next(g for g in groups if g.scope == layer.scope)
    reasons = refusals(group, target, allow_concat_merge=bool(options.get("allow_concat_merge")))
    got, want = match_reasons(reasons), expected(layer.truth, target)
    if set(got) != set(want) or None in got:
        raise AssertionError(f"{source.label} -> {target}: ckptsurgeon gives {got} ({reasons}), the rule table {want}")
    return "exact" if not got else "refused: " + ", ".join(_SHORT[n] + ("†" if (target, n) in OVER_REFUSED else "")
                                                        for n in dict.fromkeys(got))


def table() -> str:
    lines = ["| source | property | " + " | ".join(f"`{t}`" for t in TARGETS) + " |",
             "|---|---|" + "---|" * len(TARGETS)]
    with tempfile.TemporaryDirectory(prefix="matrix-") as tmp:
        for i, (src, prop, how) in enumerate(ROWS):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            source = build(how, folder) if isinstance(how, Config) else how(folder)
            lines.append(f"| {src} | {prop} | " + " | ".join(_cell(source, t) for t in TARGETS) + " |")
    legend = ("Refusals, by the suite's rule table (`tests/conformance/cf_rules.py`): " +
              "; ".join(f"*{_SHORT[n]}*: {label(n)}" for n in _SHORT) + ". †: the target framework computes it, "
              "ckptsurgeon refuses it anyway (" + "; ".join(f"`{t}` {_SHORT[n]}: {why}" for (t, n), why in OVER_REFUSED.items())
              + ").")
    return "\n".join(lines) + "\n\n" + legend + "\n"


def readme_table(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> None:
    made = table()
    if argv[1:] == ["--write"]:
        text = README.read_text()
        head, rest = text.split(START, 1)
        README.write_text(head + START + "\n" + made + END + rest.split(END, 1)[1])
        print(f"wrote the matrix into {README}")
    else:
        print(made, end="")


if __name__ == "__main__":
    main(sys.argv)
