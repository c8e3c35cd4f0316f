"""TensorFlow 1 ``rnn_cell`` variables: LSTMCell / BasicLSTMCell / LSTMBlockCell (peepholes, num_proj),
GRUCell, CudnnCompatible cells, TF 1.0/1.1 ``weights``/``biases`` and TF 0.x ``Linear/Matrix`` names.

LSTM: one kernel ``(in + H_or_P, 4H)`` on ``concat([x, h])``, gate order i, j, f, o, one bias, and
``forget_bias`` (default 1.0, CudnnCompatible 0) added to f at run time. GRUCell: ``gates/kernel
(in + H, 2H)`` = [r, u] and ``candidate/kernel (in + H, H)``: the reset-before family.

Structure, and the two ways TF1 stacks bidirectional layers:
- ``rnn/[multi_rnn_cell/cell_k/]<cell>``: one direction, k layers;
- ``bidirectional_rnn/{fw,bw}/<cell>`` (or ``<scope>/{fw,bw}/<cell>`` with ``scope=``): one bidirectional layer;
- ``bidirectional_rnn/{fw,bw}/multi_rnn_cell/cell_k/<cell>`` (``bidirectional_dynamic_rnn`` over two
  ``MultiRNNCell``): two **independent** stacks; layer k of fw reads layer k-1 of fw only (input H);
- ``stack_bidirectional_rnn/cell_k/bidirectional_rnn/{fw,bw}/<cell>`` (``stack_bidirectional_dynamic_rnn``):
  **interleaved**, layer k reads both directions of layer k-1 (input 2H), as PyTorch does.
"""
from __future__ import annotations

import os

import re
from collections import defaultdict

import numpy as np

from ..errors import FormatError
from ..formats.tensorflow.graph_def import load_graph
from ..index import CheckpointIndex
from .cell import Cell, Stack
from .gates import ORDERS, reorder, transposed
from .facts import stated_scopes
from .group import FACT_FLAGS, RecognizeOptions, RecurrentGroup, origin
from .tf1_graph import DISAGREE, UNSEEN, gru_facts, lstm_facts, shared_layers

__all__ = ["recognize", "write", "DEFAULT_FORGET_BIAS"]

# cell scope name -> run-time forget_bias of that cell class (None: not stored, the class default applies)
LSTM_CELLS = {
    "lstm_cell": None,  # tf.compat.v1.nn.rnn_cell.LSTMCell, LSTMBlockCell
    "basic_lstm_cell": None,  # BasicLSTMCell
    "lstm_fused_cell": None,  # LSTMBlockFusedCell
    "cudnn_compatible_lstm_cell": 0.0,  # CudnnCompatibleLSTMCell: no run-time forget bias
    "BasicLSTMCell": None,  # TF 0.x
    "LSTMCell": None,  # TF 0.x
}
DEFAULT_FORGET_BIAS = 1.0  # LSTMCell, BasicLSTMCell, LSTMBlockCell, LSTMBlockFusedCell constructors
# cell scope name -> the classes that write it (for provenance)
_CLASSES = {"lstm_cell": "TF1 LSTMCell (or LSTMBlockCell)", "basic_lstm_cell": "TF1 BasicLSTMCell",
            "lstm_fused_cell": "TF1 LSTMBlockFusedCell", "cudnn_compatible_lstm_cell": "TF1 CudnnCompatibleLSTMCell",
            "BasicLSTMCell": "TF 0.x BasicLSTMCell", "LSTMCell": "TF 0.x LSTMCell"}
_FORGET_BIAS_DEFAULT = {
    None: "version default: {cls} forget_bias={fb:.1f} (the constructor argument is not stored; pass --forget-bias F "
          "if the cell was built with another)",
    # TF 1.4-1.5's CudnnCompatibleLSTMCell subclassed LSTMCell (forget_bias=0) and wrote the same lstm_cell names.
    "lstm_cell": "version default: {cls} forget_bias={fb:.1f} (the constructor argument is not stored; pass "
                 "--forget-bias F if the cell was built with another, --forget-bias 0 for a TF 1.4-1.5 "
                 "CudnnCompatibleLSTMCell, which wrote the same lstm_cell names without a forget bias)",
}
# cell scope name -> the class whose cell_clip (not stored) applies; the others cannot clip
_CLIPPED = {"lstm_cell": "TF1 LSTMCell/LSTMBlockCell", "lstm_fused_cell": "TF1 LSTMBlockFusedCell",
            "LSTMCell": "TF 0.x LSTMCell"}
