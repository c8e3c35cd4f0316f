"""How formats whose readers are large are recognized, apart from the readers: the first bytes of GGUF, TFLite, Flax
msgpack and ONNX files, the name in a DCP folder. Detection (and ``scan``'s walk of a folder tree) imports a reader
only for what it reads. Each reader re-exports its sniffer from here."""
from __future__ import annotations

from .. import location as loc
from ..errors import FormatError
from .onnx.wire import _varint

__all__ = ["DCP_METADATA", "sniff_dcp_folder", "GGUF_MAGIC", "TFLITE_IDENTIFIER", "ONNX_MODEL_FIELDS", "MAX_ONNX_IR_VERSION", "sniff_gguf", "sniff_tflite",
           "sniff_flax", "sniff_onnx"]

DCP_METADATA = ".metadata"  # the file that makes a folder a PyTorch Distributed Checkpoint
GGUF_MAGIC = b"GGUF"
TFLITE_IDENTIFIER = b"TFL3"  # a TFLite flatbuffer's file identifier, bytes 4-8
# ModelProto fields (onnx.proto) and their wire types; a file must start with ir_version (field 1).
ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
MAX_ONNX_IR_VERSION = 64


def sniff_dcp_folder(path: str) -> bool:
    return loc.isfile(loc.join(path, DCP_METADATA))


def sniff_gguf(head: bytes) -> bool:
    return head.startswith(GGUF_MAGIC)


def sniff_tflite(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER


def sniff_flax(head: bytes) -> bool:
    """A msgpack map of at least one entry whose first key is a string (a state dict's first name)."""
    if len(head) < 2 or not (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return False
    at = 1 if head[0] <= 0x8F else 3 if head[0] == 0xDE else 5
    if at >= len(head):
        return False
    b = head[at]
    if 0xA0 <= b <= 0xBF:
        n, at = b & 0x1F, at + 1
    elif b == 0xD9 and at + 1 < len(head):
        n, at = head[at + 1], at + 2
    else:
        return False
    try:
        head[at:at + n].decode("utf-8")
    except UnicodeDecodeError:
        return at + n > len(head)  # a character cut by the end of ``head``
    return True


def _small_varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """A varint at ``pos``, or None when ``buf`` ends inside it (or it is malformed)."""
    try:
        return _varint(buf, pos, "")
    except FormatError:
        return None


def sniff_onnx(head: bytes, size: int) -> bool:
    """Whether ``head`` (the file's first bytes) starts like a serialized ModelProto.

    protobuf writes fields in number order, so a model starts with ``ir_version`` (tag 0x08, a small
    number); then only ModelProto fields with their wire types may follow, strings must be UTF-8 and
    every length must fit in the file, up to the graph (field 7) or the end of ``head``.
    """
    if len(head) < 4 or head[0] != 0x08:
        return False
    got = _small_varint(head, 1)
    if got is None or not 1 <= got[0] <= MAX_ONNX_IR_VERSION:
        return False
    pos, fields = got[1], 0
    while pos < len(head):
        got = _small_varint(head, pos)
        if got is None:
            return fields > 0
        (_tag, pos), number, wire = got, got[0] >> 3, got[0] & 7
        if ONNX_MODEL_FIELDS.get(number) != wire:
            return False
        got = _small_varint(head, pos)
        if got is None:
            return fields > 0
        value, pos = got
        fields += 1
        if wire == 0:
            continue
        if pos + value > size:
            return False
        if number in (7, 8):
            return True
        text = head[pos:pos + value]
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as exc:
            if pos + value <= len(head) or exc.start < len(text) - 3:  # only a character cut by head's end is fine
                return False
        pos += value
    return fields > 0
