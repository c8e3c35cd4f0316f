"""Convert and verify a recurrent group one cell at a time, so that a conversion holds about one cell, never the group.

``extract --to`` of a 4-layer bidirectional ``nn.LSTM`` held the whole group several times over: the source
cells, the converted tensors, the converted tensors read back, their float64 copies. Here each output tensor is a
lazy reference (``Lazy``: dtype, shape, loader) that the writer asks for in turn; asking converts the cell (one
layer, one direction) it belongs to, verifies it, and hands its tensors over one by one.

How, without a second implementation of any layout:
- which output tensors belong to which cell, and their shapes, come from the target's own writer run on tiny stand-in
  cells (a tensor whose shape follows one cell's sizes is that cell's; every shape is affine in the cell's input,
  hidden and projection sizes, which three or four tiny runs per cell measure and one more checks);
- a cell's tensors are computed by the same writer on a stack whose other cells are those tiny stand-ins, so they are
  the bytes the whole-group conversion writes;
- a cell is read, on either side, by the layout's own recognizer on an index of that cell's tensors alone, named as a
  one-cell group (``_RULES``); the whole group's facts (activations, forget_bias ...) are then the group's own, and
  the output's are those its self-description states when the whole output is recognized (from shapes only);
- verification runs each side's cells layer by layer on one bounded random batch (each side's own outputs feed its
  next layer) and compares every cell's outputs; the output file is written under a temporary name and is discarded
  when a cell differs, so nothing is written above ``atol``.

A group this cannot stream (a layout without a rule here, approximated activations, ``--gates``, tensors shared by
cells such as ONNX's stacked directions) is converted whole by ``convert_group``, as before.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from ..errors import SelectionError
from ..index import CheckpointIndex, IndexBuilder, TensorRef
from . import keras_layout, tf1_layout
from .cell import Cell, Stack
from .convert import (TARGETS, ConversionError, Converted, ConvertOptions, _wanted_activations, check_target,
                      convert_group, describe_converted, target_semantics)
from .gates import c_order
from .group import RecognizeOptions, RecurrentGroup
from .recognize import recognize
from .reference import run_pair
from .verify import GroupCheck, _why, source_facts

__all__ = ["Lazy", "StreamedGroup", "plan", "stream_index"]


class Lazy(NamedTuple):
    """An output tensor not computed yet: what the writer's header needs, and how to get the bytes."""

    dtype: np.dtype
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]


Key = tuple[int, int]  # (layer, direction)

# The random batch each cell runs on (docs/recurrent.md#verification): 3 steps of 3 sequences. Every gate, weight
# and bias acts from the first step; the recurrent kernel and the forget gate act on a non-zero state from the second,
# twice; every layer's input is the previous layer's output on the same steps. Verification reads each recurrent
# kernel once a step after the first, which bounds what it costs (P11): ``verify``'s 7 steps cost about twice as much.
STEPS, BATCH = 3, 3


# --- one cell of a layout, as a one-cell group ---------------------------------------------------------------------

_TORCH = re.compile(r"^(.*)_l(\d+)(_reverse)?$")
_KERAS_LAYER = re.compile(r"^layer_(\d+)$")
_TF1_CELLS = frozenset(tf1_layout.LSTM_CELLS) | frozenset(tf1_layout.GRU_CELLS)


def _torch_key(group: RecurrentGroup, index: CheckpointIndex, path: str) -> tuple[Key, str] | None:
    parent, _, last = path.rpartition("/")
    if group.layout == "torch-cell":
        return (0, 0), path
    m = _TORCH.match(last)
    if m is None:
        return None
    return (int(m.group(2)), 1 if m.group(3) else 0), f"{parent}/{m.group(1)}_l0" if parent else f"{m.group(1)}_l0"


def _tf1_key(group: RecurrentGroup, index: CheckpointIndex, path: str) -> tuple[Key, str] | None:
    segs = path.split("/")
    at = max((i for i, s in enumerate(segs[:-1]) if s in _TF1_CELLS), default=None)
    if at is None:
        return None
    _, layer, direction, _ = tf1_layout._position(segs, at)
    return (layer, direction), "/".join(segs[at:])  # the cell's own variables: a one-layer, one-direction cell


