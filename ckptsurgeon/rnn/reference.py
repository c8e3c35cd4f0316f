"""Reference recurrent cells in numpy (float64), on the canonical layout.

They define what "the same numbers" means for ``verify``; tests check them against real
``torch.nn.LSTM/GRU``, Keras layers, ONNX runtimes and TensorFlow's recorded outputs. Everything a
``Stack`` states is honoured: activations by exact formula, GRU family, peepholes, projection, TF1 clips
(``cell_clip`` on the state, ``proj_clip`` on the projected output), topology (interleaved or independent
directions), ``go_backwards``, and the ONNX node attributes ``clip`` (applied to every gate's
pre-activation, peephole terms included, not to the cell state before the output activation: what
onnxruntime computes) and ``input_forget`` (f = 1 - i). A semantic that is not known (``None``) is
refused, never defaulted.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import CheckpointError
from .activations import activation
from .cell import Cell, Stack

__all__ = ["run_cell", "run_pair", "run_stack", "one_blas_thread"]


def _fn(name: str | None, what: str):
    if name is None:
        raise CheckpointError(f"the {what} is not known; the reference cells cannot run it")
    try:
        return activation(name).fn
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None


def _f64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within this block OpenBLAS (numpy's) computes on one thread. The reference cells multiply a small batch by
    each weight: BLAS threads gain nothing on that and spin, which on a loaded machine costs several times the
    work itself (measured: 2 s of CPU became 13 s). No effect where numpy's BLAS is another library."""
    lib = _openblas()
    if lib is None:
        yield
        return
    get, set_ = lib
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)


_BLAS: list[tuple[Callable[[], int], Callable[[int], None]] | None] = []
_BLAS_NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
               ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
               ("openblas_get_num_threads", "openblas_set_num_threads"))


def _openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the loaded OpenBLAS's thread count, found once among the libraries mapped in this process."""
    if not _BLAS:
        found = None
        try:
            with open("/proc/self/maps") as fh:
                paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line}
            for path in sorted(paths):
                lib = ctypes.CDLL(path)
                for get, set_ in _BLAS_NAMES:
                    if hasattr(lib, get) and hasattr(lib, set_):
                        found = (getattr(lib, get), getattr(lib, set_))
                        break
                if found:
                    break
        except OSError:
            found = None
        _BLAS.append(found)
    return _BLAS[0]


_ROWS = 1 << 18  # float64 elements of a weight converted at a time (2 MiB)
_BLOCK = 1 << 16  # ... of a C-order weight's rows (512 KiB: the block stays in cache for its product; 1.5x faster)


