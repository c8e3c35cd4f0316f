"""Where the structure is, per format: field locations to mutate and boundaries to truncate at.

Only ever run on the fuzzer's own (trusted) seeds; mutants are never parsed here.
"""
from __future__ import annotations

import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass

__all__ = ["IntField", "zip_fields", "zip_boundaries", "pickle_ops", "hdf5_fields", "hdf5_boundaries",
           "npy_parts", "safetensors_parts", "legacy_parts", "sstable_blocks"]


@dataclass(frozen=True)
class IntField:
    """A little-endian unsigned integer of ``width`` bytes at ``offset``, with a name for reports."""

    name: str
    offset: int
    width: int


# ---- zip ---------------------------------------------------------------------------------------

_LFH = struct.Struct("<4sHHHHHIIIHH")
_CDH = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")


def zip_fields(data: bytes) -> list[IntField]:
    """Every header field of every member: local headers, central directory, end record."""
    out: list[IntField] = []
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        return out
    names = ("disk", "cd_disk", "n_here", "n_total", "cd_size", "cd_offset", "comment_len")
    widths = (2, 2, 2, 2, 4, 4, 2)
    pos = eocd + 4
    for n, w in zip(names, widths):
        out.append(IntField(f"eocd.{n}", pos, w))
        pos += w
    _, _, _, _, count, cd_size, cd_off, _ = _EOCD.unpack_from(data, eocd)
    pos = cd_off
    cd_names = ("made_by", "needed", "flags", "method", "time", "date", "crc", "csize", "usize", "name_len",
                "extra_len", "comment_len", "disk", "int_attr", "ext_attr", "local_offset")
    cd_widths = (2, 2, 2, 2, 2, 2, 4, 4, 4, 2, 2, 2, 2, 2, 4, 4)
    for i in range(count):
        if data[pos:pos + 4] != b"PK\x01\x02":
            break
        fields = _CDH.unpack_from(data, pos)
        p = pos + 4
        for n, w in zip(cd_names, cd_widths):
            out.append(IntField(f"cd[{i}].{n}", p, w))
            p += w
        local = fields[16]
        lp = local + 4
        for n, w in zip(("needed", "flags", "method", "time", "date", "crc", "csize", "usize", "name_len", "extra_len"),
                        (2, 2, 2, 2, 2, 4, 4, 4, 2, 2)):
            out.append(IntField(f"local[{i}].{n}", lp, w))
            lp += w
        pos += _CDH.size + fields[10] + fields[11] + fields[12]
    return out


def zip_boundaries(data: bytes) -> list[int]:
    cuts = {len(data) - 22, len(data) - 1}
    try:
        with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
            for info in zf.infolist():
                cuts.add(info.header_offset)
                cuts.add(info.header_offset + 30)
        eocd = data.rfind(b"PK\x05\x06")
        cuts.add(_EOCD.unpack_from(data, eocd)[6])
    except Exception:  # noqa: BLE001 - seeds are valid; be lenient anyway
        pass
    return sorted(c for c in cuts if 0 < c < len(data))


# ---- pickle ------------------------------------------------------------------------------------

def pickle_ops(data: bytes) -> list[tuple[str, int, int]]:
    """(opcode name, start, end) of every opcode of the first pickle."""
    ops = list(pickletools.genops(data))
    out = []
    for i, (op, _arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else pos + 1
        out.append((op.name, pos, end))
    return out


def legacy_parts(data: bytes) -> tuple[list[tuple[int, int]], list[IntField]]:
    """A legacy torch file: the spans of its five pickles, and each storage's int64 element count."""
    import io

    spans, pos = [], 0
    stream = io.BytesIO(data)
    for _ in range(5):
        stream.seek(pos)
        end = pos
        for op, _arg, p in pickletools.genops(stream):
            end = p + 1
        spans.append((pos, end))
        pos = end
    counts = []
    keys = __import__("pickle").loads(data[spans[4][0]:spans[4][1]])
    for i, _key in enumerate(keys):
        counts.append(IntField(f"storage[{i}].numel", pos, 8))
        (n,) = struct.unpack_from("<q", data, pos)
        pos += 8 + n * 4  # the seeds hold float32 storages
    return spans, counts


# ---- npy / safetensors -------------------------------------------------------------------------

def npy_parts(data: bytes) -> tuple[int, int, int]:
    """(header length field width, header start, header end)."""
    if data[6] == 1:
        (n,) = struct.unpack_from("<H", data, 8)
        return 2, 10, 10 + n
    (n,) = struct.unpack_from("<I", data, 8)
    return 4, 12, 12 + n


def safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<Q", data, 0)
    return json.loads(data[8:8 + n]), data[8 + n:]


# ---- HDF5 --------------------------------------------------------------------------------------

_SIGNATURES = (b"OHDR", b"OCHK", b"TREE", b"HEAP", b"SNOD", b"BTHD", b"BTIN", b"BTLF", b"FRHP", b"FHDB",
               b"FHIB", b"FSHD", b"FSSE", b"GCOL", b"SMTB", b"SMLI")


def _v1_object_header(data: bytes, addr: int, out: list[IntField]) -> None:
    """Fields of a version-1 object header and of its messages (type, size, flags, first data bytes)."""
    if addr + 16 > len(data) or data[addr] != 1:
        return
    (n_msgs,) = struct.unpack_from("<H", data, addr + 2)
    (size,) = struct.unpack_from("<I", data, addr + 8)
    out += [IntField(f"ohdr@{addr}.n_msgs", addr + 2, 2), IntField(f"ohdr@{addr}.size", addr + 8, 4)]
    pos, end = addr + 16, min(addr + 16 + size, len(data))
    for i in range(min(n_msgs, 64)):
        if pos + 8 > end:
            break
        mtype, msize = struct.unpack_from("<HH", data, pos)
        out += [IntField(f"msg@{pos}.type{mtype}", pos, 2), IntField(f"msg@{pos}.size", pos + 2, 2),
                IntField(f"msg@{pos}.flags", pos + 4, 1)]
        for k in range(0, min(msize, 32), 4):  # the message's first words: versions, lengths, addresses
            out.append(IntField(f"msg@{pos}.t{mtype}+{k}", pos + 8 + k, 4))
        pos += 8 + msize


def _v2_object_header(data: bytes, addr: int, out: list[IntField]) -> None:
    flags = data[addr + 5]
    pos = addr + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 3)
    out += [IntField(f"OHDR@{addr}.flags", addr + 5, 1), IntField(f"OHDR@{addr}.chunk0", pos, width)]
    (size,) = struct.unpack_from({1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width], data, pos)
    pos += width
    end = min(pos + size, len(data))
    for _ in range(64):
        if pos + 4 > end:
            break
        mtype, msize = data[pos], struct.unpack_from("<H", data, pos + 1)[0]
        out += [IntField(f"OHDR.msg@{pos}.type{mtype}", pos, 1), IntField(f"OHDR.msg@{pos}.size", pos + 1, 2),
                IntField(f"OHDR.msg@{pos}.flags", pos + 3, 1)]
        body = pos + 4 + (2 if flags & 0x04 else 0)
        for k in range(0, min(msize, 32), 4):
            out.append(IntField(f"OHDR.msg@{pos}.t{mtype}+{k}", body + k, 4))
        pos = body + msize