GRU_CELLS = ("gru_cell", "GRUCell", "cudnn_compatible_gru_cell")

# (kernel, bias, projection) variable names inside an LSTM cell scope, newest first.
LSTM_VARS = (
    ("kernel", "bias", "projection/kernel"),  # TF >= 1.2
    ("weights", "biases", "projection/weights"),  # TF 1.0 / 1.1
    ("Linear/Matrix", "Linear/Bias", "Projection/Linear/Matrix"),  # TF 0.x
    ("W_0", "B", "W_P_0"),  # TF 0.x LSTMCell
)
GRU_VARS = (
    ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"),  # TF >= 1.2
    ("gates/weights", "gates/biases", "candidate/weights", "candidate/biases"),  # TF 1.0 / 1.1
    ("Gates/Linear/Matrix", "Gates/Linear/Bias", "Candidate/Linear/Matrix", "Candidate/Linear/Bias"),  # TF 0.x
)
_MULTI = ("multi_rnn_cell", "MultiRNNCell")
_BIDI = ("bidirectional_rnn", "BiRNN")
_LAYER = re.compile(r"^(?:cell_|Cell)(\d+)$")


def _position(segs: list[str], cell_at: int) -> tuple[str, int, int, str | None]:
    """(group scope, layer, direction, topology hint) from the structural segments above a cell scope."""
    layer, direction, keep, topology = 0, 0, [], None
    seen_direction = False
    head = segs[:cell_at]
    for i, seg in enumerate(head):
        m = _LAYER.match(seg)
        if seg in ("fw", "bw") and i > 0 and (head[i - 1] in _BIDI or i == len(head) - 1 or head[i + 1] in _MULTI):
            # bidirectional_dynamic_rnn names its halves <scope>/fw, <scope>/bw (scope: bidirectional_rnn by default)
            direction, seen_direction = (1 if seg == "bw" else 0), True
        elif m and i > 0 and head[i - 1] in _MULTI:
            layer = int(m.group(1))
            if seen_direction:
                topology = "independent"  # bidirectional_dynamic_rnn over MultiRNNCells
        elif m and i + 1 < len(head) and head[i + 1] in _BIDI:
            layer, topology = int(m.group(1)), "interleaved"  # stack_bidirectional_dynamic_rnn's cell_k
            if keep and keep[-1] == "stack_bidirectional_rnn":
                keep.pop()
        elif seg not in _MULTI and not (seg in _BIDI and topology == "interleaved"):
            keep.append(seg)
    if keep and keep[-1] in ("rnn", "RNN") + _BIDI and topology != "interleaved":
        keep.pop()  # the scope dynamic_rnn / bidirectional_dynamic_rnn add; the writer adds it back
    return "/".join(keep), layer, direction, topology


def _placed(segs: list[str], cell_at: int, stated: tuple[str, ...]) -> tuple[str, int, int, str | None]:
    """``_position``, except that a scope the file's ``rnn:<scope>`` metadata states is taken whole: a group a user
    named ``cell_0`` (what stack_bidirectional_dynamic_rnn calls its layers) is not read as layer 0 of its parent."""
    path = "/".join(segs)
    scope = next((s for s in stated if path.startswith(s + "/") and len(s.split("/")) <= cell_at), None)
    if scope is None:
        return _position(segs, cell_at)
    n = len(scope.split("/"))
    inner, layer, direction, topology = _position(segs[n:], cell_at - n)
    return "/".join(p for p in (scope, inner) if p), layer, direction, topology


