"""What a TF1 Saver's MetaGraph (``PREFIX.meta``) says about the RNN cells that made a checkpoint.

The checkpoint's variables cannot show a cell wrapper: ``ResidualWrapper(LSTMCell)`` stores exactly the
variables of ``LSTMCell``, yet adds each step's input to its output. The graph can: TF1's
``RNNCell.zero_state`` opens a name scope ``<ClassName>ZeroState`` for every cell of a stack,
wrappers included (``rnn/MultiRNNCellZeroState/ResidualWrapperZeroState/LSTMCellZeroState/zeros``).
Only node names are read (MetaGraphDef.graph_def.node[].name), never an op is built or run.
"""
from __future__ import annotations

from .graph_def import META_LIMIT, load_graph

__all__ = ["WRAPPERS", "META_LIMIT", "cell_scopes", "wrappers_near"]

# Wrappers that change what a cell computes (class name -> what it does). DropoutWrapper (identity at
# keep_prob 1) and DeviceWrapper (placement) do not change the function and are not listed.
WRAPPERS = {
    "ResidualWrapper": "adds each step's input to the cell's output",
    "HighwayWrapper": "mixes each step's input into the output through a learned gate",
    "AttentionWrapper": "attends over a memory between steps",
    "AttentionCellWrapper": "attends over its past outputs between steps",
    "InputProjectionWrapper": "projects the input first",
    "OutputProjectionWrapper": "projects the output after",
}


def cell_scopes(meta_path: str) -> dict[str, list[str]]:
    """``{scope the RNN ran in: [cell class names, outer first, each once]}`` from the zero-state name scopes;
    ``{}`` when there is no MetaGraph or it is too large to read."""
    graph = load_graph(meta_path)
    names = [name for scope, name in graph.nodes if not scope] if graph is not None else []
    out: dict[str, list[str]] = {}
    for name in names:
        segs = name.split("/")
        first = next((i for i, s in enumerate(segs) if s.endswith("ZeroState")), None)
        if first is None:
            continue
        classes = out.setdefault("/".join(segs[:first]), [])
        for seg in segs[first:]:
            if seg.endswith("ZeroState") and seg[: -len("ZeroState")] not in classes:
                classes.append(seg[: -len("ZeroState")])
    return out


def wrappers_near(meta_path: str, members: list[str]) -> list[tuple[str, str]]:
    """(wrapper class, what it does) of every computing wrapper the MetaGraph shows in the RNN whose scope
    shares its first name with ``members``' (a group's variables: ``rnn/multi_rnn_cell/cell_1/lstm_cell/kernel``)."""
    tops = {m.split("/", 1)[0] for m in members}
    found = []
    for scope, classes in cell_scopes(meta_path).items():
        if scope.split("/", 1)[0] in tops:
            found += [(c, WRAPPERS[c]) for c in classes if c in WRAPPERS and (c, WRAPPERS[c]) not in found]
    return found
