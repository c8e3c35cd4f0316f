"""numpy, imported when first used: a scan or a listing of safetensors, torch, npz and HDF5 files never imports it.

numpy takes 50-90 ms to import, more than the rest of a ``scan`` start-up. Modules on the reading path write::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from ..lazy import numpy as np

and use ``np`` as always: the first attribute looked up imports numpy (under the import lock, so threads are safe)
and copies its namespace into the proxy, so later lookups are plain attribute reads. ``is_ndarray`` and
``is_np_integer`` answer type questions without importing it: nothing can be a numpy array before numpy is loaded.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["numpy", "is_ndarray", "is_np_integer", "is_np_generic"]

_PROBES = frozenset(("__wrapped__", "__path__", "__file__", "__getstate__", "__reduce__", "__reduce_ex__", "__copy__",
                     "__deepcopy__", "__mro_entries__", "__class_getitem__", "__all__"))


class _LazyModule(types.ModuleType):
    """A stand-in for a module, imported on the first attribute looked up."""

    def __getattr__(self, attr: str) -> Any:  # only for names not (yet) in this proxy's namespace
        if attr in _PROBES:
            raise AttributeError(attr)  # introspection (doctest, inspect, copy) does not import it
        real = importlib.import_module(self.__name__)
        for name, value in vars(real).items():
            if not (name.startswith("__") and name.endswith("__")):
                self.__dict__.setdefault(name, value)
        return getattr(real, attr)  # a name the module makes on demand (its own __getattr__)


numpy: Any = _LazyModule("numpy")


def _is(value: object, name: str) -> bool:
    cls = getattr(sys.modules.get("numpy"), name, None)  # None too while numpy is being imported
    return cls is not None and isinstance(value, cls)


def is_ndarray(value: object) -> bool:
    """``isinstance(value, numpy.ndarray)``, without importing numpy (no array exists before it is imported)."""
    return _is(value, "ndarray")


def is_np_integer(value: object) -> bool:
    """``isinstance(value, numpy.integer)``, without importing numpy."""
    return _is(value, "integer")


def is_np_generic(value: object) -> bool:
    """``isinstance(value, numpy.generic)`` (a numpy scalar), without importing numpy."""
    return _is(value, "generic")
