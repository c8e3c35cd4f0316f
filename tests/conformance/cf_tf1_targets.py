"""The tf1 target against real TensorFlow, without TensorFlow in CI.

A fixed, seeded set of PyTorch / Keras 3 sources (``CASES``) is converted to tf1 by ckptsurgeon. Once,
``fixtures/tensorflow/make_tf1_targets.py`` (run with the TensorFlow venv) calls ``export`` here (with the
project's venv) to write each conversion to ``fixtures/tensorflow/tf1_targets/<case>/``, then builds the
matching real TF1 cells (``LSTMCell``, ``GRUCell``, ``MultiRNNCell``, ``bidirectional_dynamic_rnn``,
``stack_bidirectional_dynamic_rnn``) from the conversion's self-description, checks that TensorFlow
creates exactly the converted variable names and shapes, loads the converted tensors into them and
records what TensorFlow computes.

The CI test (``test_tf1_targets``) re-creates each source, converts it again, asserts the tensors are
byte-identical to what TensorFlow was given (so the recorded outputs apply to them), and compares
TensorFlow's outputs with the source framework's own.

    python tests/conformance/cf_tf1_targets.py export DIR     # what the generator calls
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from cf_space import Config  # noqa: E402

__all__ = ["CASES", "FOLDER", "convert_case", "export"]

FOLDER = Path(__file__).resolve().parents[2] / "fixtures" / "tensorflow" / "tf1_targets"

CASES: dict[str, Config] = {
    "torch_lstm": Config("torch", "lstm", input_size=3, hidden=4, seed=11),
    "torch_lstm_nobias_in4": Config("torch", "lstm", bias=False, input_size=4, hidden=4, seed=12),
    "torch_lstm_h1": Config("torch", "lstm", input_size=2, hidden=1, seed=13),
    "torch_lstm_proj": Config("torch", "lstm", proj=2, input_size=3, hidden=4, seed=14),
    "torch_lstm_stack3": Config("torch", "lstm", layers=3, input_size=3, hidden=4, seed=15),
    "torch_lstm_bi": Config("torch", "lstm", bidirectional=True, input_size=3, hidden=4, seed=16),
    "torch_lstm_bi2_proj": Config("torch", "lstm", layers=2, bidirectional=True, proj=3, input_size=3, hidden=4, seed=17),
    "torch_lstmcell": Config("torch-cell", "lstm", input_size=3, hidden=4, seed=18),
    "keras_lstm": Config("keras", "lstm", input_size=3, hidden=4, file="keras", seed=21),
    "keras_lstm_relu": Config("keras", "lstm", activation="relu", input_size=3, hidden=4, file="keras", seed=22),
    "keras_lstm_nobias": Config("keras", "lstm", bias=False, input_size=3, hidden=4, file="keras", seed=23),
    "keras_gru_rb": Config("keras", "gru", reset_after=False, input_size=3, hidden=4, file="keras", seed=24),
    "keras_gru_rb_softsign": Config("keras", "gru", reset_after=False, activation="softsign", input_size=4, hidden=4,
                                    file="keras", seed=25),
    "keras_gru_rb_bi": Config("keras", "gru", reset_after=False, bidirectional=True, input_size=3, hidden=3,
                              file="keras", seed=26),
    "keras_lstm_bi_sum": Config("keras", "lstm", bidirectional=True, merge_mode="sum", allow_concat_merge=True,
                                input_size=3, hidden=4, file="keras", seed=27),
}


def convert_case(cfg: Config, tmp: Path):
    """(source, tf1 output path, report) for one case: the source built by its framework, converted to tf1 (npz)."""
    import ckptsurgeon
    from cf_sources import build
    from ckptsurgeon.rnn import ConvertOptions

    source = build(cfg, tmp)
    out = tmp / "tf1.npz"
    res = ckptsurgeon.extract(source.path, out, to="tf1", options=ConvertOptions(**source.options), format="npz")
    return source, out, res


def export(folder: Path) -> None:
    """Write every case's conversion: converted.npz (the ckptsurgeon output itself), case.json."""
    for name, cfg in CASES.items():
        case = folder / name
        case.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            source, out, res = convert_case(cfg, Path(tmp))
            (case / "converted.npz").write_bytes(out.read_bytes())
            layer = source.layers[0]
            np.save(case / "x.npy", layer.x)
            conv = res.converted[0]
            meta = {"name": name, "config": cfg.as_dict(), "scope": conv["scope"], "description": conv["output"],
                    "notes": conv["notes"], "x": {"npy": "x.npy", "layout": "[time, batch, input]"},
                    "made_by": "tests/conformance/cf_tf1_targets.py export (ckptsurgeon), then "
                               "fixtures/tensorflow/make_tf1_targets.py (TensorFlow)"}
            (case / "case.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        print("exported", name)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "export":
        sys.exit(__doc__)
    export(Path(sys.argv[2]))
