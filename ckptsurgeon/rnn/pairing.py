"""Which source group goes into which template group (graft, load_into).

By rule (``--map SRC=DST`` on group scopes), else the only group of the same kind and sizes. A stack
meets its layers here: ``--map 'rnn=bi1,bi2'`` splits the N-layer source group ``rnn`` into its layers,
one per template group in the order given; ``--map 'bi1,bi2=rnn'`` chains N one-layer source groups into
the N-layer template group ``rnn``. Without rules, a lone N-layer group and N one-layer groups that chain
(sizes and facts) pair the same way when their order is known: the order the file states (a Keras config's
layer list, TF2's ``layer_with_weights-K``), else the only order whose sizes chain; otherwise the user names it.
A ``--map`` order that contradicts the file's own is refused.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..index import CheckpointIndex
from .group import RecurrentGroup
from .layers import chainable, join_layers, split_layers

__all__ = ["Pairing", "pair_groups", "render_scope", "signature", "model_order", "ordered_layers"]


@dataclass
class Pairing:
    pairs: list[tuple[RecurrentGroup, RecurrentGroup]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # (the whole source stack, the template groups its layers went into, in order): checked end to end
    stacks: list[tuple[RecurrentGroup, list[RecurrentGroup]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    claimed: set[str] = field(default_factory=set)  # members of source groups a group-level rule named (paired or not)


def signature(g: RecurrentGroup) -> tuple:
    return (g.kind, g.input_size, g.hidden_size, g.num_layers, g.directions, g.proj_size)


def render_scope(scope: str, rules: Sequence) -> str | None:
    """A group scope through the rules: ``LSTMcell/*=cell/*`` maps the scope ``LSTMcell`` to ``cell``."""
    for rule in rules:
        m = rule.match(scope)
        if m is not None:
            return None if rule.drop else m.target
        m = rule.match(scope + "/\0")
        if m is not None:
            return None if rule.drop else m.target.removesuffix("/\0").removesuffix("\0").rstrip("/")
    return None


def _find(name: str, groups: list[RecurrentGroup]) -> RecurrentGroup | None:
    """The group with scope ``name``, else the only group under it ('lstm' for the node group 'lstm/LSTM')."""
    name = name.strip().strip("/")
    for g in groups:
        if g.scope == name:
            return g
    under = [g for g in groups if name == "" or g.scope.startswith(name + "/")]
    return under[0] if len(under) == 1 else None


def _split_into(s: RecurrentGroup, targets: list[RecurrentGroup], out: Pairing, how: str) -> None:
    if s.num_layers != len(targets):
        out.problems.append(f"group {s.scope or '/'} has {s.num_layers} layer(s) but {len(targets)} template groups "
                            f"are named ({', '.join(t.scope or '/' for t in targets)})")
        return
    try:
        layers = split_layers(s)
    except Exception as exc:  # SelectionError: a stack that is not a chain of layers
        out.problems.append(str(exc))
        return
    why = chainable(targets)
    if why:
        out.problems.append(f"template groups {', '.join(t.scope or '/' for t in targets)} are not one stack: {why}")
        return
    out.pairs.extend(zip(layers, targets))
    out.stacks.append((s, targets))
    out.notes.append(f"{s.scope or '/'}: its {s.num_layers} layers go into {', '.join(t.scope or '/' for t in targets)} "
                     f"in that order ({how})")


def _join_from(sources: list[RecurrentGroup], t: RecurrentGroup, out: Pairing, how: str) -> None:
    why = chainable(sources)
    if why:
        out.problems.append(f"source groups {', '.join(g.scope or '/' for g in sources)} are not one stack: {why}")
        return
    out.pairs.append((join_layers(sources), t))
    out.notes.append(f"{', '.join(g.scope or '/' for g in sources)} go into the layers of {t.scope or '/'} in that "
                     f"order ({how})")


def _by_rules(sg: list[RecurrentGroup], tg: list[RecurrentGroup], rules: Sequence, out: Pairing,
              s_order: Callable[[str], int | None], t_order: Callable[[str], int | None]) -> None:
    joined: set[str] = set()
    for rule in rules:  # 'bi1,bi2=rnn': several source layers into one template stack
        if rule.drop or rule.regex or "," not in rule.source:
            continue
        names = rule.source.split(",")
        found = [_find(n, sg) for n in names]
        stack = _find(rule.target or "", tg)
        if any(g is None for g in found) or stack is None:
            missing = [n for n, g in zip(names, found) if g is None] + ([rule.target] if stack is None else [])
            out.problems.append(f"--map {rule.source}={rule.target}: no recurrent group at {', '.join(map(repr, missing))}")
            continue
        sources = [g for g in found if g is not None]
        stated = _contradicts(sources, s_order)
        if stated:
            out.problems.append(f"--map {rule.source}={rule.target}: the source file runs these layers in the order {stated}")
            continue
        broken = unchained(sources, s_order)
        if broken:
            out.problems.append(f"--map {rule.source}={rule.target}: {', '.join(g.scope for g in sources)} are {broken}")
            continue
        _join_from(sources, stack, out, f"--map {rule.source}={rule.target}")
        joined.update(g.scope for g in found if g is not None)
        out.claimed.update(m for g in found if g is not None for m in g.members)
    for g in sg:
        if g.scope in joined:
            continue
        target = render_scope(g.scope, [r for r in rules if "," not in r.source])
        if target is None:
            continue
        if "," in target:  # 'rnn=bi1,bi2': one source stack into several template layers
            out.claimed.update(g.members)
            names = target.split(",")
            layers = [_find(n, tg) for n in names]
            if any(t is None for t in layers):
                out.problems.append(f"{g.scope or '/'} -> {target}: no template group at "
                                    + ", ".join(repr(n) for n, t in zip(names, layers) if t is None))
                continue
            named = [t for t in layers if t is not None]
            stated = _contradicts(named, t_order)
            if stated:
                out.problems.append(f"--map {g.scope or '/'}={target}: the template runs these layers in the order {stated}")
                continue
            broken = unchained(named, t_order)
            if broken:
                out.problems.append(f"--map {g.scope or '/'}={target}: {', '.join(t.scope for t in named)} are {broken}")
                continue
            _split_into(g, named, out, f"--map {g.scope or '/'}={target}")
            continue
        hit = _find(target, tg)
        if hit is not None:
            out.pairs.append((g, hit))
            out.claimed.update(g.members)  # paired as a group: its tensors are not also mapped one by one


_NUMBERED = re.compile(r"(?:^|/)layer_with_weights-(\d+)$")


def model_order(index: CheckpointIndex) -> Callable[[str], int | None]:
    """Where a layer (by group scope) runs in its model, from what the file states, else None.

    A stored Keras config lists a model's layers in the order it runs them (``layers`` of a Sequential, the
    topologically sorted ``layers`` of a Functional model; not a subclassed model's, listed as they were made, whose
    ``call`` runs them in any order); a TF2 object-based checkpoint numbers a model's layers
    with weights in that same order (``layer_with_weights-K``). Names never order layers: Keras's automatic names
    (``lstm``, ``lstm_1``) number them in the order they were made, not the order the model runs them."""
    configs = index.metadata.get("layer_paths") or index.metadata.get("layers") or {}
    configs = configs if isinstance(configs, dict) else {}
    model = index.metadata.get("model_class")
    # a subclassed model's layers are listed in the order they were made; its call() runs them in any order
    listed = model in (None, "Sequential", "Functional", "Model") or any("after" in c for c in configs.values())
    position = {path: i for i, path in enumerate(configs)} if listed else {}

    def key(scope: str) -> str | None:
        if scope in position:
            return scope
        hits = [p for p in position if scope.endswith("/" + p)]
        return hits[0] if len(hits) == 1 else None

    def order(scope: str) -> int | None:
        m = _NUMBERED.search(scope)
        if m:
            return int(m.group(1))
        k = key(scope)
        return None if k is None else position[k]

    def chained(first: str, then: str) -> bool | None:
        """Whether the layer at ``then`` takes its input from the one at ``first`` (through layers that pass it on
        unchanged at inference); None when the file states no inputs (weights only, numbered checkpoints)."""
        a, b = key(first), key(then)
        if a is None or b is None or "after" not in configs[b]:
            return None
        seen, at = 0, b
        while seen < 64:
            after = configs[at].get("after")
            if not isinstance(after, list) or len(after) != 1:
                return False
            at, seen = after[0], seen + 1
            if at == a:
                return True
            if at not in configs or configs[at].get("class_name") not in _PASS_ON:
                return False
        return False

    order.chained = chained  # type: ignore[attr-defined]
    return order


# Layers that pass their input on unchanged at inference: a stack may run through them.
_PASS_ON = frozenset({"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                      "ActivityRegularization"})


def _no_order(scope: str) -> int | None:
    return None


def _ordered(layers: list[RecurrentGroup], input_size: int, order: Callable[[str], int | None]
             ) -> tuple[list[RecurrentGroup] | None, str]:
    """One-layer groups in the order their model runs them, and what says so; None when nothing does."""
    known = [order(g.scope) for g in layers]
    ranks = [k for k in known if k is not None]
    if len(ranks) == len(layers) and len(set(ranks)) == len(ranks):
        ordered = [g for _, g in sorted(zip(ranks, layers), key=lambda kg: kg[0])]
        broken = unchained(ordered, order)
        if broken:  # the config says they are not one chain: side by side, or more between
            return None, broken
        chained = getattr(order, "chained", None)
        if chained is not None and all(chained(a.scope, b.scope) for a, b in zip(ordered, ordered[1:])):
            return ordered, "the order the file states"
        # an order without the wiring (TF2's layer_with_weights-K, a config without inbound nodes): layers side by
        # side are numbered the same way, so only the sizes below (or --map) can pair them
    width = layers[0].directions * (layers[0].proj_size or layers[0].hidden_size)
    firsts = [g for g in layers if g.input_size == input_size]
    if len(layers) == 2 and len(firsts) == 1 and input_size != width:
        return firsts + [g for g in layers if g is not firsts[0]], "the only order whose sizes chain"
    return None, ""


def unchained(ordered: list[RecurrentGroup], order: Callable[[str], int | None]) -> str | None:
    """Why ``ordered`` is not one chain of layers by the file's config (a layer whose input is not the previous
    layer's output, e.g. side-by-side branches, a residual Add, a Dense between), else None."""
    chained = getattr(order, "chained", None)
    if chained is None:
        return None
    for a, b in zip(ordered, ordered[1:]):
        if chained(a.scope, b.scope) is False:
            return (f"not one stack: the file's model config shows that {b.scope} does not take its input from "
                    f"{a.scope}'s output")
    return None


def _contradicts(named: list[RecurrentGroup], order: Callable[[str], int | None]) -> str | None:
    """The file's own order of ``named`` when it differs from the order given."""
    ranks = [k for k in (order(g.scope) for g in named) if k is not None]
    if len(ranks) != len(named) or ranks == sorted(ranks):
        return None
    return ", ".join(g.scope for _, g in sorted(zip(ranks, named), key=lambda kg: kg[0]))


def _layers_of(stack: list[RecurrentGroup], layers: list[RecurrentGroup]) -> bool:
    """Whether ``layers`` (one-layer groups) could be the layers of the lone N-layer group in ``stack``."""
    return (len(stack) == 1 and stack[0].num_layers == len(layers) > 1 and all(g.num_layers == 1 for g in layers)
            and chainable(layers) is None and stack[0].kind == layers[0].kind)


def _automatic(sg: list[RecurrentGroup], tg: list[RecurrentGroup], out: Pairing,
               s_order: Callable[[str], int | None], t_order: Callable[[str], int | None]) -> None:
    if len(sg) == 1 and len(tg) == 1:
        out.pairs.append((sg[0], tg[0]))
        return
    split = _layers_of(sg, tg)
    if split or _layers_of(tg, sg):
        stack, layers, order = (sg[0], tg, t_order) if split else (tg[0], sg, s_order)
        ordered, how = _ordered(layers, stack.input_size, order)
        if ordered is None and how:
            out.problems.append(f"groups {', '.join(g.scope for g in layers)} fit the layers of {stack.scope or '/'} by "
                                f"size but are {how}; pair them one at a time (--map SRC=DST)")
        elif ordered is None:
            named = f"'{stack.scope or '/'}=<the groups, first layer first>'" if split else \
                f"'<the groups, first layer first>={stack.scope or '/'}'"
            out.problems.append(f"groups {', '.join(g.scope for g in layers)} fit the layers of {stack.scope or '/'}, but "
                                f"nothing in the files tells the order the model runs them in; name it: --map {named}")
        elif split:
            _split_into(stack, ordered, out, how + "; --map to choose")
        else:
            _join_from(ordered, stack, out, how + "; --map to choose")
        return
    pairs = []
    for g in sg:  # the same scope, else the only template group with the same kind and sizes
        same = [t for t in tg if t.scope == g.scope] or [t for t in tg if signature(t) == signature(g)]
        if len(same) == 1:
            pairs.append((g, same[0]))
    claims: dict[int, list] = {}
    for g, t in pairs:
        claims.setdefault(id(t), []).append(g)
    # several source groups fitting one template group by kind and sizes: none is chosen (the user says which)
    out.pairs.extend((g, t) for g, t in pairs if len(claims[id(t)]) == 1 or g.scope == t.scope)


def pair_groups(sg: list[RecurrentGroup], tg: list[RecurrentGroup], rules: Sequence = (), *,
                source: CheckpointIndex | None = None, template: CheckpointIndex | None = None) -> Pairing:
    """Source/template group pairs (and the stacks split or chained on the way); the files' stated layer order
    (``model_order``) orders and checks stacks of one-layer groups."""
    out = Pairing()
    s_order = model_order(source) if source is not None else _no_order
    t_order = model_order(template) if template is not None else _no_order
    if rules:
        _by_rules(sg, tg, rules, out, s_order, t_order)
    else:
        _automatic(sg, tg, out, s_order, t_order)
    return out


def ordered_layers(layers: list[RecurrentGroup], input_size: int, index: CheckpointIndex) -> list[RecurrentGroup] | None:
    """``layers`` in the order their model runs them, when the file or the sizes say it (for ``verify``)."""
    return _ordered(layers, input_size, model_order(index))[0]
