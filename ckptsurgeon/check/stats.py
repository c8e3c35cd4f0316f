"""Per-tensor and per-gate statistics, initializer guesses, and groups holding identical values."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import FormatError
from ..index import CheckpointIndex
from ..rnn.gates import GATE_LABELS
from ..rnn.group import RecognizeOptions, RecurrentGroup
from ..rnn.recognize import recognize
from .initializers import guess_initializer, orthogonality
from .summary import summarize

__all__ = ["Stats", "tensor_stats", "checkpoint_stats"]


@dataclass
class Stats:
    mean: float
    std: float
    min: float
    max: float
    zeros: float  # share of exact zeros
    l2: float
    orthogonality: float | None  # max |M^T M/g^2 - I| for matrices
    init: str
    evidence: str
    candidates: list[str]  # every initializer that fits, when the values cannot tell them apart


def tensor_stats(values: np.ndarray, *, fans=(), hidden=None, gate=None, matrix=None, init=None, family=None) -> Stats:
    """Statistics of ``values`` in its own dtype, widened chunk by chunk (``summarize``), and its best guess."""
    s = summarize(values)
    orth = None
    m = matrix if matrix is not None else (values if np.ndim(values) == 2 and min(np.shape(values)) > 1 else None)
    if m is not None and not s.nonfinite:
        orth = orthogonality(m)[0]
    guess = init or guess_initializer(values, fans=fans, hidden=hidden, gate=gate, matrix=matrix, family=family, summary=s)
    finite = s.size - s.nonfinite
    nan = float("nan")
    return Stats(s.mean if finite else nan, s.std if finite else nan, s.min if finite else nan, s.max if finite else nan,
                 s.zeros / s.size if s.size else 0.0, s.l2 if finite else 0.0, orth, guess.name, guess.evidence,
                 list(guess.candidates))


_FORMAT_FAMILY = {"pytorch": "torch", "pytorch-legacy": "torch", "torchscript": "torch", "keras": "keras", "keras-v3": "keras",
                  "keras-h5": "keras"}


def _fans(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    if len(shape) == 2:
        return [(shape[1], shape[0]), (shape[0], shape[1])]  # (out, in) as PyTorch stores, (in, out) as Keras/TF
    if len(shape) > 2:  # convolutions: receptive field times channels
        rf = int(np.prod(shape[2:]))
        return [(shape[1] * rf, shape[0] * rf)]
    return []


def _group_context(g: RecurrentGroup) -> tuple[list[tuple[int, int]], int | None, str | None]:
    """(fans, hidden, framework family) for guessing how a group's tensors were initialized."""
    G, H = (4 if g.kind == "lstm" else 3), g.hidden_size
    fans = list(dict.fromkeys([(g.input_size, G * H), ((g.proj_size or H), G * H), (g.input_size + (g.proj_size or H), G * H),
                               (g.input_size, H), (H, H)]))
    if g.layout == "tf1-gru":  # TF1 GRUCell initializes gates/kernel (in+H, 2H) and candidate/kernel (in+H, H) apart
        fans += [(g.input_size + H, 2 * H), (g.input_size + H, H)]
    hidden = H if g.layout.startswith("torch") else None  # PyTorch's RNN default U(+-1/sqrt(H))
    family = "torch" if g.layout.startswith("torch") else "keras" if g.layout.startswith("keras") else \
        "tf1" if g.layout.startswith("tf1") else None
    return fans, hidden, family


