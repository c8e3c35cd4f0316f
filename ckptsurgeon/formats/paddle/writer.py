"""Write ``.pdparams``: a file that ``paddle.load`` reads and ``Layer.set_state_dict`` takes, made without paddle.

The file is what ``paddle.save(layer.state_dict())`` writes (paddle/framework/io.py, ``_legacy_save``): one pickle,
protocol 4 (paddle's default), of a dict key -> numpy array, each array pickled as numpy pickles itself, and last
``StructuredToParameterName@@``: key -> the parameter's own name (``paddle.load`` names the tensors with it, then drops
it). paddle's ``nn.LSTM``/``GRU`` list each parameter twice (``lstm.weight_ih_l0`` and ``lstm.0.cell.weight_ih``);
such a pair, when it holds the same bytes, gets one parameter name, as paddle's own table gives it, and the reader
lists the two keys as aliases of one tensor.

Pickled by the standard library's pure-Python pickler, one entry at a time, in ``fast`` mode (nothing memoized:
an array's bytes are freed once written). ``metadata`` is not stored: any other entry of the dict would be an
unexpected key to ``set_state_dict``.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ...errors import OutputError
from .pdparams import NAME_TABLE, UNPACK_INFO

__all__ = ["write", "PROTOCOL"]

PROTOCOL = 4  # paddle.save's default; paddle.load reads 2 to 4
# numpy kinds a plain numpy pickle holds without any other module: bool, signed, unsigned, float, complex
_KINDS = frozenset("biufc")
# paddle.nn.LSTM/GRU's two names of one parameter: PREFIX.{k}.cell[_fw|_bw].ROLE is PREFIX.ROLE_l{k}[_reverse]
_CELL_NAME = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<layer>\d+)\.cell(?P<dir>_fw|_bw)?\.(?P<role>weight_ih|weight_hh|bias_ih|bias_hh)$")
_MODULE_NAME = re.compile(r"(?:^|\.)(?:weight_ih|weight_hh|bias_ih|bias_hh)_l\d+(?:_reverse)?$")


def _module_name(key: str) -> str | None:
    """The ``nn.LSTM``/``GRU`` name of the parameter a cell key names (``lstm.0.cell_bw.bias_hh`` ->
    ``lstm.bias_hh_l0_reverse``); None for any other key."""
    m = _CELL_NAME.match(key)
    if m is None:
        return None
    prefix = f"{m['prefix']}." if m["prefix"] else ""
    return f"{prefix}{m['role']}_l{m['layer']}{'_reverse' if m['dir'] == '_bw' else ''}"


def _array(key: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` as numpy pickles it for any reader: C order, native byte order; dtypes numpy alone cannot name refused."""
    if arr.dtype.kind not in _KINDS or arr.dtype.name in ("bfloat16",) or arr.dtype.name.startswith("float8"):
        raise OutputError(f"tensor {key!r}: a .pdparams holds numpy arrays, and {arr.dtype.name} would need another module "
                          "to unpickle; cast it first (a remap rule with transforms = [{op = \"cast\", dtype = \"float32\"}])")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)


class _Entries:
    """The state dict to pickle, as (key, array) pairs pulled one at a time."""

    def __init__(self, items: Iterator[tuple[str, Any]]) -> None:
        self.items = items


class _StatePickler(pickle._Pickler):
    """The stdlib's pickler, writing ``_Entries`` as the dict it stands for (``EMPTY_DICT``, then a ``SETITEM`` per
    entry) and memoizing nothing (``fast``)."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, fh: Any) -> None:
        super().__init__(fh, protocol=PROTOCOL)
        self.fast = True

    def save_entries(self, obj: _Entries) -> None:
        self.write(pickle.EMPTY_DICT)  # type: ignore[attr-defined]
        for key, value in obj.items:
            self.save(key)  # type: ignore[attr-defined]
            self.save(value)  # type: ignore[attr-defined]
            self.write(pickle.SETITEM)  # type: ignore[attr-defined]

    dispatch[_Entries] = save_entries  # type: ignore[assignment]


def write(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """``tensors`` as ``paddle.save`` would save them as a state dict; read one at a time."""
    del metadata  # see the module docstring
    names: dict[str, str] = {}
    digests: dict[str, str] = {}  # key -> digest, of the keys a cell key may alias

    def entries() -> Iterator[tuple[str, np.ndarray]]:
        for key in tensors:
            if not isinstance(key, str) or key in (NAME_TABLE, UNPACK_INFO):
                raise OutputError(f"tensor name {key!r} is reserved in .pdparams (paddle.load reads it as its own table); "
                                  "rename it")
            arr = _array(key, tensors[key])
            names[key] = key
            module = _module_name(key)
            if module is not None or _MODULE_NAME.search(key):
                digest = hashlib.blake2b(arr.dtype.str.encode() + repr(arr.shape).encode() + arr.tobytes()).hexdigest()
                digests[key] = digest
                if module is not None and digests.get(module) == digest:
                    names[key] = module  # one parameter under two keys, as paddle's nn.LSTM/GRU hold it
            yield key, arr
            del arr

    def state() -> Iterator[tuple[str, Any]]:
        yield from entries()
        yield NAME_TABLE, names  # complete once every entry is written

    _StatePickler(fh).dump(_Entries(state()))
