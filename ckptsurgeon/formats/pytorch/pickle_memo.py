"""A small memo of what was found in a pickle's bytes, keyed by those bytes: ``scan`` parses each pickle as it looks
for pickles, and then again as ``ls`` opens the file; the second parse finds the same bytes and the same answer.

Bounded (``MAX_ENTRIES`` pickles of up to ``MAX_BYTES`` each), least recently used first out; only answers that
depend on nothing but the bytes are kept, and callers treat them as read-only.
"""
from __future__ import annotations

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

    def get(self, data: bytes, extra: Hashable, compute: Callable[[], T]) -> T:
        if len(data) > MAX_BYTES or type(data) is not bytes:
            return compute()
        key = (data, extra)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = compute()  # an exception is not remembered: the next call raises it again
        self._entries[key] = value
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