def recognize(index: CheckpointIndex, options: RecognizeOptions) -> list[RecurrentGroup]:
    cells: dict[str, dict[tuple[int, int], tuple[str, str, dict[str, str], str | None]]] = defaultdict(dict)
    paths = set(index)
    stated = stated_scopes(index)
    for path in index:
        segs = path.split("/")
        for at, seg in enumerate(segs):
            base = "/".join(segs[: at + 1])
            if seg in LSTM_CELLS and f"{base}/recurrent_kernel" not in paths:  # that one is Keras's
                for kname, bname, pname in LSTM_VARS:
                    if path == f"{base}/{kname}":
                        found = {"kernel": path}
                        for role, name in (("bias", bname), ("projection", pname), ("w_i_diag", "w_i_diag"),
                                           ("w_f_diag", "w_f_diag"), ("w_o_diag", "w_o_diag")):
                            if f"{base}/{name}" in paths:
                                found[role] = f"{base}/{name}"
                        scope, layer, d, topo = _placed(segs, at, stated)
                        cells[scope][(layer, d)] = ("lstm", seg, found, topo)
            elif seg in GRU_CELLS:
                for names in GRU_VARS:
                    if path == f"{base}/{names[0]}" and all(f"{base}/{n}" in paths for n in names[1:]):
                        scope, layer, d, topo = _placed(segs, at, stated)
                        parts = dict(zip(("gk", "gb", "ck", "cb"), (f"{base}/{n}" for n in names)))
                        cells[scope][(layer, d)] = ("gru", seg, parts, topo)
    groups = []
    for scope, found in cells.items():
        group = _group(index, scope, found)
        if group is not None:
            _wrappers(group, index)
            _graph_facts(group, index, [v[2] for v in found.values()])
            groups.append(group)
    return groups


def _wrappers(group: RecurrentGroup, index: CheckpointIndex) -> None:
    """A cell wrapper the checkpoint's MetaGraph shows (its variables cannot) makes the group unusable."""
    meta = _meta_path(index)
    if meta is None:
        return
    from ..formats.tensorflow.meta_graph import wrappers_near

    found = wrappers_near(meta, group.members)
    if found:
        what = "; ".join(f"a {name} ({does})" for name, does in found)
        group.provenance["wrapper"] = (f"missing: the MetaGraph {os.path.basename(meta)} shows {what} around its cells, "
                                       "which the checkpoint's variables cannot show and no target's cells compute")


def _meta_path(index: CheckpointIndex) -> str | None:
    """``PREFIX.meta`` beside a TF1 bundle's index (what a Saver writes with it), if the checkpoint is one."""
    first = index.files[0] if index.files else ""
    if index.format != "tensorflow" or not first.endswith(".index"):
        return None
    return first[: -len(".index")] + ".meta"


def _graph_facts(group: RecurrentGroup, index: CheckpointIndex, cells: list[dict[str, str]]) -> None:
    """The facts the cells' variables cannot state, as the Saver's MetaGraph shows them (``tf1_graph``): they replace
    version defaults; what the graph shows but cannot settle is missing, so that conversions refuse and say why."""
    meta = _meta_path(index)
    graph = load_graph(meta) if meta is not None else None
    if graph is None:
        return
    name, where = os.path.basename(meta), group.scope or "/"
    saved = graph.saved_as()  # Saver(var_list={name: variable}) saves variables under other names
    cells = [{role: saved.get(v, v) for role, v in c.items()} for c in cells]
    kernels = [c["kernel" if group.kind == "lstm" else "ck"] for c in cells]
    absent = [k for k in kernels if ("", k) not in graph.nodes]
    if absent:  # another model's graph, or a Saver whose names the graph does not show
        group.notes.append(f"the MetaGraph {name} beside the checkpoint holds no variable {absent[0]} (nor a Saver that "
                           f"wrote it under that name): its facts are not read for {where}")
        return
    shared = shared_layers(graph, kernels if group.kind == "lstm" else [c["gk"] for c in cells])
    if shared is not None:
        group.provenance["shared_layers"] = (f"missing: the MetaGraph {name} shows that {shared.problem}; no target's "
                                             "layers share their weights")
    found = lstm_facts(graph, cells) if group.kind == "lstm" else gru_facts(graph, cells)
    for fact, reading in found.items():
        current = group.provenance.get(fact, "")
        if origin(current) != "version default":
            if reading.problem or reading.value == getattr(group, fact):
                continue
            group.notes.append(f"the MetaGraph {name} shows {fact}={reading.value} ({reading.where}) for {where}, "
                               f"where {current}")
            continue
        if reading.problem:
            if reading.where == DISAGREE:  # no flag settles this: one value would be wrong for some cells
                group.provenance["cell_differences"] = (f"missing: the MetaGraph {name} shows that {reading.problem}, which "
                                                        "no target's one set of facts holds; select the cells that agree")
            said = (f"holds the cells' variables, but {reading.problem}, so it does not show their {fact}"
                    if reading.where == UNSEEN else f"shows the cells but not their {fact}: {reading.problem}")
            group.provenance[fact] = f"missing: the MetaGraph {name} {said}; pass {FACT_FLAGS[fact]} if you know it"
            if fact == "activation":
                group.activation = None
        else:
            group.set_fact(fact, reading.value, f"file: MetaGraph {name} ({reading.where})")


