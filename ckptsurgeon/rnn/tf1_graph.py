"""What a TF1 Saver's MetaGraph says its cells compute: the run-time facts their variables do not store.

From each cell's kernel, data flow leads to the ops of every step (in the graph, or in a TF 2 loop's body):
- LSTMCell, BasicLSTMCell: ``MatMul(concat([x, h]), kernel) -> BiasAdd -> Split(4)`` = i, j, f, o. ``forget_bias`` is
  the constant added to f (``split:2``); ``activation`` is the op applied to j (``split:1``) before ``sigmoid(i) *``
  takes it (j taken as it is: linear); ``cell_clip`` is a ``Minimum(new c, C)``, ``Maximum(.., -C)`` pair after the
  new cell state, ``proj_clip`` the same after ``MatMul(m, projection/kernel)``.
- LSTMBlockCell, LSTMBlockFusedCell (ops ``LSTMBlockCell``, ``BlockLSTM``): the op's ``forget_bias`` and
  ``cell_clip`` attributes (a clip <= 0 is none, as in the kernel); activation tanh.
- GRUCell: ``MatMul(concat([x, r * h]), candidate/kernel) -> BiasAdd -> activation`` before ``(1 - u) *`` takes it;
  GRUBlockCell (op ``GRUBlockCell``): tanh.
A fact is read only when every step of every cell of a group shows it, and they agree: a group has one value.
Anything else (a cell whose steps are not in this shape, steps that disagree, an activation op with no known
formula) is reported, and the fact stays what the variables alone can say.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..dtypes import tf_dtype_name
from ..formats.tensorflow.graph_def import Graph, Node, Tensor
from .activations import ACTIVATIONS, parametric_name

__all__ = ["Reading", "UNSEEN", "DISAGREE", "lstm_facts", "gru_facts", "shared_layers"]

# TF op -> activation name (activations.ACTIVATIONS); Elu and LeakyRelu are named with their parameter
_ACT_OPS = {"Tanh": "tanh", "Relu": "relu", "Sigmoid": "sigmoid", "Softsign": "softsign", "Softplus": "softplus",
            "Identity": "linear"}
_ADD = ("Add", "AddV2")
# fused ops -> input position of the kernel
_LSTM_BLOCK = {"LSTMBlockCell": 3, "BlockLSTM": 4}
_GRU_BLOCK = {"GRUBlockCell": 3}  # w_c: the candidate kernel
# attribute defaults of the op definitions (tensorflow/core/ops/rnn_ops.cc, nn_ops.cc), for attributes a graph omits;
# a cell_clip <= 0 clips nothing (the kernels clip only when cell_clip > 0)
_OP_DEFAULTS = {"LSTMBlockCell": {"forget_bias": 1.0, "cell_clip": 3.0}, "BlockLSTM": {"forget_bias": 1.0, "cell_clip": 3.0},
                "LeakyRelu": {"alpha": 0.2}}
# ops that keep a forward value for the backward pass of a training graph (TF 1.x loops: stacks; TF 2: tensor lists)
_KEPT_FOR_GRADIENTS = frozenset({"StackPushV2", "StackPush", "TensorListPushBack"})
UNSEEN = "unseen"  # Reading.where of a fact whose cell has no step the graph shows in a known shape
DISAGREE = "disagree"  # Reading.where of a fact the group's cells hold different values of


class Reading(NamedTuple):
    """One fact as the graph shows it: its value (None for a clip: none), where, or why it cannot be read."""

    value: Any
    where: str
    problem: str = ""


Step = dict[str, Reading]


def _label(node: Node) -> str:
    return node.name + (f" (in {node.scope})" if node.scope else "")


def _out(node: Node, k: int = 0) -> Tensor:
    return (node.scope, node.name, k)


def _forward(graph: Graph, tensor: Tensor) -> list[tuple[Node, int]]:
    """(node, position) of the ops of the step itself that read ``tensor``. A training graph's backward ops read
    forward values too: ``tf.gradients`` names each after the forward op inside its own scope (``gradients/``,
    ``tower_0/gradients/``, any ``name=``), so a reader whose name holds the forward op's scope below another one
    is a backward op; so are the ops that keep values for them (stack and list pushes)."""
    scope = "/" + tensor[1].rsplit("/", 1)[0] + "/" if "/" in tensor[1] else None
    return [(n, p) for n, p in graph.consumers(tensor)
            if n.op not in _KEPT_FOR_GRADIENTS and not (scope and scope in n.name and not ("/" + n.name).startswith(scope))]


def _consumer(graph: Graph, tensor: Tensor, ops: tuple[str, ...], pos: int | None = None) -> Node | None:
    found = [n for n, p in _forward(graph, tensor) if n.op in ops and (pos is None or p == pos)]
    return found[0] if len(found) == 1 else None


def _other(node: Node, tensor: Tensor) -> Tensor | None:
    """The other input of a two-input node that reads ``tensor``."""
    if len(node.inputs) != 2 or tensor not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] == tensor else node.inputs[0]


def _const(graph: Graph, tensor: Tensor | None) -> float | None:
    node = graph.source(tensor) if tensor is not None else None
    return node.scalar() if node is not None else None


def _float(value: float) -> float:
    """A float32 constant as the shortest decimal that is the same float32 (0.3, not 0.30000001192092896)."""
    import numpy as np

    return float(str(np.float32(value)))


def _readers(graph: Graph, tensor: Tensor) -> list[Node]:
    """The ops that compute with ``tensor`` (not those that keep it for a training graph's backward pass)."""
    return [n for n, _ in _forward(graph, tensor)]


def _activation(graph: Graph, pre: Tensor, taker: Callable[[Node, Tensor], bool]) -> tuple[Reading, Node | None]:
    """The activation applied to ``pre``, which only ``taker`` (the step's product) may then read; and that product."""
    readers = _readers(graph, pre)
    if len(readers) == 1 and taker(readers[0], pre):
        return Reading("linear", f"{pre[1]} is used as it is"), readers[0]
    if len(readers) != 1:
        return Reading(None, pre[1], f"{len(readers)} ops read {pre[1]}:{pre[2]}, not one activation"), None
    act = readers[0]
    after = _readers(graph, _out(act))
    if len(after) != 1 or not taker(after[0], _out(act)):
        return Reading(None, act.name, f"{act.op} {_label(act)} is not read by the step's product alone"), None
    if act.op in _ACT_OPS:
        return Reading(_ACT_OPS[act.op], f"{act.op} {_label(act)}"), after[0]
    if act.op == "Elu":
        name = parametric_name("Elu", 1.0, None)
    elif act.op == "LeakyRelu":
        alpha = act.attr_float("alpha")
        name = parametric_name("LeakyRelu", _OP_DEFAULTS["LeakyRelu"]["alpha"] if alpha is None else alpha, None)
    else:
        return Reading(None, act.name, f"activation op {act.op} ({_label(act)}) has no formula in ckptsurgeon"), None
    if name not in ACTIVATIONS:
        return Reading(None, act.name, f"activation op {act.op} ({_label(act)}) has no formula in ckptsurgeon"), None
    return Reading(name, f"{act.op} {_label(act)}"), after[0]


def _clip(graph: Graph, value: Tensor) -> Reading:
    """``Minimum(value, C)`` then ``Maximum(.., -C)``: C; no Minimum: no clip."""
    low = [n for n, _ in _forward(graph, value) if n.op == "Minimum"]
    if not low:
        return Reading(None, f"no clip_by_value after {value[1]}")
    high = _consumer(graph, _out(low[0]), ("Maximum",))
    top, bottom = _const(graph, _other(low[0], value)), _const(graph, _other(high, _out(low[0])) if high else None)
    if len(low) != 1 or top is None or bottom is None or bottom != -top:
        return Reading(None, low[0].name, f"{_label(low[0])} is not a clip_by_value(-C, C) of {value[1]}")
    return Reading(_float(top), f"clip_by_value {_label(low[0]).replace('/Minimum', '', 1)}")


def _input_gate_product(node: Node, tensor: Tensor, graph: Graph, split: Node) -> bool:
    """``node`` is ``sigmoid(i) * tensor``, i the input gate (``split:0``, plus a peephole term with peepholes)."""
    other = _other(node, tensor) if node.op == "Mul" else None
    sig = graph.producer(other) if other is not None else None
    if sig is None or sig.op != "Sigmoid" or not sig.inputs:
        return False
    gate = _out(split, 0)
    pre = graph.producer(sig.inputs[0])
    return sig.inputs[0] == gate or (pre is not None and pre.op in _ADD and gate in pre.inputs)


def _update_product(node: Node, tensor: Tensor, graph: Graph) -> bool:
    """``node`` is ``(1 - u) * tensor``, u a gate of the GRU's gate Split."""
    other = _other(node, tensor) if node.op == "Mul" else None
    sub = graph.producer(other) if other is not None else None
    if sub is None or sub.op != "Sub" or len(sub.inputs) != 2 or _const(graph, sub.inputs[0]) != 1.0:
        return False
    gates = graph.producer(sub.inputs[1])
    return gates is not None and gates.op == "Split"


def _gates(graph: Graph, matmul: Node, parts: int) -> Node | None:
    """``MatMul -> BiasAdd -> Split(parts)`` from a step's kernel product, or None."""
    if matmul.attr_bool("transpose_a") or matmul.attr_bool("transpose_b"):
        return None
    biased = _consumer(graph, _out(matmul), ("BiasAdd",), 0)
    split = _consumer(graph, _out(biased), ("Split",), 1) if biased is not None else None
    return split if split is not None and split.attr_int("num_split") == parts else None


def _lstm_step(graph: Graph, matmul: Node) -> Step | None:
    split = _gates(graph, matmul, 4)
    if split is None:
        return None
    step: Step = {}
    add = _consumer(graph, _out(split, 2), _ADD)
    bias = _const(graph, _other(add, _out(split, 2))) if add is not None else None
    step["forget_bias"] = (Reading(_float(bias), f"{_label(add)} adds it to the forget gate") if add is not None and bias is not None
                           else Reading(None, split.name, f"no constant is added to {split.name}:2 (the forget gate)"))
    step["activation"], _ = _activation(graph, _out(split, 1), lambda n, t: _input_gate_product(n, t, graph, split))
    new_c = _new_cell_state(graph, add) if add is not None else None
    step["cell_clip"] = (_clip(graph, _out(new_c)) if new_c is not None else
                         Reading(None, split.name, f"no new cell state after the forget gate {split.name}:2"))
    return step


def _new_cell_state(graph: Graph, add: Node) -> Node | None:
    """``sigmoid(f + forget_bias [+ peephole]) * c + ...``: the new cell state, reached from the forget gate's
    ``add`` (whatever the activation is, so that a clip is read even when the activation cannot be)."""
    tensor = _out(add)
    for _ in range(2):  # f + forget_bias, then + w_f_diag * c with peepholes
        sig = _consumer(graph, tensor, ("Sigmoid",))
        if sig is not None:
            product = _consumer(graph, _out(sig), ("Mul",))
            return _consumer(graph, _out(product), _ADD) if product is not None else None
        nxt = _consumer(graph, tensor, _ADD)
        if nxt is None:
            return None
        tensor = _out(nxt)
    return None


def _block_step(node: Node) -> Step:
    """An attribute the graph does not hold (a MetaGraph saved with strip_default_attrs) is the op's default."""
    where = f"op {node.op} {_label(node)}"
    found = {key: node.attr_float(key) for key in ("forget_bias", "cell_clip")}
    fb, clip = ((_OP_DEFAULTS[node.op][k] if v is None else v) for k, v in found.items())
    said = {k: "" if v is not None else " (the op's default)" for k, v in found.items()}
    return {"forget_bias": Reading(_float(fb), f"{where}: forget_bias{said['forget_bias']}"),
            "activation": Reading("tanh", f"{where} (always tanh)"),
            "cell_clip": Reading(_float(clip) if clip > 0 else None, f"{where}: cell_clip{said['cell_clip']}")}


def _steps(graph: Graph, kernel: str, blocks: dict[str, int], step: Callable[[Graph, Node], Step | None]) -> list[Step]:
    out = []
    for node, pos in graph.uses(kernel):
        if blocks.get(node.op) == pos:
            out.append(_block_step(node) if node.op in _LSTM_BLOCK else {"activation": Reading("tanh", f"op {node.op} {_label(node)} (always tanh)")})
        elif node.op == "MatMul" and pos == 1:
            found = step(graph, node)
            if found is not None:
                out.append(found)
    return out


def _projection_step(graph: Graph, kernel: str) -> list[Step]:
    return [{"proj_clip": _clip(graph, _out(node))} for node, pos in graph.uses(kernel)
            if node.op == "MatMul" and pos == 1 and not node.attr_bool("transpose_b")]


_NOT_COMPUTING = ("Assign", "ResourceApply", "ResourceSparseApply", "Apply", "SparseApply")  # op name prefixes
_STATE_OPS = frozenset({"VarIsInitializedOp", "IsVariableInitialized", "SaveV2", "RestoreV2", "DestroyResourceOp"})


def _first_readers(graph: Graph, kernel: str) -> str:
    """What the graph does with ``kernel`` first, for a refusal: the ops reading it (a Cast names its type: fp16 or
    bfloat16 mixed precision), else that nothing reads it."""
    ops = []
    for node, _pos in graph.uses(kernel):
        if node.op.startswith(_NOT_COMPUTING) or node.op in _STATE_OPS or node.name.startswith("save/"):
            continue  # initializing, saving, restoring, training the variable: not the cell's computation
        what = node.op
        if node.op == "Cast":
            what += f" to {tf_dtype_name(node.attr_type('DstT'))}"
        ops.append(f"{what} ({_label(node)})")
    if not ops:
        return "no op reads it"
    shown = sorted(set(ops))
    hint = (" (mixed precision: ckptsurgeon reads cells that compute in the kernel's own type)"
            if any(o.startswith("Cast to") for o in shown) else
            " (a custom getter between the variable and its product, hand-written step code ...)")
    return f"its value goes first to {', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}{hint}"


def _merge(per_cell: list[tuple[str, list[Step]]], facts: tuple[str, ...], graph: Graph) -> dict[str, Reading]:
    """One Reading per fact for the whole group: every step of every cell agrees, or the problem says why not."""
    out: dict[str, Reading] = {}
    for fact in facts:
        values: dict[Any, str] = {}
        problem = ""
        unseen = [kernel for kernel, steps in per_cell if not any(fact in s for s in steps)]
        if unseen:
            out[fact] = Reading(None, UNSEEN, f"the graph runs the cell whose kernel is {unseen[0]} in no shape "
                                              f"ckptsurgeon reads: {_first_readers(graph, unseen[0])}")
            continue
        for kernel, steps in per_cell:
            for r in (s[fact] for s in steps if fact in s):
                if r.problem:
                    problem = problem or r.problem
                else:
                    values.setdefault(r.value, r.where)
        if problem:
            out[fact] = Reading(None, "", problem)
        elif len(values) > 1:
            shown = ", ".join(f"{v} ({w})" for v, w in values.items())
            out[fact] = Reading(None, DISAGREE, f"its cells disagree: {fact} {shown}")
        elif values:
            (value, where), = values.items()
            n = sum(len(steps) for _, steps in per_cell)
            out[fact] = Reading(value, where + (f"; the same in all {n} places the graph runs these cells" if n > 1 else ""))
    return out


def _on_itself(graph: Graph, kernel: str) -> Reading | None:
    """A cell whose step reads, as its input x, what another step of the same variables made in the same scope:
    one cell object used for several layers (``MultiRNNCell([cell] * 2)``), which stores one layer's variables
    and runs them as a stack."""
    steps = [n for n, pos in graph.uses(kernel) if n.op == "MatMul" and pos == 1]
    scopes = {(n.scope, n.name.rsplit("/", 1)[0] + "/") for n in steps if "/" in n.name}
    for step in steps:
        concat = graph.producer(step.inputs[0]) if step.inputs else None
        x = graph.source(concat.inputs[0]) if concat is not None and concat.op == "ConcatV2" and concat.inputs else None
        if x is not None and any(x.scope == sc and x.name.startswith(prefix) for sc, prefix in scopes):
            return Reading(None, "", f"{_label(step)} reads {_label(x)}, made by another step of the same variables: "
                                     "one cell object runs as several stacked layers, sharing one layer's weights")
    return None


def shared_layers(graph: Graph, kernels: list[str]) -> Reading | None:
    """Why the cells of ``kernels`` run as stacked layers of one set of variables, if they do (else None)."""
    return next((r for r in (_on_itself(graph, k) for k in kernels) if r is not None), None)


def lstm_facts(graph: Graph, cells: list[dict[str, str]]) -> dict[str, Reading]:
    """forget_bias, activation, cell_clip (and proj_clip with a projection) of the LSTM cells whose variables are
    ``cells`` (role -> variable name: kernel, projection)."""
    per_cell = [(c["kernel"], _steps(graph, c["kernel"], _LSTM_BLOCK, _lstm_step)) for c in cells]
    found = _merge(per_cell, ("forget_bias", "activation", "cell_clip"), graph)
    if all("projection" in c for c in cells) and cells:
        found.update(_merge([(c["projection"], _projection_step(graph, c["projection"])) for c in cells], ("proj_clip",),
                            graph))
    return found


def _gru_step(graph: Graph, matmul: Node) -> Step | None:
    if matmul.attr_bool("transpose_a") or matmul.attr_bool("transpose_b"):
        return None
    biased = _consumer(graph, _out(matmul), ("BiasAdd",), 0)
    if biased is None:
        return None
    # new_h = u * h + (1 - u) * c: the candidate is taken by (1 - u)
    return {"activation": _activation(graph, _out(biased), lambda n, t: _update_product(n, t, graph))[0]}


def gru_facts(graph: Graph, cells: list[dict[str, str]]) -> dict[str, Reading]:
    """The activation of the GRU cells whose candidate kernels are ``cells[k]["ck"]``."""
    return _merge([(c["ck"], _steps(graph, c["ck"], _GRU_BLOCK, _gru_step)) for c in cells], ("activation",), graph)
