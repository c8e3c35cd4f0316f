"""TorchScript archives (``torch.jit.save``, ``torch.jit.script(...).save``): read as data, never run.

A TorchScript archive is a PyTorch zip with two more things: ``<root>/code/`` (the TorchScript source of every
class; never read here) and ``<root>/constants.pkl`` (the tensor constants the code refers to as
``CONSTANTS.c0`` ..., their storages in ``<root>/constants/``). ``<root>/data.pkl`` pickles the module tree:
each module is an object of a ``__torch__.<qualified name>`` class whose state is the dict of its attributes
(submodules, parameters, buffers, other values), and TorchScript lists go through
``torch.jit._pickle.build_intlist`` ... These are inert here: a ``__torch__`` class becomes a record of its
state (nothing named by the file is imported; ``__torch__`` is TorchScript's namespace, no Python module),
and the list builders return their argument, as torch's own ``torch/jit/_pickle.py`` does.

Each module becomes its attribute dict, so tensors get the paths ``torch.jit.load(...).state_dict()`` uses
(``decoder/rnn/weight_ih``), plus tensor attributes that are not registered parameters or buffers (they are in
the file too; lists that only repeat a module's own tensors, ``nn.LSTM``'s ``_flat_weights``, are left out with a
note); constants are listed at ``CONSTANTS/c<i>``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import UnsafeCheckpointError
from .safepickle import InertObject, LazyTensor, StorageRef, storage_from_pid

__all__ = ["FORMAT", "is_torchscript", "script_globals", "module_tree", "constants_pid", "CONSTANTS"]

FORMAT = "torchscript"
CONSTANTS = "CONSTANTS"  # how TorchScript code names the constants.pkl tuple


def _same(value: Any, *_rest: Any) -> Any:
    """``torch.jit._pickle.build_*list(data)`` and ``restore_type_tag(value, type)``: the value itself."""
    return value


_LIST_BUILDERS: dict[tuple[str, str], Any] = {
    ("torch.jit._pickle", name): _same
    for name in ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")
}
# GLOBAL '__torch__.<dotted module>\n<Name>\n': every TorchScript class the pickle names (protocol 2, as torch writes)
_SCRIPT_CLASS = re.compile(rb"c(__torch__(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\n([A-Za-z_][A-Za-z0-9_]*)\n")


def is_torchscript(names: Sequence[str], root: str) -> bool:
    """A PyTorch zip written by TorchScript: it holds ``code/`` or ``constants.pkl`` beside ``data.pkl``."""
    return root + "constants.pkl" in names or any(n.startswith(root + "code/") for n in names)


def script_globals(*pickles: bytes) -> dict[tuple[str, str], Any]:
    """Inert stand-ins for the TorchScript classes the pickles name, and the list builders."""
    out: dict[tuple[str, str], Any] = dict(_LIST_BUILDERS)
    for data in pickles:
        for module, name in _SCRIPT_CLASS.findall(data):
            m, n = module.decode("ascii"), name.decode("ascii")
            out[(m, n)] = ("inert", f"{m}.{n}")
    return out


def module_tree(obj: Any, where: str, dropped: list[str] | None = None) -> Any:
    """The unpickled module tree with every TorchScript object replaced by its attribute dict.

    A list attribute holding only the module's own tensors (the very objects of its other attributes:
    ``nn.LSTM``'s ``_flat_weights``) repeats them; it is left out, its path appended to ``dropped``."""
    seen: dict[int, Any] = {}

    def walk(o: Any, path: str, depth: int) -> Any:
        if depth > 200:
            raise UnsafeCheckpointError(f"{where}: TorchScript modules nest too deeply; refusing")
        if id(o) in seen:
            return seen[id(o)]
        out = o
        if isinstance(o, InertObject) and o.name.startswith("__torch__"):
            state = o.state
            if isinstance(state, dict):
                own = {id(v) for v in state.values() if isinstance(v, LazyTensor)}
                aliases = [k for k, v in state.items() if isinstance(v, (list, tuple)) and v
                           and all(isinstance(t, LazyTensor) and id(t) in own for t in v)]
                if dropped is not None:
                    dropped.extend(f"{path}{k}" for k in aliases)
                out = {k: walk(v, f"{path}{k}/", depth + 1) for k, v in state.items() if k not in aliases}
            else:
                out = walk(state, path, depth + 1) if state is not None else {}
        elif isinstance(o, dict):
            out = {k: walk(v, f"{path}{k}/", depth + 1) for k, v in o.items()}
        elif isinstance(o, list):
            out = [walk(v, f"{path}{i}/", depth + 1) for i, v in enumerate(o)]
        elif isinstance(o, tuple):
            out = tuple(walk(v, f"{path}{i}/", depth + 1) for i, v in enumerate(o))
        seen[id(o)] = out
        return out

    return walk(obj, "", 0)


def constants_pid(prefix: str) -> Callable[[Any], StorageRef]:
    """Persistent ids of ``constants.pkl``: storages in ``<root>/constants/``, keyed ``constants/<key>``."""

    def load(pid: Any) -> StorageRef:
        ref = storage_from_pid(pid)
        view = None if ref.view is None else (prefix + ref.view[0], ref.view[1], ref.view[2])
        return StorageRef(prefix + ref.key, ref.dtype, ref.numel, ref.location, view)

    return load


def with_constants(tree: Any, constants: Any) -> Any:
    """The module tree plus ``CONSTANTS/c<i>`` (kept apart when the root module has an attribute of that name)."""
    if not isinstance(constants, (tuple, list)) or not constants:
        return tree
    named = {f"c{i}": c for i, c in enumerate(constants)}
    if isinstance(tree, Mapping) and CONSTANTS not in tree:
        return {**tree, CONSTANTS: named}
    return {"data": tree, CONSTANTS: named}