@np.errstate(invalid="ignore")  # b_hh.any() on a signaling NaN raises "invalid": stats reports values, not warnings
def _group_gates(g: RecurrentGroup) -> list[dict[str, Any]]:
    rows = []
    letters = "ifgo" if g.kind == "lstm" else "rzn"
    G, H = len(letters), g.hidden_size
    fans, hidden, family = _group_context(g)
    guess = lambda a, **kw: guess_initializer(a, fans=fans, hidden=hidden, family=family, **kw)  # noqa: E731
    for k, layer in enumerate(g.cells()):
        for d, cell in enumerate(layer):
            # Kernels are initialized whole (one initializer call per matrix), so guess on the whole matrix.
            whole = {"input kernel": guess(cell.w_ih), "recurrent kernel": guess(cell.w_hh)}
            b_ih, b_hh = cell.biases()
            if g.forget_bias and g.kind == "lstm":  # show the bias as stored, without TF1's run-time constant
                b_ih = b_ih.copy()
                b_ih[H:2 * H] -= g.forget_bias
            parts = {"input kernel": cell.w_ih, "recurrent kernel": cell.w_hh}
            if cell.has_bias:
                parts["bias"] = b_ih
                if b_hh.any():  # single-bias layouts keep zeros here
                    parts["recurrent bias"] = b_hh
                for name in ("bias", "recurrent bias"):  # one vector, one initializer call, unless gates differ
                    if name in parts:
                        pooled = guess(parts[name])
                        if not pooled.name.startswith(("constant", "not an", "too few")):
                            whole[name] = pooled
            pooled_kernels = {}
            if g.layout == "tf1-gru":  # two variables, initialized apart: gates/kernel [r, z] and candidate/kernel [n]
                ih, hh = np.split(cell.w_ih, G), np.split(cell.w_hh, G)
                rz = guess(np.concatenate([ih[0].ravel(), ih[1].ravel(), hh[0].ravel(), hh[1].ravel()]))
                n = guess(np.concatenate([ih[2].ravel(), hh[2].ravel()]))
                pooled_kernels = {"r": rz, "z": rz, "n": n}
            for part, arr in parts.items():
                for j, letter in enumerate(letters):
                    block = np.split(arr, G)[j]
                    init = pooled_kernels.get(letter) if pooled_kernels and "kernel" in part else whole.get(part)
                    s = tensor_stats(block, fans=fans, hidden=hidden, gate=letter, init=init, family=family,
                                     matrix=block if block.ndim == 2 and block.shape[0] == block.shape[1] else None)
                    rows.append({"layer": k, "direction": "backward" if d else "forward", "gate": GATE_LABELS[letter],
                                 "part": part, **asdict(s)})
    return rows


@np.errstate(invalid="ignore")  # widening a signaling NaN raises "invalid": the digest needs no warning
def _digest(g: RecurrentGroup) -> str:
    h = hashlib.sha256()
    for layer in g.cells():
        for cell in layer:
            for arr in (cell.w_ih, cell.w_hh, *cell.biases()):
                h.update(np.ascontiguousarray(arr, np.float64).tobytes())
    return h.hexdigest()


def checkpoint_stats(index: CheckpointIndex, options: RecognizeOptions | None = None, *,
                     include_optimizer: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Statistics and initializer guesses per tensor and per gate.

    Optimizer state is left out (and counted) unless ``include_optimizer``, as ``extract`` does. A
    tensor of a recurrent group is judged in its group's context (PyTorch's U(+-1/sqrt(H)) for
    PyTorch layouts, the group's fans and framework). ``progress(n, total)`` is called as tensors are read.
    """
    skipped = 0
    if not include_optimizer and len(index):
        kept = index.select(include_optimizer=False)
        skipped, index = len(index) - len(kept), kept
    groups = recognize(index, options)
    context = {m: _group_context(g) for g in groups for m in g.members}
    tensors = []
    chosen = [ref for ref in index.values() if ref.dtype.kind in "fiub" or ref.dtype.name in ("bfloat16",)]
    total = sum(ref.nbytes for ref in chosen)
    quantized = (index.metadata.get("quantization") or {}) if index.format == "tflite" else {}
    for ref in chosen:
        arr = ref.numpy()
        if ref.path in quantized:  # TFLite int8/int32: stored integers; their statistics are the real values'
            from ..formats.tflite.quant import dequantize

            arr = dequantize(arr, quantized[ref.path], f"{index.files[0]}: tensor {ref.path!r}")
        if progress is not None:
            progress(ref.nbytes, total)
        fans, hidden, family = context.get(ref.path, ([], None, _FORMAT_FAMILY.get(index.format)))
        fans = list(dict.fromkeys(_fans(ref.shape) + list(fans)))  # the stored tensor's own fans, then its group's
        s = tensor_stats(arr, fans=fans, hidden=hidden, family=family)
        dtype = ref.dtype_name + (" dequantized" if ref.path in quantized else "")
        tensors.append({"path": ref.path, "shape": list(ref.shape), "dtype": dtype, "optimizer": ref.optimizer,
                        **asdict(s)})
    out_groups, digests = [], {}
    for g in groups:
        if g.load is None:  # recognized and refused (a TFLite CIFG or layer-norm LSTM ...): its tensors are listed above
            out_groups.append({"scope": g.scope, "kind": g.kind, "variant": g.variant, "gates": []})
            continue
        try:
            gates = _group_gates(g)
        except FormatError as exc:  # a group that cannot be read: say in which file
            raise FormatError(f"{index.files[0]}: {exc}") from None
        out_groups.append({"scope": g.scope, "kind": g.kind, "variant": g.variant, "gates": gates})
        digests.setdefault(_digest(g), []).append(g.scope)
    return {"format": index.format, "tensors": tensors, "groups": out_groups, "left_out_optimizer": skipped,
            "identical_groups": [scopes for scopes in digests.values() if len(scopes) > 1]}