def _times_t(x: np.ndarray, w: np.ndarray, workspace: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """``x @ w.T`` in float64, ``w`` converted a block at a time into one reused buffer (``workspace``'s): the input
    projection of every step in one pass over the weight, a step's recurrent product in one more, and never a float64
    copy of the whole weight beside it."""
    if w.dtype == np.float64 or w.size <= _ROWS:
        return x @ np.asarray(w, np.float64).T
    flat = _buffer(workspace, "block", _ROWS)
    if w.flags.f_contiguous and not w.flags.c_contiguous:  # a transposed layout's read-back: blocks of its rows
        cols = max(1, _ROWS // max(1, w.shape[0]))
        out = np.zeros((x.shape[0], w.shape[0]))
        for c in range(0, w.shape[1], cols):
            part = w.T[c:c + cols]
            block = flat[:part.size].reshape(part.shape)
            np.copyto(block, part)
            out += x[:, c:c + cols] @ block
        return out
    rows = max(1, _BLOCK // max(1, w.shape[1]))
    out = np.empty((x.shape[0], w.shape[0]))
    for r in range(0, w.shape[0], rows):
        part = w[r:r + rows]
        block = flat[:part.size].reshape(part.shape)
        np.copyto(block, part)
        np.matmul(x, block.T, out=out[:, r:r + rows])
    return out


def _buffer(workspace: dict[str, np.ndarray] | None, name: str, size: int) -> np.ndarray:
    """A float64 buffer of at least ``size`` elements, kept in ``workspace`` from call to call."""
    flat = None if workspace is None else workspace.get(name)
    if flat is None or flat.size < size:
        flat = np.empty(size)
        if workspace is not None:
            workspace[name] = flat
    return flat


def run_cell(cell: Cell, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None,
             reverse: bool = False, *, workspace: dict[str, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run over ``x`` (T, B, in); returns outputs (T, B, H or P), final h, final c (LSTM).

    ``workspace``: a dict kept across calls for the float64 buffers (the block of a weight being multiplied, a GRU's
    recurrent kernel): cells run one after another reuse them instead of faulting in new ones each."""
    with one_blas_thread():
        return _run_cell(cell, x, h0, c0, reverse, workspace)


def _in(workspace: dict[str, np.ndarray] | None, name: str, a: np.ndarray) -> np.ndarray:
    if workspace is None:
        return np.asarray(a, dtype=np.float64)
    flat = _buffer(workspace, name, a.size)
    order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"  # copied in the array's own order
    buf = flat[:a.size].reshape(a.shape, order=order)
    np.copyto(buf, a)
    return buf


def _run_cell(cell: Cell, x: np.ndarray, h0: np.ndarray | None, c0: np.ndarray | None, reverse: bool,
              workspace: dict[str, np.ndarray] | None, zero_start: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    sig, act = _fn(cell.recurrent_activation, "recurrent_activation"), _fn(cell.activation, "activation")
    if cell.kind == "gru" and cell.reset_after is None:
        raise CheckpointError("the GRU family (reset_after) is not known; the reference cells cannot run it")
    # an LSTM's recurrent kernel is multiplied as its input kernel is, a block at a time (half the bytes read a step
    # of a float32 kernel, no float64 copy); a GRU's gates are split from one float64 copy
    w_hh = _in(workspace, "w_hh", cell.w_hh) if cell.kind == "gru" else cell.w_hh
    b_ih, b_hh = (_f64(b) for b in cell.biases())
    H, T, B = cell.hidden, x.shape[0], x.shape[1]
    x2 = np.asarray(x, np.float64).reshape(T * B, x.shape[2])
    gx_all = _times_t(x2, cell.w_ih, workspace).reshape(T, B, cell.w_ih.shape[0]) + b_ih  # b_ih: (G*H,) or one row a sequence
    out_size = cell.proj or H
    h = np.zeros((B, out_size)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
    peep, w_hr = _f64(cell.peepholes), _f64(cell.w_hr)
    bound = None if cell.clip is None else float(cell.clip)
    cl = (lambda v: v) if bound is None else (lambda v: np.clip(v, -bound, bound))  # noqa: E731
    outs = np.zeros((T, B, out_size))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    # An LSTM started from h = 0: the first step's h @ w_hh.T is 0 where w_hh is finite, which the second step's
    # product shows (a sum with an inf or nan term is not finite); one that is not finite runs every step again.
    skip = zero_start and cell.kind == "lstm" and h0 is None and T > 1
    for n, t in enumerate(steps):
        gx = gx_all[t]
        if cell.kind == "lstm":
            if skip and n == 0:
                gh = b_hh
            else:
                hw = _times_t(h, w_hh, workspace)
                if skip and n == 1 and not np.isfinite(hw).all():
                    return _run_cell(cell, x, h0, c0, reverse, workspace, zero_start=False)
                gh = hw + b_hh
            pi, pf, pg, po = np.split(gx + gh, 4, axis=1)
            if peep is not None:
                pi, pf = pi + peep[0] * c, pf + peep[1] * c
            i = sig(cl(pi))
            f = 1.0 - i if cell.input_forget else sig(cl(pf))
            c = f * c + i * act(cl(pg))
            if cell.cell_clip is not None:  # TF1 LSTMCell cell_clip: the state itself, before the output gate
                c = np.clip(c, -cell.cell_clip, cell.cell_clip)
            if peep is not None:
                po = po + peep[2] * c
            h = sig(cl(po)) * act(c)
            if w_hr is not None:
                h = h @ w_hr.T
                if cell.proj_clip is not None:
                    h = np.clip(h, -cell.proj_clip, cell.proj_clip)
        else:
            xr, xz, xn = np.split(gx, 3, axis=1)
            ur, uz, un = np.split(w_hh, 3, axis=0)
            br, bz, bn = np.split(b_hh, 3, axis=-1)
            r = sig(cl(xr + h @ ur.T + br))
            z = sig(cl(xz + h @ uz.T + bz))
            if cell.reset_after:
                n = act(cl(xn + r * (h @ un.T + bn)))
            else:
                n = act(cl(xn + (r * h) @ un.T + bn))
            h = (1.0 - z) * n + z * h
        outs[t] = h
    return outs, h, (c if cell.kind == "lstm" else None)


_SAME = ("kind", "reset_after", "recurrent_activation", "activation", "clip", "input_forget", "cell_clip", "proj_clip")


def run_pair(a: Cell, xa: np.ndarray, b: Cell, xb: np.ndarray, *, reverse: bool = False,
             workspace: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The outputs of two cells, each on its own input. Cells that differ only in their biases (an exact conversion
    read back: the same matrices, with a bias summed or a forget_bias folded in) run as one batch, each sequence with
    its own cell's biases: one pass over the matrices a step serves both, and each row is computed as alone."""
    if not _shareable(a, b) or xa.shape != xb.shape:
        return (run_cell(a, xa, reverse=reverse, workspace=workspace)[0],
                run_cell(b, xb, reverse=reverse, workspace=workspace)[0])
    B = xa.shape[1]

    def rows(c: Cell) -> tuple[np.ndarray, np.ndarray]:
        return tuple(np.broadcast_to(np.asarray(v, np.float64), (B, v.shape[0])) for v in c.biases())  # type: ignore[return-value]

    (ia, ha), (ib, hb) = rows(a), rows(b)
    both = a.with_(b_ih=np.concatenate([ia, ib]), b_hh=np.concatenate([ha, hb]))
    y = run_cell(both, np.concatenate([xa, xb], axis=1), reverse=reverse, workspace=workspace)[0]
    return y[:, :B], y[:, B:]


def _shareable(a: Cell, b: Cell) -> bool:
    if any(getattr(a, f) != getattr(b, f) for f in _SAME):
        return False
    if any(getattr(a, n).flags.c_contiguous != getattr(b, n).flags.c_contiguous for n in ("w_ih", "w_hh")):
        return False  # one is the other's layout transposed (Keras's, TF1's kernels read back): comparing them, even
        # in cache-sized tiles, costs what running the second cell does (measured: 30 ms a 33.5 MB matrix)
    for name in ("w_ih", "w_hh", "peepholes", "w_hr"):
        u, v = getattr(a, name), getattr(b, name)
        if (u is None) != (v is None):
            return False
        if u is not None and not _same_bits(u, v):
            return False
    return True


def _same_bits(u: np.ndarray, v: np.ndarray) -> bool:
    """Bit for bit the same array, compared a block of rows at a time (no whole-size temporary; stops at a difference)."""
    if u.shape != v.shape or u.dtype != v.dtype:
        return False
    if u.__array_interface__["data"][0] == v.__array_interface__["data"][0] and u.strides == v.strides:
        return True  # the very same memory
    if u.ndim == 0 or u.dtype.itemsize not in (1, 2, 4, 8):
        return bool(np.array_equal(u, v))
    if u.ndim == 2 and not u.flags.c_contiguous and v.flags.f_contiguous:
        u, v = u.T, v.T  # both in Fortran order: compare their rows in memory order
    kind = np.dtype(f"u{u.dtype.itemsize}")
    iu, iv = u.view(kind), v.view(kind)
    step = max(1, _ROWS // max(1, u[0].size))
    return all(np.array_equal(iu[r:r + step], iv[r:r + step]) for r in range(0, u.shape[0], step))


def run_stack(stack: Stack | list[list[Cell]], x: np.ndarray) -> np.ndarray:
    """Outputs (T, B, D*H) of a stack over ``x`` (T, B, in); directions concatenated, reverse aligned to x.

    interleaved: each layer's directions concatenated feed the next layer. independent: each
    direction runs its own stack and the tops are concatenated. go_backwards: the one direction runs
    from the last step and its outputs come back in that order (Keras).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # weights of 1e38 or inf: the limits, no warnings
        return _run_stack(stack, x)


def _run_stack(stack: Stack | list[list[Cell]], x: np.ndarray) -> np.ndarray:
    if not isinstance(stack, Stack):
        stack = Stack(list(stack))
    if stack.go_backwards:
        if len(stack[0]) != 1:
            raise CheckpointError("go_backwards on a bidirectional stack has no reference semantics here")
        for layer in stack:
            x = run_cell(layer[0], x, reverse=True)[0][::-1]
        return x
    if stack.topology == "independent" and len(stack[0]) == 2:
        tops = []
        for d in range(2):
            y = x
            for layer in stack:
                y = run_cell(layer[d], y, reverse=d == 1)[0]
            tops.append(y)
        return np.concatenate(tops, axis=-1)
    for layer in stack:
        outs = [run_cell(cell, x, reverse=d == 1)[0] for d, cell in enumerate(layer)]
        x = np.concatenate(outs, axis=-1)
    return x