def hdf5_fields(data: bytes) -> list[IntField]:
    """Superblock fields, symbol-table entries and the object headers they point at, signatures' headers."""
    out: list[IntField] = []
    base = data.find(b"\x89HDF\r\n\x1a\n")
    if base < 0:
        return out
    version = data[base + 8]
    if version in (0, 1):
        names = ("sb.version", "sb.freespace_v", "sb.root_v", "sb.res", "sb.shared_v", "sb.sizeof_offsets",
                 "sb.sizeof_lengths", "sb.res2")
        out += [IntField(n, base + 8 + i, 1) for i, n in enumerate(names)]
        out += [IntField("sb.leaf_k", base + 16, 2), IntField("sb.internal_k", base + 18, 2),
                IntField("sb.flags", base + 20, 4)]
        p = base + 24 + (4 if version == 1 else 0)
        for n in ("base", "freespace", "eof", "driver"):
            out.append(IntField(f"sb.{n}_addr", p, 8))
            p += 8
        out += [IntField("sb.root.name_off", p, 8), IntField("sb.root.ohdr", p + 8, 8), IntField("sb.root.cache", p + 16, 4)]
        _v1_object_header(data, struct.unpack_from("<Q", data, p + 8)[0], out)
    else:
        out += [IntField("sb.version", base + 8, 1), IntField("sb.sizeof_offsets", base + 9, 1),
                IntField("sb.sizeof_lengths", base + 10, 1), IntField("sb.flags", base + 11, 1)]
        out += [IntField(f"sb.addr{i}", base + 12 + 8 * i, 8) for i in range(4)]
    pos = data.find(b"SNOD")
    while pos >= 0:
        (n,) = struct.unpack_from("<H", data, pos + 6)
        out.append(IntField(f"SNOD@{pos}.n", pos + 6, 2))
        for i in range(min(n, 64)):
            e = pos + 8 + 40 * i
            if e + 40 > len(data):
                break
            out += [IntField(f"SNOD@{pos}[{i}].name", e, 8), IntField(f"SNOD@{pos}[{i}].ohdr", e + 8, 8),
                    IntField(f"SNOD@{pos}[{i}].cache", e + 16, 4)]
            _v1_object_header(data, struct.unpack_from("<Q", data, e + 8)[0], out)
        pos = data.find(b"SNOD", pos + 4)
    for sig in _SIGNATURES:
        pos = data.find(sig)
        while pos >= 0:
            if sig == b"OHDR" and pos + 8 < len(data):
                _v2_object_header(data, pos, out)
            for k in range(4, 28, 4):
                if pos + k + 4 <= len(data):
                    out.append(IntField(f"{sig.decode()}@{pos}+{k}", pos + k, 4))
            pos = data.find(sig, pos + 4)
    return out


def hdf5_boundaries(data: bytes) -> list[int]:
    cuts = {96, 512, len(data) // 2, len(data) - 1}
    for f in hdf5_fields(data):
        cuts.add(f.offset)
    return sorted(c for c in cuts if 0 < c < len(data))


# ---- TensorFlow index (LevelDB table) ----------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def sstable_blocks(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the index block and every data block, from the footer's handles."""
    footer = data[-48:]
    _, p = _varint(footer, 0)
    _, p = _varint(footer, p)
    off, p = _varint(footer, p)
    size, _ = _varint(footer, p)
    blocks = [(off, size)]
    block = data[off:off + size]
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end, pos = len(block) - 4 - 4 * restarts, 0
    while pos < end:
        _, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        pos += unshared
        h_off, q = _varint(block, pos)
        h_size, _ = _varint(block, q)
        blocks.append((h_off, h_size))
        pos += vlen
    return blocks
