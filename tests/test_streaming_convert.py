"""Streamed conversions (issue 22, P6): cell by cell, the same bytes as converting the whole group.

Each case converts a real framework's weights with ``extract --to`` twice, streamed and with streaming turned off
(the whole-group path, as before the change), and asserts the two files are byte-identical; then compares every
converted tensor with the pure transforms (``convert_group`` of the recognized group). A perturbed cell must fail
verification and leave no output; and the streamed conversion holds about one cell, not the group (tracemalloc).
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from ckptsurgeon import api  # noqa: E402
from ckptsurgeon.errors import SelectionError  # noqa: E402
from ckptsurgeon.rnn import stream  # noqa: E402
from ckptsurgeon.rnn.convert import ConvertOptions, convert_group  # noqa: E402
from ckptsurgeon.rnn.gates import reorder  # noqa: E402
from ckptsurgeon.rnn.recognize import recognize  # noqa: E402


def _torch_file(tmp_path: Path, module, name: str = "src.pt") -> Path:
    path = tmp_path / name
    torch.save({f"rnn.{k}": v.detach() for k, v in module.state_dict().items()}, path)
    return path


def _extract(src: Path, out: Path, to: str, monkeypatch: pytest.MonkeyPatch | None = None, **kw) -> api.ExtractResult:
    if monkeypatch is not None:
        monkeypatch.setattr(stream, "plan", lambda *a, **k: None)  # the whole-group path
    try:
        return api.extract(str(src), str(out), to=to, **kw)
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()


def _streams(src: Path, to: str) -> bool:
    index = api.open(src)
    return all(stream.plan(g, index, to, ConvertOptions(), 1e-5) is not None for g in recognize(index))


def _tf1_file(tmp_path: Path, module) -> Path:
    """The module's weights in TF1 LSTMCell names (ckptsurgeon's own tf1 conversion, whole-group path)."""
    pt = _torch_file(tmp_path, module, "for_tf1.pt")
    out = tmp_path / "tf1.safetensors"
    mp = pytest.MonkeyPatch()
    _extract(pt, out, "tf1", mp, rename=[("rnn/", "")])
    return out


CASES = {
    "torch LSTM x2 bidirectional -> keras": (lambda: torch.nn.LSTM(12, 16, num_layers=2, bidirectional=True), "torch", "keras"),
    "torch GRU x3 -> keras": (lambda: torch.nn.GRU(10, 8, num_layers=3), "torch", "keras"),
    "torch GRU bidirectional -> keras": (lambda: torch.nn.GRU(6, 5, bidirectional=True), "torch", "keras"),
    "torch LSTM x3 bidirectional -> tf1": (lambda: torch.nn.LSTM(7, 9, num_layers=3, bidirectional=True), "torch", "tf1"),
    "torch LSTM proj -> tf1": (lambda: torch.nn.LSTM(7, 9, num_layers=2, proj_size=4), "torch", "tf1"),
    "torch LSTM x2 bidirectional -> torch (both sides run as one batch)":
        (lambda: torch.nn.LSTM(6, 7, num_layers=2, bidirectional=True), "torch", "torch"),
    "torch GRU x2 bidirectional -> torch (both sides run as one batch)":
        (lambda: torch.nn.GRU(6, 7, num_layers=2, bidirectional=True), "torch", "torch"),
    "tf1 LSTM x3 bidirectional -> torch": (lambda: torch.nn.LSTM(11, 6, num_layers=3, bidirectional=True), "tf1", "torch"),
    "tf1 LSTM x2 -> keras": (lambda: torch.nn.LSTM(5, 4, num_layers=2), "tf1", "keras"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_streamed_output_is_the_whole_group_output(tmp_path: Path, case: str) -> None:
    make, source, to = CASES[case]
    torch.manual_seed(7)
    module = make()
    src = _torch_file(tmp_path, module) if source == "torch" else _tf1_file(tmp_path, module)
    assert _streams(src, to), f"{case}: expected to stream"
    streamed, whole = tmp_path / "streamed.safetensors", tmp_path / "whole.safetensors"
    res = _extract(src, streamed, to)
    _extract(src, whole, to, pytest.MonkeyPatch())
    assert streamed.read_bytes() == whole.read_bytes()
    assert len(res.checks) == 1 and res.checks[0]["ok"] and res.checks[0]["max_abs_diff"] <= 1e-5

    # every tensor is what the pure transforms make of the recognized group, in the same order
    index = api.open(src)
    (group,) = recognize(index)
    expected = convert_group(group, to).tensors
    got = safetensors_numpy.load_file(str(streamed))
    scope = group.scope
    names = [f"{scope}/{rel}".replace("/", "." if to == "torch" else "/") if scope else rel for rel in expected]
    with open(streamed, "rb") as fh:  # the file's own order (safetensors keeps the writer's order in its offsets)
        import json
        import struct

        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    header.pop("__metadata__")
    assert sorted(header, key=lambda k: header[k]["data_offsets"][0]) == names
    for rel, name in zip(expected, names):
        want = np.asarray(expected[rel])
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert got[name].tobytes() == np.ascontiguousarray(want).tobytes(), name


@pytest.mark.parametrize("to", ["keras", "torch"])  # torch: the two sides share their matrices and run as one batch
def test_a_perturbed_cell_fails_verification_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 to: str) -> None:
    torch.manual_seed(3)
    src = _torch_file(tmp_path, torch.nn.LSTM(6, 5, num_layers=3, bidirectional=True))
    real = stream.StreamedGroup._convert

    def wrong(self, key, cell):
        out = real(self, key, cell)
        if key == (2, 1):  # the last layer's backward cell: everything before it verifies
            name = next(iter(out))
            out[name] = out[name] + np.float32(1e-3)
        return out

    monkeypatch.setattr(stream.StreamedGroup, "_convert", wrong)
    out = tmp_path / "out.safetensors"
    with pytest.raises(SelectionError, match="differ by"):
        api.extract(str(src), str(out), to=to)
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    api.extract(str(src), str(out), to=to, verify_atol=None)  # --no-verify writes what the writer made
    assert out.exists()


def test_streaming_holds_a_cell_not_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Traced allocations (numpy reports its buffers to tracemalloc): the whole-group path holds the group several
    times over; the streamed one about one cell's tensors a few times."""
    torch.manual_seed(1)
    module = torch.nn.LSTM(256, 256, num_layers=6, bidirectional=True)  # 34 MB; its largest tensor 2 MB
    src = _torch_file(tmp_path, module)
    group_bytes = sum(v.numel() * 4 for v in module.state_dict().values())
    largest = max(v.numel() * 4 for v in module.state_dict().values())

    def peak(**kw) -> int:
        out = tmp_path / "m.safetensors"
        tracemalloc.start()
        try:
            _extract(src, out, "keras", force=True, **kw)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak()
    whole = peak(monkeypatch=monkeypatch)
    assert whole > 2 * group_bytes  # what it was
    assert streamed < 10 * largest < group_bytes, (streamed, whole, largest, group_bytes)  # measured: 7.6 x largest


