"""Helpers for the ONNX recurrent-group tests: run models with onnxruntime / onnx.reference, flatten Y,
and the torch models the tests export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx_models import onnx, rnn_model, torch_export  # noqa: F401  (re-exported for the tests)

import ckptsurgeon
from ckptsurgeon.rnn.recognize import recognize


def ort_run(path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ref_run(path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(path)).run(None, feeds)


def flat_y(y: np.ndarray, layout: int = 0) -> np.ndarray:
    """Y [T, D, B, H] (layout 1: [B, T, D, H]) -> [T, B, D*H], directions concatenated (what run_stack returns)."""
    if layout == 1:
        y = y.transpose(1, 2, 0, 3)
    t, d, b, h = y.shape
    return y.transpose(0, 2, 1, 3).reshape(t, b, d * h)


def groups_of(path, **select) -> list:
    index = ckptsurgeon.open(str(path))
    if select:
        index = index.select(*select.get("scope", ()))
    return recognize(index)


def one_group(path):
    groups = groups_of(path)
    assert len(groups) == 1, [g.scope for g in groups]
    return groups[0]


def input_names(path) -> list[str]:
    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


def lstmcell_module(torch, cls: str = "LSTMCell"):
    """A scripted module calling ``nn.LSTMCell`` inside an ``if``: torch exports it as an If whose branch feeds
    the LSTM node's W/R/B through Slice/Concat/Unsqueeze of the state-dict tensors."""

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(3, 4)

        def forward(self, x, h, c, flag: bool):
            if flag:
                h, c = self.cell(x, (h, c))
            return h, c

    return M()


def export_lstmcell(torch, path: Path, seed: int = 0):
    torch.manual_seed(seed)
    module = lstmcell_module(torch)
    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.tensor(True))
    torch_export(torch.jit.script(module), args, path, dynamo=False)
    return module, args


class Wrapper:
    """``nn.LSTM``/``nn.GRU`` inside a module (``rnn`` attribute), returning the output sequence."""

    @staticmethod
    def make(torch, cls: str, **kw):
        class Enc(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = getattr(torch.nn, cls)(3, 4, **kw)

            def forward(self, x):
                return self.rnn(x)[0]

        return Enc()


def assert_bytes_only_changed_inside(before: bytes, after: bytes, spans: list[tuple[int, int]]) -> int:
    """Same length, and every differing byte lies inside one of ``spans``; returns how many bytes differ."""
    assert len(before) == len(after)
    diff = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    for d in diff:
        assert any(lo <= d < hi for lo, hi in spans), f"byte {d} changed outside the replaced tensors"
    return len(diff)