def _keras_key(group: RecurrentGroup, index: CheckpointIndex, path: str) -> tuple[Key, str] | None:
    single = keras_layout._layer_of(path.rpartition("/")[0])  # the one-direction layer the tensor belongs to
    rel = single[len(group.scope) + 1:] if group.scope else single
    if group.scope and not single.startswith(group.scope + "/") and single != group.scope:
        return None
    layer = 0
    if group.num_layers > 1:
        m = _KERAS_LAYER.match(rel.split("/")[0])
        if m is None:
            return None
        layer = int(m.group(1))
    direction = 1 if group.directions == 2 and keras_layout._direction(index, single) == "backward" else 0
    return (layer, direction), path  # a Keras layer's own names are a one-cell group already


# layout -> (path -> ((layer, direction), the path as a one-cell group of that layout names it))
_RULES: dict[str, Callable[[RecurrentGroup, CheckpointIndex, str], tuple[Key, str] | None]] = {
    "torch": _torch_key, "torch-cell": _torch_key,
    "tf1": _tf1_key, "tf1-gru": _tf1_key,
    "keras": _keras_key, "keras-cudnn": _keras_key,
}
# target -> the layout its output is recognized as
_OUTPUT_LAYOUT = {"torch": "torch", "torch-cell": "torch-cell", "keras": "keras", "tf1": "tf1"}
# facts a layout's load() reads from its group at load time (tf1 folds forget_bias in)
_LOAD_FACTS = ("forget_bias", "proj_size", "peepholes", "reset_after", "bias")


def _cells_of(group: RecurrentGroup, index: CheckpointIndex, members: list[str]) -> dict[Key, dict[str, str]] | None:
    """(layer, direction) -> {member path: its name in a one-cell index}, when every member has its place."""
    rule = _RULES.get(group.layout)
    if rule is None:
        return None
    out: dict[Key, dict[str, str]] = {}
    for path in members:
        found = rule(group, index, path)
        if found is None:
            return None
        out.setdefault(found[0], {})[path] = found[1]
    want = {(k, d) for k in range(group.num_layers) for d in range(group.directions)}
    return out if set(out) == want else None


def _one_cell(group: RecurrentGroup, index: CheckpointIndex, names: dict[str, str], n_in: int,
              arrays: dict[str, np.ndarray] | None = None) -> Cell:
    """The cell whose tensors are ``names`` (path -> one-cell name), read by its layout's recognizer, with ``group``'s
    facts. ``arrays``: the tensors in memory (an output's), else they are read from ``index``."""
    builder = IndexBuilder(index.files[0])
    for path, name in names.items():
        if arrays is not None:
            arr = arrays[path]
            builder.add(TensorRef(name, name, arr.dtype, tuple(arr.shape), index.files[0], loader=_holding(arr)))
        else:
            builder.add(index[path].with_path(name, name))
    sub = CheckpointIndex(builder.refs, format=index.format, files=index.files, metadata=index.metadata, key_sep="/")
    found = recognize(sub, RecognizeOptions())
    if len(found) != 1 or set(found[0].members) != set(sub) or found[0].layout != group.layout or \
            (found[0].num_layers, found[0].directions) != (1, 1) or \
            (found[0].kind, found[0].hidden_size, found[0].proj_size) != (group.kind, group.hidden_size, group.proj_size):
        raise _Unstreamable(f"{', '.join(names)} do not read as one {group.variant} cell")
    one = found[0]
    for fact in _LOAD_FACTS:
        setattr(one, fact, getattr(group, fact))
    return replace(group, num_layers=1, directions=1, input_size=n_in, topology="interleaved", go_backwards=False,
                   load=one.load).cells()[0][0]


