"""A small memo of what was found in a pickle's bytes, keyed by those bytes: ``scan`` parses each pickle as it looks
for pickles, and then again as ``ls`` opens the file; the second parse finds the same bytes and the same answer.

Bounded (``MAX_ENTRIES`` pickles of up to ``MAX_BYTES`` each), least recently used first out; only answers that
depend on nothing but the bytes are kept, and callers treat them as read-only. Threads may share it: a race costs
at most a second computation.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BytesMemo", "MAX_ENTRIES", "MAX_BYTES"]

MAX_ENTRIES = 32
MAX_BYTES = 256 << 10  # larger pickles (a torch checkpoint's own) are parsed once per reading anyway

T = TypeVar("T")


class BytesMemo(Generic[T]):
    """``get(data, extra, compute)``: ``compute()`` once per (bytes, extra) among the recent small ones."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[bytes, Hashable], T] = OrderedDict()

    def get(self, data: bytes | bytearray, extra: Hashable, compute: Callable[[], T]) -> T:
        if len(data) > MAX_BYTES:
            return compute()
        key = (data if type(data) is bytes else bytes(data), extra)  # a reader's bytearray: its small copy
        try:
            value = self._entries[key]
        except KeyError:
            value = compute()  # an exception is not remembered: the next call raises it again
            self._keep(key, value)
            return value
        with contextlib.suppress(KeyError):  # another thread may have let it go meanwhile
            self._entries.move_to_end(key)
        return value

    def put(self, data: bytes, extra: Hashable, value: T) -> None:
        """Remember ``value`` as what ``compute`` gives for ``data``, found another way."""
        if len(data) <= MAX_BYTES:
            self._keep((data if type(data) is bytes else bytes(data), extra), value)

    def _keep(self, key: tuple[bytes, Hashable], value: T) -> None:
        with contextlib.suppress(KeyError):  # threads share the memo: an entry may go between two steps
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