@pytest.mark.parametrize("kind,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
def test_two_cells_run_as_one_batch_compute_what_each_computes_alone(kind: str, reset_after: bool) -> None:
    """``run_pair`` batches two cells that share their matrices (each sequence with its own cell's biases): every
    output equals that cell's own run, and cells whose matrices differ are run apart."""
    from ckptsurgeon.rnn.cell import Cell
    from ckptsurgeon.rnn.reference import run_cell, run_pair

    rng = np.random.default_rng(5)
    G, H, n = (4 if kind == "lstm" else 3), 6, 5
    w_ih, w_hh = rng.standard_normal((G * H, n), np.float32), rng.standard_normal((G * H, H), np.float32)
    a = Cell(kind, w_ih, w_hh, rng.standard_normal(G * H, np.float32), rng.standard_normal(G * H, np.float32),
             reset_after=reset_after)
    b = Cell(kind, w_ih.copy(), w_hh.copy(), a.b_ih + a.b_hh, None, reset_after=reset_after)  # one bias: summed
    xa, xb = rng.standard_normal((7, 3, n)), rng.standard_normal((7, 3, n))
    for reverse in (False, True):
        ya, yb = run_pair(a, xa, b, xb, reverse=reverse)
        np.testing.assert_allclose(ya, run_cell(a, xa, reverse=reverse)[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(yb, run_cell(b, xb, reverse=reverse)[0], rtol=0, atol=1e-12)
    c = b.with_(w_hh=w_hh + np.float32(1e-3))
    yc = run_pair(a, xa, c, xb)[1]
    np.testing.assert_array_equal(yc, run_cell(c, xb)[0])


# --- what verification must catch: each kind of wrong conversion, injected into a real conversion's output ---------
#
# Verification runs each cell on a short random batch (stream.STEPS steps, docs/recurrent.md#verification); these
# faults are the ones a layout table or a writer gets wrong, each injected into the cell-by-cell conversion's output
# (every target that streams) and into a converted file checked by `verify` (whole groups, verify's own batch).

def _gates_swapped(arr: np.ndarray, four_h: int) -> np.ndarray:
    """The forget and cell gates' blocks exchanged (i f g o read as i g f o: TF1's order taken for Keras's)."""
    axis = [i for i, s in enumerate(arr.shape) if s == four_h][-1]
    return reorder(arr, "ifgo", "igfo", axis)


def _fault(fault: str, out: dict[str, np.ndarray], cell, four_h: int) -> dict[str, np.ndarray]:
    out = dict(out)
    if fault == "gate order":  # every tensor of the cell, consistently
        return {rel: _gates_swapped(a, four_h) for rel, a in out.items()}
    if fault == "transposition":  # the recurrent matrix's bytes in the source's orientation, reshaped to the target's
        # (only it: the recurrent path alone must show, on the steps after the first)
        rel = next(r for r in out if r.endswith(("recurrent_kernel", "lstm_cell/kernel")) or "weight_hh" in r)
        a = out[rel].copy()
        rows = a[a.shape[0] - four_h // 4:] if rel.endswith("lstm_cell/kernel") else a  # tf1: [x; h] fused, h last
        rows[...] = np.ascontiguousarray(rows.T).reshape(rows.shape)
        out[rel] = a
        return out
    if fault == "bias sum":  # the summed bias without its recurrent half, or a bias summed where none is due
        rel = next(r for r, a in out.items() if a.ndim == 1)
        if rel.rpartition("/")[2].startswith("bias_ih"):  # torch keeps both: bias_ih + bias_hh in bias_ih
            out[rel] = out[rel] + cell.b_hh
        else:
            order = "igfo" if "lstm_cell" in rel else "ifgo"
            out[rel] = out[rel] - reorder(cell.b_hh, "ifgo", order)
        return out
    raise AssertionError(fault)


FAULTS = ["gate order", "transposition", "bias sum", "swapped direction", "layer order"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("to", ["keras", "torch", "tf1"])  # torch: the two sides share their matrices (one batch)
def test_verification_catches_each_wrong_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to: str,
                                                     fault: str) -> None:
    torch.manual_seed(11)
    H = 5
    src = _torch_file(tmp_path, torch.nn.LSTM(6, H, num_layers=3, bidirectional=True))
    assert _streams(src, to)
    real = stream.StreamedGroup._convert
    swap = {"swapped direction": lambda k, d: (k, 1 - d), "layer order": lambda k, d: ({1: 2, 2: 1}.get(k, k), d)}

    def wrong(self, key, cell):
        if key != (1, 1):  # one cell of a middle layer, backward: layers before it verify, layers after it feed on it
            return real(self, key, cell)
        if fault in swap:  # this cell's tensors converted from another cell of the same shapes
            return real(self, key, self._source(swap[fault](*key)))
        return _fault(fault, real(self, key, cell), cell, 4 * H)

    monkeypatch.setattr(stream.StreamedGroup, "_convert", wrong)
    out = tmp_path / "out.safetensors"
    with pytest.raises(SelectionError, match="differ by"):
        api.extract(str(src), str(out), to=to)
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    monkeypatch.undo()
    res = api.extract(str(src), str(out), to=to)  # the same conversion, untouched, verifies
    assert res.checks[0]["ok"] and res.checks[0]["max_abs_diff"] <= 1e-6


def _file_fault(fault: str, tensors: dict[str, np.ndarray], four_h: int, b_hh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``fault`` injected into a Keras file's cell ``rnn/layer_1/backward_layer`` (or the names it swaps)."""
    cell = "rnn/layer_1/backward_layer/cell/"
    out = dict(tensors)
    if fault in ("swapped direction", "layer order"):
        other = "rnn/layer_1/forward_layer/cell/" if fault == "swapped direction" else "rnn/layer_2/backward_layer/cell/"
        for part in ("kernel", "recurrent_kernel", "bias"):
            out[cell + part], out[other + part] = tensors[other + part], tensors[cell + part]
        return out
    mine = {rel: a for rel, a in tensors.items() if rel.startswith(cell)}
    source = SimpleNamespace(b_hh=b_hh["rnn.bias_hh_l1_reverse"])  # what _fault reads of the source cell
    out.update(_fault(fault, mine, source, four_h))
    return out


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_catches_each_wrong_conversion_in_a_file(tmp_path: Path, fault: str) -> None:
    from safetensors import safe_open

    from ckptsurgeon.rnn.verify import verify

    torch.manual_seed(12)
    H = 5
    module = torch.nn.LSTM(6, H, num_layers=3, bidirectional=True)
    src = _torch_file(tmp_path, module)
    good = tmp_path / "good.safetensors"
    api.extract(str(src), str(good), to="keras")
    assert all(row.ok for row in verify(api.open(src), api.open(good)))
    with safe_open(str(good), "np") as fh:
        metadata = fh.metadata()
    tensors = safetensors_numpy.load_file(str(good))
    state = {f"rnn.{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    bad = tmp_path / "bad.safetensors"
    safetensors_numpy.save_file(_file_fault(fault, tensors, 4 * H, state), str(bad), metadata=metadata)
    rows = verify(api.open(src), api.open(bad))
    assert len(rows) == 1 and not rows[0].ok and rows[0].max_abs_diff > 1e-3, rows