def _group(index, scope, found) -> RecurrentGroup | None:
    layers = sorted({k for k, _ in found})
    dirs = sorted({d for _, d in found})
    if layers != list(range(len(layers))) or dirs not in ([0], [1], [0, 1]) or len(found) != len(layers) * len(dirs):
        return None
    kind, cell_name, parts, _ = found[(layers[0], dirs[0])]
    topologies = {v[3] for v in found.values()}
    if any(v[0] != kind or v[1] != cell_name for v in found.values()) or len(topologies) > 1:
        return None
    topology = topologies.pop() or "interleaved"
    members = [p for _, _, parts_, _ in found.values() for p in parts_.values()]
    prov = {"activation": "version default: TF1 cells' activation=tanh (the constructor argument is not stored)",
            "recurrent_activation": "file: layout (TF1 cells' gates are sigmoid)"}
    if len(layers) > 1 and len(dirs) == 2:
        prov["topology"] = ("file: names (bidirectional_rnn/{fw,bw}/multi_rnn_cell: two independent stacks)"
                            if topology == "independent" else
                            "file: names (stack_bidirectional_rnn/cell_k/bidirectional_rnn: interleaved)")
    if kind == "lstm":
        kshape = index[parts["kernel"]].shape
        hidden = kshape[1] // 4
        proj = index[parts["projection"]].shape[1] if "projection" in parts else 0
        n_in = kshape[0] - (proj or hidden)
        fixed = LSTM_CELLS[cell_name]
        if fixed is not None:
            prov["forget_bias"] = f"file: layout ({cell_name} has no run-time forget bias)"
        else:
            prov["forget_bias"] = _FORGET_BIAS_DEFAULT.get(cell_name, _FORGET_BIAS_DEFAULT[None]).format(
                cls=_CLASSES.get(cell_name, cell_name), fb=DEFAULT_FORGET_BIAS)
        clip_cls = _CLIPPED.get(cell_name)
        if clip_cls is None:
            prov["cell_clip"] = f"file: layout ({_CLASSES.get(cell_name, cell_name)} does not clip its state)"
        else:
            prov["cell_clip"] = (f"version default: {clip_cls} cell_clip=None: no clipping (the constructor argument is "
                                 "not stored; pass --cell-clip C if the cell clipped its state)")
        if "projection" in parts:
            prov["proj_clip"] = ("version default: TF1 LSTMCell proj_clip=None: no clipping (the constructor argument is "
                                 "not stored; pass --proj-clip P if the cell clipped its projection)")
        group = RecurrentGroup(scope=scope, kind="lstm", layout="tf1", variant=_variant(cell_name, parts),
                               input_size=n_in, hidden_size=hidden, num_layers=len(layers), directions=len(dirs),
                               proj_size=proj, bias="one", peepholes="w_i_diag" in parts,
                               forget_bias=DEFAULT_FORGET_BIAS if fixed is None else fixed, topology=topology,
                               provenance=prov, members=members)
    else:
        if cell_name == "cudnn_compatible_gru_cell":
            return None  # CudnnCompatibleGRUCell splits its candidate differently: not supported yet
        gk = index[parts["gk"]].shape
        hidden = gk[1] // 2
        prov["reset_after"] = f"file: layout (TF1 {cell_name} is reset-before)"
        group = RecurrentGroup(scope=scope, kind="gru", layout="tf1-gru", variant=f"TF1 {cell_name}",
                               input_size=gk[0] - hidden, hidden_size=hidden, num_layers=len(layers),
                               directions=len(dirs), bias="one", reset_after=False, topology=topology,
                               provenance=prov, members=members)
    widths = sorted({index[v[2]["kernel" if v[0] == "lstm" else "ck"]].shape[1] // (4 if v[0] == "lstm" else 1)
                     for v in found.values()})
    if kind == "lstm":  # every cell of the group must compute what the first does: peepholes, projection
        shapes = {key: ("w_i_diag" in v[2], index[v[2]["projection"]].shape[1] if "projection" in v[2] else 0)
                  for key, v in found.items()}
        if len(set(shapes.values())) > 1:
            def name(key: tuple[int, int]) -> str:
                return f"layer {key[0]}" + (" bw" if key[1] else " fw" if len(dirs) > 1 else "")

            desc = "; ".join(f"{name(k)}: {'peepholes' if peep else 'no peepholes'}, "
                             f"{f'num_proj={proj}' if proj else 'no projection'}" for k, (peep, proj) in sorted(shapes.items()))
            group.provenance["cell_differences"] = (f"missing: its cells differ ({desc}), which no target's one set of facts "
                                         "holds; select the cells that agree (one layer, one direction)")
    if dirs == [1]:
        group.provenance["directions"] = ("missing: only the backward (bw) cells are selected; they run last step "
                                          "first inside a bidirectional layer, which no target holds alone; select both")
    if len(widths) > 1:
        group.provenance["layers"] = (f"missing: its layers have different widths ({', '.join(map(str, widths))}), which "
                                      "no target's single hidden size holds; select one layer")
    group.load = lambda: [[_load(index, found[(k, d)], group) for d in dirs] for k in layers]
    return group


