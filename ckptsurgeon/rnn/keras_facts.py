"""Which Keras wrote a file, and the documented defaults of that version.

Versions are compared as versions (``"2.15.0"`` is 2.15, not 2.1): the leading integers of
``keras_version`` (``"2.2.4-tf"`` -> (2, 2, 4)); no ``packaging`` dependency for three integers.

Rules (each is named in the provenance it produces):
- Keras 1 (per-gate ``lstm_1_W_i`` names, or keras_version 1.x): recurrent activation ``hard_sigmoid``
  (Keras 1's ``inner_activation`` default), activation ``tanh``; its ``hard_sigmoid`` is clip(0.2x+0.5).
- standalone Keras 2.0 - 2.2 (keras_version 2.0 - 2.2.x, no ``-tf``): ``hard_sigmoid``/``tanh``.
  Keras 2.3.0 changed the default recurrent activation to ``sigmoid``.
- tf.keras ``2.1.x-tf``/``2.2.x-tf`` (TF 1.x and TF 2.0/2.1 both wrote these, with different
  defaults: hard_sigmoid in TF 1.x, sigmoid in TF 2.x): no default, the flags must say.
- Keras >= 2.3 (standalone 2.3, tf.keras 2.3.0-tf ... 2.15+): ``sigmoid``/``tanh``; ``hard_sigmoid`` is
  clip(0.2x+0.5) up to Keras 2.x.
- Keras 3 (keras_version 3.x, ``.keras``/``.weights.h5``): ``sigmoid``/``tanh``; ``hard_sigmoid`` is relu6(x+3)/6.
- TF2 object-based checkpoints of Keras layers (tf.keras under TF 2.x, or Keras 3): ``sigmoid``/``tanh`` (a
  ``tf.compat.v1.keras.layers.LSTM``, whose default is hard_sigmoid, cannot be told apart: conversions note it);
- TF1 name-based (Saver) checkpoints of tf.keras layers: no default (TF 1.x said hard_sigmoid, TF 2.x sigmoid).
- anything else (a Keras-named file of unknown origin): no default; the flags must say.
The GRU family is never defaulted: the bias shape or the stored config says it, else a flag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..index import CheckpointIndex

__all__ = ["KerasEra", "parse_version", "keras_era", "resolve_activation"]


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"2.15.0"`` -> (2, 15, 0); ``"2.2.4-tf"`` -> (2, 2, 4); ``"3.0.0.dev2024"`` -> (3, 0, 0)."""
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


@dataclass(frozen=True)
class KerasEra:
    name: str  # "Keras 1", "Keras 2.0-2.2", "Keras 3" ...
    major: int | None  # 1, 2 or 3 (decides what 'hard_sigmoid' means); None: unknown
    defaults: tuple[str, str] | None  # (activation, recurrent_activation), None: no documented default
    rule: str  # the rule, in words, for provenance


def keras_era(index: CheckpointIndex, *, keras1_names: bool = False) -> KerasEra:
    version_text = str(index.metadata.get("keras_version", "") or "")
    version = parse_version(version_text)
    if keras1_names or (version and version[0] == 1):
        return KerasEra("Keras 1", 1, ("tanh", "hard_sigmoid_keras2"),
                        "Keras 1 LSTM/GRU default inner_activation=hard_sigmoid, activation=tanh")
    if version and version[0] == 2:
        if version[:2] < (2, 3):
            if version_text.strip().endswith("-tf"):
                return KerasEra(f"tf.keras {version_text}", 2, None,
                                f"tf.keras {version_text} was written by TF 1.x (default hard_sigmoid) and by TF 2.0/2.1 "
                                "(default sigmoid): no default can be told")
            return KerasEra(f"Keras {version_text}", 2, ("tanh", "hard_sigmoid_keras2"),
                            f"Keras {version_text} < 2.3 default recurrent_activation=hard_sigmoid, activation=tanh")
        return KerasEra(f"Keras {version_text}", 2, ("tanh", "sigmoid"),
                        f"Keras {version_text} >= 2.3 default recurrent_activation=sigmoid, activation=tanh")
    if (version and version[0] >= 3) or index.format in ("keras", "keras-v3"):
        name = f"Keras {version_text}" if version else "Keras 3"
        return KerasEra(name, 3, ("tanh", "sigmoid"), f"{name} default recurrent_activation=sigmoid, activation=tanh")
    if index.format == "tensorflow" and "object_graph" not in index.metadata:
        return KerasEra("tf.keras layers in a TF1 name-based checkpoint", None, None,
                        "a name-based (Saver) checkpoint of tf.keras layers was written by TF 1.x (default "
                        "recurrent_activation=hard_sigmoid) or by TF 2.x in graph mode (sigmoid): no default can be told")
    if index.format == "tensorflow":
        return KerasEra("TF2 object checkpoint", None, ("tanh", "sigmoid"),
                        "TF2 object-based checkpoint (tf.keras under TF 2.x, or Keras 3): default "
                        "recurrent_activation=sigmoid, activation=tanh")
    return KerasEra("unknown Keras", None, None, "the file does not say which Keras wrote it")


def resolve_activation(name: str, era: KerasEra) -> str | None:
    """A Keras activation name from a config -> the name of its exact formula (None: cannot tell)."""
    if name != "hard_sigmoid":
        return name
    if era.major in (1, 2):
        return "hard_sigmoid_keras2"
    if era.major == 3:
        return "hard_sigmoid_keras3"
    return None