def _holding(arr: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: arr


class _Unstreamable(Exception):
    """This group converts whole (the reason is for debugging; the user sees the whole-group path)."""


# --- the target's writer on stand-in cells -------------------------------------------------------------------------

def _stand_in(group: RecurrentGroup, dtype: np.dtype, n: int, h: int, p: int) -> Cell:
    """A cell of ``group``'s structure with input ``n``, hidden ``h``, projection ``p`` (0: none)."""
    G = 4 if group.kind == "lstm" else 3
    def one(*shape: int) -> np.ndarray:
        return np.ones(shape, dtype)

    has_bias = group.bias != "none"
    return Cell(group.kind, one(G * h, n), one(G * h, p or h), one(G * h) if has_bias else None,
                one(G * h) if has_bias else None, reset_after=group.reset_after if group.kind == "gru" else True,
                peepholes=one(3, h) if group.peepholes else None, w_hr=one(p, h) if p else None)


class _Writer:
    """The target's writer on a stack of stand-in cells, with one cell replaced."""

    def __init__(self, group: RecurrentGroup, sem: RecurrentGroup, target: str, options: ConvertOptions,
                 dtype: np.dtype) -> None:
        self.group, self.sem, self.options = group, sem, options
        self.write = TARGETS[target].write
        self.base = _stand_in(group, dtype, 1, 1, 1 if group.proj_size else 0)
        self.dtype = dtype

    def __call__(self, key: Key | None = None, cell: Cell | None = None) -> dict[str, Any]:
        g = self.group
        layers = [[self.base] * g.directions for _ in range(g.num_layers)]
        if key is not None and cell is not None:
            layers[key[0]] = list(layers[key[0]])
            layers[key[0]][key[1]] = cell
        return self.write(Stack(layers, g.topology, g.go_backwards), self.sem, self.options)

    def sized(self, key: Key, n: int, h: int, p: int) -> dict[str, tuple[int, ...]]:
        return {name: tuple(np.shape(a)) for name, a in self(key, _stand_in(self.group, self.dtype, n, h, p)).items()}


def _layout_plan(writer: _Writer, group: RecurrentGroup, sizes: dict[Key, tuple[int, int, int]]
                 ) -> tuple[list[str], dict[str, Key], dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    """The output's names in order, the cell each belongs to, its shape for the real sizes, its dtype."""
    base_out = writer()
    order = list(base_out)
    base = {n: tuple(np.shape(a)) for n, a in base_out.items()}
    dtypes = {n: np.asarray(a).dtype for n, a in base_out.items()}
    owner: dict[str, Key] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    has_p = bool(group.proj_size)
    points = [(1, 1, 1), (2, 1, 1), (1, 2, 1)] + ([(1, 1, 2)] if has_p else [])
    for key, (n, h, p) in sizes.items():
        runs = [writer.sized(key, a, b, c if has_p else 0) for a, b, c in points]
        if any(list(r) != order for r in runs):
            raise _Unstreamable("the writer names tensors by size")
        mine = [name for name in order if any(r[name] != base[name] for r in runs[1:])]
        for name in mine:
            if name in owner:
                raise _Unstreamable(f"{name} holds more than one cell")
            owner[name] = key
            b0 = np.array(runs[0][name])
            slopes = [np.array(r[name]) - b0 if len(r[name]) == len(b0) else None for r in runs[1:]]
            if any(s is None for s in slopes):
                raise _Unstreamable(f"{name}: its rank follows the sizes")
            coef = list(slopes) + ([np.zeros_like(b0)] if not has_p else [])
            def at(a: int, b: int, c: int, b0=b0, coef=coef) -> tuple[int, ...]:
                return tuple(int(v) for v in b0 + (a - 1) * coef[0] + (b - 1) * coef[1] + (c - 1) * coef[2])
            check = writer.sized(key, 3, 5, 4 if has_p else 0)[name]
            if check != at(3, 5, 4 if has_p else 1):
                raise _Unstreamable(f"{name}: its shape is not affine in the cell's sizes")
            shapes[name] = at(n, h, p if has_p else 1)
    if set(owner) != set(order):
        raise _Unstreamable("a tensor that belongs to no cell")
    return order, owner, shapes, dtypes


# --- one group, streamed ---------------------------------------------------------------------------------------------

@dataclass
class _Side:
    """One side of the verification: what feeds each layer, and each cell's outputs on the random batch."""

    x: np.ndarray
    outs: dict[Key, np.ndarray]

    def input(self, stack_topology: str, key: Key, directions: int, go_backwards: bool) -> np.ndarray:
        k, d = key
        if k == 0:
            return self.x
        if go_backwards or (stack_topology == "independent" and directions == 2):
            return self.outs[(k - 1, d)]
        return np.concatenate([self.outs[(k - 1, e)] for e in range(directions)], axis=-1)


class StreamedGroup:
    """A group converted on demand, cell by cell; ``check`` is filled when every cell has been verified."""

    def __init__(self, group: RecurrentGroup, index: CheckpointIndex, target: str, options: ConvertOptions,
                 atol: float | None, seed: int) -> None:
        self.group, self.index, self.target, self.options, self.atol = group, index, target, options, atol
        if _wanted_activations(group, target, None) is not None or (target == "gates" and options.gates) \
                or group.write_back is not None or target not in _OUTPUT_LAYOUT:
            raise _Unstreamable("approximated activations, --gates, a graph-fed group or a target without a rule")
        check_target(group, target, allow_approx=options.allow_approx, allow_concat_merge=options.allow_concat_merge)
        dtypes = {index[m].dtype for m in group.members}
        if len(dtypes) != 1:
            raise _Unstreamable("members of several dtypes")
        sources = _cells_of(group, index, group.members)
        if sources is None:
            raise _Unstreamable(f"no rule places every tensor of a {group.layout} group in its cell")
        self.sources = sources
        self.sem = target_semantics(group, target, None, group.recurrent_activation, group.activation)
        metadata, notes = describe_converted(group, self.sem, target, options, None, [])
        P = group.proj_size or group.hidden_size
        self.n_in = {(k, d): group.input_size if k == 0 else P * (1 if group.topology == "independent" else group.directions)
                     for k in range(group.num_layers) for d in range(group.directions)}
        if group.go_backwards and group.directions != 1:
            raise _Unstreamable("go_backwards on two directions")
        self.writer = _Writer(group, self.sem, target, options, dtypes.pop())
        sizes = {key: (n, group.hidden_size, group.proj_size) for key, n in self.n_in.items()}
        self.order, self.owner, self.shapes, self.dtypes = _layout_plan(self.writer, group, sizes)
        self.names = {key: [n for n in self.order if self.owner[n] == key] for key in self.n_in}
        scope = group.scope
        self.full = {rel: (f"{scope}/{rel}" if scope else rel) for rel in self.order}
        self.converted = Converted(group, target, {}, metadata, notes)
        self.back = self._output_group() if atol is not None else None
        self.outputs = {key: self._output_cells(key) for key in self.n_in} if atol is not None else {}
        self.cache: dict[str, np.ndarray] = {}
        self.verified: set[Key] = set()
        self.worst = 0.0
        self.check: dict[str, Any] = {}  # the GroupCheck row, filled when the last cell is verified
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((STEPS, BATCH, group.input_size))
        self.sides = (_Side(x, {}), _Side(x, {}))
        self.workspace: dict[str, np.ndarray] = {}  # the reference cells' float64 buffers, reused cell after cell

    # what verification reads of the output: the whole output's facts (from names, shapes and its self-description)
    def _output_group(self) -> RecurrentGroup:
        def unread() -> np.ndarray:
            raise _Unstreamable("recognizing the output read a tensor")

        builder = IndexBuilder(f"<{self.target} output>")
        for rel in self.order:
            builder.add(TensorRef(self.full[rel], rel, self.dtypes[rel], self.shapes[rel], f"<{self.target} output>",
                                  loader=unread))
        out = CheckpointIndex(builder.refs, format=self.target, files=[f"<{self.target} output>"], key_sep="/",
                              metadata={"__metadata__": self.converted.stated()})
        groups = [g for g in recognize(out) if g.scope == self.group.scope]
        sig = lambda g: (g.kind, g.input_size, g.hidden_size, g.num_layers, g.directions, g.proj_size)  # noqa: E731
        if len(groups) != 1 or sig(groups[0]) != sig(self.group) or groups[0].unsettled() \
                or groups[0].layout != _OUTPUT_LAYOUT[self.target]:
            raise _Unstreamable("the output does not read back as the group")  # the whole path says why
        return groups[0]

    def _output_cells(self, key: Key) -> dict[str, str]:
        assert self.back is not None
        paths = [self.full[rel] for rel in self.names[key]]
        rule = _RULES[self.back.layout]
        out: dict[str, str] = {}
        for path in paths:
            found = rule(self.back, _NamesOnly(), path)
            if found is None or found[0] != key:
                raise _Unstreamable(f"{path} is not where the output's layout puts cell {key}")
            out[path] = found[1]
        return out

    # --- conversion -----------------------------------------------------------------------------------------------
    def _source(self, key: Key) -> Cell:
        cell = _one_cell(self.group, self.index, self.sources[key], self.n_in[key])
        if self.target in ("torch", "torch-cell"):
            # torch's tensors are the canonical matrices themselves: make the C-order copy its writer needs once,
            # here, so that the output read back holds these very arrays and both sides run as one batch
            cell = cell.with_(w_ih=c_order(cell.w_ih), w_hh=c_order(cell.w_hh))
        return cell

    def _convert(self, key: Key, cell: Cell) -> dict[str, np.ndarray]:
        written = self.writer(key, cell)
        # C order once, here: the writer and the read-back would each copy a strided view (tf1's w[:, :n_in])
        out = {rel: c_order(np.asarray(written[rel])) for rel in self.names[key]}
        del written
        for rel, arr in out.items():
            if arr.dtype != self.dtypes[rel] or tuple(arr.shape) != self.shapes[rel]:
                raise ConversionError(f"internal error: {self.full[rel]} converted as {arr.dtype} {list(arr.shape)}, "
                                      f"planned {self.dtypes[rel]} {list(self.shapes[rel])}")
        return out

    def _verify(self, key: Key, cell: Cell, out: dict[str, np.ndarray]) -> None:
        """Run the source cell and the converted one, read back, on each side's input; compare their outputs."""
        assert self.back is not None and self.atol is not None
        g = self.group
        arrays = {self.full[rel]: a for rel, a in out.items()}
        back = _one_cell(self.back, _NamesOnly(), self.outputs[key], self.n_in[key], arrays)
        xa, xb = (side.input(g.topology, key, g.directions, g.go_backwards) for side in self.sides)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # weights of 1e38 or inf: as run_stack
            pair = run_pair(cell, xa, back, xb, reverse=key[1] == 1 or g.go_backwards, workspace=self.workspace)
        ys = []
        for side, y in zip(self.sides, pair):
            side.outs[key] = y[::-1] if g.go_backwards else y
            ys.append(side.outs[key])
        for side in self.sides:  # a layer's inputs are no longer needed once the next layer has run
            for old in [k for k in side.outs if k[0] < key[0] - 1]:
                del side.outs[old]
        diff = float(np.max(np.abs(ys[0] - ys[1]))) if ys[0].shape == ys[1].shape else float("inf")
        self.worst = max(self.worst, diff) if not np.isnan(diff) else float("nan")
        self.verified.add(key)
        if len(self.verified) == len(self.n_in):
            self.workspace.clear()
            ok = bool(self.worst <= self.atol)
            self.check.update(GroupCheck(g.scope, self.back.scope, g.kind, self.worst, ok, self.atol, source_facts(g),
                                         "" if ok else _why(g, self.back)).as_dict())
            if not ok:
                raise SelectionError(_differ(self.index, g.scope, self.worst, self.atol, self.dtypes.values()))

    def _cell(self, key: Key) -> None:
        """Convert (and verify, in order, with every cell before it) the cell ``key``; its tensors wait in the cache."""
        todo = [key]
        if self.atol is not None:
            todo = [k for k in sorted(self.n_in) if k <= key and k not in self.verified] or [key]
        for k in todo:
            cell = self._source(k)
            out = self._convert(k, cell)
            if self.atol is not None and k not in self.verified:
                self._verify(k, cell, out)
            del cell
            if k == key:
                self.cache.update(out)

    def tensor(self, rel: str) -> np.ndarray:
        """The converted tensor ``rel`` (a name relative to the group), handed over once from the cache."""
        if rel not in self.cache:
            self._cell(self.owner[rel])
        return self.cache.pop(rel)

    def finish(self) -> None:
        """Verify the cells no writer asked for (none, when every tensor was written)."""
        if self.atol is None:
            return
        for key in sorted(self.n_in):
            if key not in self.verified:
                self._cell(key)
                for rel in self.names[key]:
                    self.cache.pop(rel, None)

    def rows(self) -> Iterator[tuple[str, str, Lazy]]:
        for rel in self.order:
            yield self.full[rel], rel, Lazy(self.dtypes[rel], self.shapes[rel], partial(self.tensor, rel))


class _NamesOnly(CheckpointIndex):
    """An output's stand-in index for the layout rules: they read names, and Keras's the config metadata (none)."""

    def __init__(self) -> None:
        super().__init__([], format="memory", files=["<output>"], key_sep="/")


def plan(group: RecurrentGroup, index: CheckpointIndex, target: str, options: ConvertOptions,
         atol: float | None, seed: int = 0) -> StreamedGroup | None:
    """``group`` converted cell by cell, or None when it converts whole (see the module's docstring)."""
    try:
        return StreamedGroup(group, index, target, options, atol, seed)
    except _Unstreamable:
        return None


def stream_index(index: CheckpointIndex, target: str, options: ConvertOptions, atol: float | None, *,
                 stream: bool = True) -> tuple[list[tuple[str, str, object]], list[Converted], list[dict[str, Any]]]:
    """``convert_index`` with every group that can stream streamed: rows (path, key, a TensorRef passed through, an
    array, or a ``Lazy`` converted tensor), the conversions, and their check rows in group order (``atol`` None: no
    check). A whole group is verified here; a streamed group's row is filled as the writer reads its last cell, and
    ``Converted.stream.finish()`` verifies what no writer read."""
    from .convert import convert_index
    from .verify import verify_converted

    def convert(group: RecurrentGroup, i: int) -> Converted:
        s = plan(group, index, target, options, atol, seed=i) if stream else None
        if s is None:
            return convert_group(group, target, options)
        c = replace(s.converted, stream=s)
        c.tensors = {rel: lazy for _, rel, lazy in s.rows()}  # type: ignore[misc]
        return c

    rows, done = convert_index(index, target, options, convert=convert)
    checks: list[dict[str, Any]] = []
    for i, c in enumerate(done if atol is not None else ()):
        if c.stream is not None:
            checks.append(c.stream.check)
            continue
        assert atol is not None
        found = verify_converted(c, atol=atol, seed=i)
        checks.append(found.as_dict())
        if not found.ok:
            raise SelectionError(_differ(index, found.source, found.max_abs_diff, atol,
                                         [np.asarray(v).dtype for v in c.tensors.values()]))
    return rows, done, checks


def _differ(index: CheckpointIndex, scope: str, worst: float, atol: float, dtypes: Iterable[Any]) -> str:
    """The one-line refusal of a conversion whose check failed: the file, the group, by how much, and why."""
    where = f"{index.files[0]}: {scope or '/'}" if index.files else scope or "/"
    if worst != worst:  # NaN: the source's own outputs are not finite
        return (f"{where}: its weights are not finite (inf or NaN), so its outputs are NaN and the conversion cannot be "
                "checked against them; nothing written (pass --no-verify to convert the values as stored)")
    return f"{where}: converted outputs differ by {worst:.3g} (> {atol:g}); nothing written{_half_hint(dtypes)}"


def _half_hint(dtypes: Iterable[Any]) -> str:
    """Why a float16/bfloat16 conversion can differ by more than atol, and the way out."""
    if not any(np.dtype(d).name in ("float16", "bfloat16") for d in dtypes):
        return ""
    return ("; in float16/bfloat16 a layout that adds the two biases into one (keras, flax, tf1, paddle's cells do "
            "not) stores their sum rounded to that precision: raise --atol (1e-3) to accept the rounding, or use "
            "--to torch or gates, which keep both biases")