def _variant(cell_name: str, parts: dict[str, str]) -> str:
    extras = [w for w, key in (("peepholes", "w_i_diag"), ("num_proj", "projection")) if key in parts]
    return f"TF1 {cell_name}" + (f" ({', '.join(extras)})" if extras else "")


def _expect(index, parts: dict[str, str], want: dict[str, tuple[int, ...]]) -> None:
    """Each present tensor has the shape the cell's layout implies, before any slicing or concatenation."""
    bad = [f"{parts[k]} is {list(index[parts[k]].shape)}, expected {list(s)}" for k, s in want.items()
           if k in parts and tuple(index[parts[k]].shape) != s]
    if bad:
        raise FormatError("; ".join(bad) + "; refusing")


def _load(index, entry, group: RecurrentGroup) -> Cell:
    kind, _, parts, _ = entry
    get = lambda key: index[parts[key]].numpy()  # noqa: E731
    first = index[parts["kernel" if kind == "lstm" else "gk"]].shape
    if len(first) != 2 or first[1] % (4 if kind == "lstm" else 2):
        raise FormatError(f"{parts['kernel' if kind == 'lstm' else 'gk']} is {list(first)}, expected "
                          f"[inputs + units, {'4' if kind == 'lstm' else '2'} x units]; refusing")
    if kind == "lstm":
        H = first[1] // 4
        P = index[parts["projection"]].shape[-1] if group.proj_size and "projection" in parts else H
        _expect(index, parts, {"bias": (4 * H,), "w_i_diag": (H,), "w_f_diag": (H,), "w_o_diag": (H,),
                               "projection": (H, P)})
    else:
        H = first[1] // 2
        _expect(index, parts, {"gb": (2 * H,), "ck": (first[0], H), "cb": (H,)})
    if kind == "lstm":
        kernel = get("kernel")
        proj = get("projection").shape[1] if group.proj_size else 0
        n_in = kernel.shape[0] - (proj or kernel.shape[1] // 4)
        order = ORDERS[("tf1", "lstm")]
        # each half of the fused kernel transposed to C order in one pass, its gates reordered on the way
        w_ih, w_hh = (transposed(half, order, "ifgo", axis=1) for half in (kernel[:n_in], kernel[n_in:]))
        bias = reorder(get("bias"), order, "ifgo").copy() if "bias" in parts else np.zeros(kernel.shape[1], kernel.dtype)
        H = kernel.shape[1] // 4
        bias[H:2 * H] += np.asarray(group.forget_bias, bias.dtype)  # fold the run-time forget_bias in
        peep = np.stack([get("w_i_diag"), get("w_f_diag"), get("w_o_diag")]) if group.peepholes else None
        w_hr = get("projection").T if group.proj_size else None
        return Cell("lstm", w_ih, w_hh, bias, np.zeros_like(bias), peepholes=peep, w_hr=w_hr)
    gk, gb, ck, cb = get("gk"), get("gb"), get("ck"), get("cb")
    H = gk.shape[1] // 2
    n_in = gk.shape[0] - H
    r, u = gk[:, :H], gk[:, H:]
    w_ih = np.concatenate([r[:n_in].T, u[:n_in].T, ck[:n_in].T])
    w_hh = np.concatenate([r[n_in:].T, u[n_in:].T, ck[n_in:].T])
    b = np.concatenate([gb[:H], gb[H:], cb])
    return Cell("gru", w_ih, w_hh, b, np.zeros_like(b), reset_after=False)


def _base(k: int, d: int, layers: int, dirs: int, topology: str) -> str:
    fw = "fw/" if d == 0 else "bw/"
    if dirs == 1:
        return "rnn/" + (f"multi_rnn_cell/cell_{k}/" if layers > 1 else "")
    if layers == 1:
        return "bidirectional_rnn/" + fw
    if topology == "independent":
        return f"bidirectional_rnn/{fw}multi_rnn_cell/cell_{k}/"
    return f"stack_bidirectional_rnn/cell_{k}/bidirectional_rnn/{fw}"


def write(stack: Stack, forget_bias: float = DEFAULT_FORGET_BIAS) -> dict[str, np.ndarray]:
    """TF1 names relative to the group scope (LSTMCell or GRUCell); ``forget_bias``, the run-time constant
    of the cell that will read them, is taken out of the forget-gate bias."""
    out: dict[str, np.ndarray] = {}
    dirs = len(stack[0])
    topology = stack.topology if isinstance(stack, Stack) else "interleaved"
    for k, layer in enumerate(stack):
        for d, cell in enumerate(layer):
            base = _base(k, d, len(stack), dirs, topology)
            b_ih, b_hh = cell.biases()
            b = b_ih + b_hh
            if cell.kind == "lstm":
                base += "lstm_cell/"
                H = cell.hidden
                b = b.copy()
                b[H:2 * H] -= np.asarray(forget_bias, b.dtype)
                order = ORDERS[("tf1", "lstm")]
                out[base + "kernel"] = transposed(np.concatenate([cell.w_ih, cell.w_hh], 1), "ifgo", order)
                out[base + "bias"] = reorder(b, "ifgo", order)
                if cell.peepholes is not None:
                    for name, row in zip(("w_i_diag", "w_f_diag", "w_o_diag"), cell.peepholes):
                        out[base + name] = row
                if cell.w_hr is not None:
                    out[base + "projection/kernel"] = transposed(cell.w_hr)
            else:
                base += "gru_cell/"
                r_ih, z_ih, n_ih = np.split(cell.w_ih, 3)
                r_hh, z_hh, n_hh = np.split(cell.w_hh, 3)
                br, bz, bn = np.split(b, 3)
                out[base + "gates/kernel"] = np.concatenate([np.concatenate([r_ih, z_ih]).T, np.concatenate([r_hh, z_hh]).T])
                out[base + "gates/bias"] = np.concatenate([br, bz])
                out[base + "candidate/kernel"] = np.concatenate([n_ih.T, n_hh.T])
                out[base + "candidate/bias"] = bn
    return out
