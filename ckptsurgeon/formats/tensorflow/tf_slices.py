"""Partitioned TF variables: slice keys (OrderedCode) and the slice specs of the full entry."""
from __future__ import annotations

import math
from typing import Any

from ...errors import FormatError, UnsafeCheckpointError
from .. import protowire as pw

__all__ = ["decode_slice_key", "parse_slices"]


def _read_signed(buf: bytes, pos: int) -> tuple[int, int]:
    """OrderedCode ``WriteSignedNumIncreasing`` inverse (tensorflow/core/lib/strings/ordered_code.cc)."""
    if pos >= len(buf):
        raise FormatError("truncated slice key")
    b0 = buf[pos]
    flip = 0x00 if b0 & 0x80 else 0xFF
    x0 = b0 ^ flip
    if x0 != 0xFF:
        length = 8 - (x0 ^ 0xFF).bit_length()  # leading one bits
    else:
        if pos + 1 >= len(buf):
            raise FormatError("truncated slice key")
        length = 8 + 8 - ((buf[pos + 1] ^ flip) ^ 0xFF).bit_length()
    if length < 1 or pos + length > len(buf):
        raise FormatError("malformed slice key")
    stored = int.from_bytes(buf[pos : pos + length], "big")
    bits = 8 * length
    header = ((1 << length) - 1) << (bits - length)
    value = stored & ~header if b0 & 0x80 else (stored | header) - (1 << bits)
    return value, pos + length


def _read_num(buf: bytes, pos: int) -> tuple[int, int]:
    n = buf[pos]
    return int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def decode_slice_key(key: bytes, where: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``EncodeTensorNameSlice``: num(0), escaped name + \\x00\\x01, num(rank), signed start/length pairs."""
    try:
        pos = 1
        name = bytearray()
        while True:
            c = key[pos]
            if c == 0:
                nxt = key[pos + 1]
                pos += 2
                if nxt == 1:
                    break
                name.append(0)  # \x00\xff
            elif c == 0xFF:
                name.append(0xFF)  # \xff\x00
                pos += 2
            else:
                name.append(c)
                pos += 1
        rank, pos = _read_num(key, pos)
        extents = []
        for _ in range(rank):
            start, pos = _read_signed(key, pos)
            length, pos = _read_signed(key, pos)
            extents.append((start, length))
    except IndexError:
        raise FormatError(f"{where}: malformed partitioned-variable key {key[:40]!r}") from None
    return name.decode("utf-8", "replace"), tuple(extents)


def parse_slices(bundle: Any, entry: Any, dtype: Any) -> list[tuple[tuple[tuple[int, int], ...], Any]]:
    """Check every slice against the full shape and find its data entry; returns (extents, entry)."""
    parts = []
    covered = 0
    for raw in entry.slices:
        extents = []
        try:
            specs = [pw.decode(ext) if isinstance(ext, bytes) else None for ext in pw.decode(raw).get(1, [])]
            if None in specs:
                raise FormatError("an extent is a number, not a message")
            specs = [(pw.signed64(pw.first_int(f, 1)), pw.signed64(pw.first_int(f, 2)) if 2 in f else -1) for f in specs]
        except FormatError as exc:
            raise FormatError(f"{bundle.where}: malformed slice spec of {entry.key!r}: {exc}") from None
        for i, (start, length) in enumerate(specs):
            if i >= len(entry.shape):
                raise FormatError(f"{bundle.where}: slice of {entry.key!r} has more dimensions than its shape {list(entry.shape)}")
            full = entry.shape[i]
            if length == -1:
                start, length = 0, full
            if start < 0 or length < 0 or start + length > full:
                raise FormatError(f"{bundle.where}: slice [{start}:{start + length}] of {entry.key!r} lies outside dimension {i} ({full})")
            extents.append((start, length))
        if len(extents) != len(entry.shape):
            raise FormatError(f"{bundle.where}: slice of {entry.key!r} has {len(extents)} dimensions, the shape {len(entry.shape)}")
        key_extents = tuple((s, n if n != entry.shape[i] or s != 0 else n) for i, (s, n) in enumerate(extents))
        part = bundle.slice_entries.get((entry.key, key_extents)) or bundle.slice_entries.get(
            (entry.key, tuple((s, -1) if (s, n) == (0, entry.shape[i]) else (s, n) for i, (s, n) in enumerate(extents))))
        if part is None:
            raise FormatError(f"{bundle.where}: slice {extents} of {entry.key!r} has no data entry")
        shape = tuple(n for _, n in extents)
        if part.shape and part.shape != shape:
            raise FormatError(f"{bundle.where}: slice {extents} of {entry.key!r} stored with shape {list(part.shape)}")
        bundle.check(part._replace(shape=shape), dtype)
        covered += math.prod(shape)
        parts.append((tuple(extents), part))
    if covered != math.prod(entry.shape):
        raise FormatError(f"{bundle.where}: slices of {entry.key!r} cover {covered} of {math.prod(entry.shape)} elements")
    _no_overlap(parts, bundle.where, entry.key)
    return parts


MAX_SLICES = 4096


def _no_overlap(parts: list[tuple[tuple[tuple[int, int], ...], Any]], where: str, key: str) -> None:
    """Slices that cover as many elements as the shape and do not overlap tile it exactly (else some
    elements would be left unset, silently)."""
    if len(parts) > MAX_SLICES:
        raise UnsafeCheckpointError(f"{where}: {key!r} is split into {len(parts)} slices (limit {MAX_SLICES}); refusing")
    for i, (a, _) in enumerate(parts):
        for b, _ in parts[i + 1:]:
            if all(sa < sb + nb and sb < sa + na for (sa, na), (sb, nb) in zip(a, b)):
                raise FormatError(f"{where}: slices {list(a)} and {list(b)} of {key!r} overlap")
