"""A pickle's skeleton: its opcodes with every large byte payload stepped over and replaced by a marker.

A pickle of numpy arrays (``paddle.save``, a bare ``pickle.dump`` of a dict of arrays) holds each array's
bytes inline: a ``BINBYTES`` payload (protocol 3 and 4), or, in protocol 2, a ``BINUNICODE`` text that
``_codecs.encode(text, 'latin1')`` turns back into the bytes. To list such a file without reading the arrays,
the opcodes are walked from a buffered window, each payload over ``threshold`` bytes is skipped (its place
recorded as a ``Payload``) and stands in the skeleton as a short ``BINUNICODE`` marker. The skeleton is then a
small pickle of the same structure, unpickled through the allowlist (``safepickle.safe_load``), nothing run;
markers come back as strings that ``payload_of`` maps to their place in the file.

``FRAME`` opcodes (protocol 4 read-ahead hints) are dropped: their lengths would no longer fit.
"""
from __future__ import annotations

import io
import pickletools
import struct
from typing import NamedTuple

from ...errors import FormatError, UnsafeCheckpointError
from ...source import ByteSource

__all__ = ["Payload", "Skeleton", "skeleton", "payload_of", "MAX_SKELETON"]

MAX_SKELETON = 256 << 20  # bytes of structure (names, shapes, dtypes) a pickle may hold besides its payloads
_IN_MEMORY = 4 << 20  # bytes: files up to this are read whole (their payloads too: a few MB at most)
MAX_LINE = 1 << 16  # a text-protocol argument (GLOBAL's module and name, INT, FLOAT ...)
_MARK = "\ue000ckptsurgeon-payload:"  # a private-use character: no real string starts so

# opcode byte -> (name, argument rule): >= 0 a fixed size; -1 a line (two for GLOBAL and INST);
# -2/-3/-4/-5: a 1-byte / signed 4-byte / 4-byte / 8-byte length, then that many bytes; None: no argument.
_OPS = {op.code.encode("latin-1")[0]: (op.name, None if op.arg is None else op.arg.n) for op in pickletools.opcodes}
_LENGTH = {-2: ("<B", 1), -3: ("<i", 4), -4: ("<I", 4), -5: ("<Q", 8)}
_BYTES_OPS = frozenset({"BINBYTES", "BINBYTES8"})  # raw payloads (SHORT_BINBYTES: at most 255 bytes, kept)
_TEXT_OPS = frozenset({"BINUNICODE", "BINUNICODE8"})  # protocol 2's latin-1 text of bytes


class Payload(NamedTuple):
    """A payload left in the file: ``size`` bytes at absolute ``offset``; ``text``: a UTF-8 string's bytes
    (protocol 2), not raw bytes."""

    offset: int
    size: int
    text: bool


class Skeleton(NamedTuple):
    data: bytes  # the pickle without its large payloads
    payloads: list[Payload]
    end: int  # one past the STOP opcode in the file


def _marker(index: int) -> bytes:
    text = f"{_MARK}{index}".encode("utf-8")
    return b"X" + struct.pack("<I", len(text)) + text


def payload_of(value: object, payloads: list[Payload]) -> Payload | None:
    """The payload a skeleton marker stands for; None for any other value."""
    if isinstance(value, str) and value.startswith(_MARK):
        index = value[len(_MARK):]
        if index.isdigit() and int(index) < len(payloads):
            return payloads[int(index)]
    return None


def skeleton(src: ByteSource, *, threshold: int = 256, text_threshold: int = 1024) -> Skeleton:
    """Walk the pickle at the start of ``src``; payloads over ``threshold`` bytes (texts: ``text_threshold``,
    so that names and other strings stay in the skeleton) are stepped over, not read."""
    out = bytearray()
    payloads: list[Payload] = []
    pos, size = 0, src.size
    # a small file in memory at once (one read); a large one through a small buffer, filled anew after each payload
    small = size <= _IN_MEMORY
    with (io.BytesIO(src.read(0, size)) if small else io.BufferedReader(src.window(), 1 << 14)) as fh:

        def take(n: int) -> bytes:
            nonlocal pos
            data = fh.read(n)
            if len(data) != n:
                raise FormatError(f"{src.name}: truncated pickle at byte {pos:,}")
            pos += n
            return data

        while True:
            at = pos
            code = take(1)[0]
            if code not in _OPS:
                raise FormatError(f"{src.name}: malformed pickle: unknown opcode 0x{code:02x} at byte {at:,}")
            name, rule = _OPS[code]
            if rule is None:
                out.append(code)
                if name == "STOP":
                    return Skeleton(bytes(out), payloads, pos)
            elif rule >= 0:
                arg = take(rule)
                if name != "FRAME":
                    out.append(code)
                    out += arg
            elif rule == -1:
                out.append(code)
                for _ in range(2 if name in ("GLOBAL", "INST") else 1):
                    line = fh.readline(MAX_LINE)
                    pos += len(line)
                    if not line.endswith(b"\n"):
                        raise FormatError(f"{src.name}: malformed pickle: {name} at byte {at:,} has no line end")
                    out += line
            else:
                fmt, width = _LENGTH[rule]
                head = take(width)
                (n,) = struct.unpack(fmt, head)
                if n < 0 or n > size - pos:
                    raise FormatError(f"{src.name}: malformed pickle: {name} at byte {at:,} declares {n:,} bytes, "
                                      f"{size - pos:,} are left")
                limit = threshold if name in _BYTES_OPS else text_threshold if name in _TEXT_OPS else None
                if limit is not None and n > limit:
                    payloads.append(Payload(pos, n, name in _TEXT_OPS))
                    out += _marker(len(payloads) - 1)
                    fh.seek(n, io.SEEK_CUR)
                    pos += n
                else:
                    out.append(code)
                    out += head
                    out += take(n)
            if len(out) > MAX_SKELETON:
                raise UnsafeCheckpointError(f"{src.name}: over {MAX_SKELETON:,} bytes of pickle structure; refusing")
