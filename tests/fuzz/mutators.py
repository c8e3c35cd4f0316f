"""Mutations, one family per format, aware of each format's structure (``structure.py``).

A mutator takes a seed's files and a ``random.Random`` and returns new files plus a short note of
what it did. Mutators reach inner parsers on purpose: a mutated pickle is put back into a zip with
correct headers, a mutated TF index entry into a table with correct checksums, so the mutation is
not stopped by the outer layer's own checks.
"""
from __future__ import annotations

import io
import json
import pickletools
import random
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

from . import structure as st

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: tf_craft, hostile
import tf_craft  # noqa: E402

warnings.filterwarnings("ignore", module="zipfile")  # mutants with duplicate members are the point

__all__ = ["MUTATORS", "Files", "mutate", "mutate_values"]

Files = dict[str, bytes]  # relative file name -> content

INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 4096, 65535, 65536,
               (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
JSON_VALUES: list = [0, -1, 1, 2**31, 2**32, 2**63, 2**64, 2**64 + 1, 1e308, -0.0, 0.5, "", "F32", "U8", "x",
                     None, True, False, [], {}, [1], [[1]], [-1], [2**64], [0] * 65, [2**32, 2**32], "BF16",
                     [1, 2, 3], {"a": 1}]


# ---- byte-level ----------------------------------------------------------------------------------

def _put_int(data: bytearray, offset: int, width: int, value: int, big: bool = False) -> None:
    if offset + width > len(data):
        return
    data[offset:offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big" if big else "little")


def _interesting_for(width: int, current: int, rng: random.Random, file_size: int) -> int:
    choices = [v for v in INTERESTING if v < 1 << (8 * width)]
    choices += [current + d for d in (-1, 1, -8, 8)] + [file_size + d for d in (-8, -1, 0, 1, 8)]
    choices += [current ^ (1 << rng.randrange(8 * width))]
    return rng.choice(choices)


def mutate_field(data: bytes, fields: list[st.IntField], rng: random.Random) -> tuple[bytes, str]:
    if not fields:
        return flip(data, rng)
    f = rng.choice(fields)
    out = bytearray(data)
    if f.offset + f.width > len(out):
        return flip(data, rng)
    current = int.from_bytes(out[f.offset:f.offset + f.width], "little")
    value = _interesting_for(f.width, current, rng, len(data))
    _put_int(out, f.offset, f.width, value)
    return bytes(out), f"{f.name}={value:#x}"


def flip(data: bytes, rng: random.Random, hot: list[int] | None = None) -> tuple[bytes, str]:
    if not data:
        return b"\x00", "empty->1 byte"
    out = bytearray(data)
    pos = (min(max(rng.choice(hot) + rng.randrange(-8, 24), 0), len(out) - 1) if hot and rng.random() < 0.7
           else rng.randrange(min(len(out), 4096)) if rng.random() < 0.5 else rng.randrange(len(out)))
    kind = rng.randrange(4)
    if kind == 0:
        out[pos] ^= 1 << rng.randrange(8)
    elif kind == 1:
        out[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x40))
    elif kind == 2:
        width = rng.choice((2, 4, 8))
        _put_int(out, pos, width, rng.choice(INTERESTING), big=rng.random() < 0.2)
    else:
        out[pos] = rng.randrange(256)
    return bytes(out), f"byte@{pos}"


def truncate(data: bytes, rng: random.Random, cuts: list[int] | None = None) -> tuple[bytes, str]:
    cut = (rng.choice(cuts) + rng.choice((0, 0, -1, 1))) if cuts and rng.random() < 0.8 else rng.randrange(len(data) + 1)
    cut = max(0, min(cut, len(data)))
    return data[:cut], f"truncate@{cut}"


def splice(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if len(data) < 4:
        return flip(data, rng)
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice((1, 4, 16, 64, 512)))
    kind = rng.randrange(3)
    if kind == 0:
        return data[:a] + data[b:], f"delete[{a}:{b}]"
    if kind == 1:
        c = rng.randrange(len(data))
        return data[:c] + data[a:b] + data[c:], f"dup[{a}:{b}]@{c}"
    return data[:a] + bytes(rng.randrange(256) for _ in range(b - a)) + data[a:], f"insert@{a}"


def generic(data: bytes, rng: random.Random, hot: list[int] | None = None) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.6:
        return flip(data, rng, hot)
    if r < 0.8:
        return truncate(data, rng, hot)
    return splice(data, rng)


# ---- pickle --------------------------------------------------------------------------------------

_CODES = [op.code.encode("latin-1") for op in pickletools.opcodes]
GADGETS = [b"cos\nsystem\n", b"R", b"b", b"ios\nsystem\n", b"\x82\x01", b"\x92", b"\x94", b"2", b"0", b"(", b"1",
           b"h\xff", b"j\xff\xff\xff\x7f", b".", b"P0\n", b"\x8c\x02os\x8c\x06system\x93", b"t", b"\x85", b"s", b"u",
           b"}", b"]", b")", b"N", b"\x88", b"J\xff\xff\xff\xff", b"\x8a\x09" + b"\xff" * 9, b"cbuiltins\nfrozenset\n",
           b"ctorch._utils\n_rebuild_tensor_v2\n", b"ccollections\nOrderedDict\n", b"cnumpy\ndtype\n", b"\x97", b"\x98",
           b"r\xff\xff\xff\x7f", b"raut(", b"p99999999\n", b"q\xff", b"g4294967295\n"]  # memo indices (atheris found these)


def mutate_pickle(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        ops = st.pickle_ops(data)
    except Exception:  # noqa: BLE001 - a seed that is already a mutant
        ops = []
    if not ops or rng.random() < 0.15:
        return generic(data, rng)
    kind = rng.randrange(8)
    name, start, end = rng.choice(ops)
    if kind == 0:  # another opcode byte
        return data[:start] + rng.choice(_CODES) + data[start + 1:], f"op@{start}:{name}->?"
    if kind == 1 and end - start > 1:  # an argument's bytes: lengths, memo indices, numbers
        out = bytearray(data)
        width = min(end - start - 1, rng.choice((1, 2, 4, 8)))
        _put_int(out, start + 1, width, rng.choice(INTERESTING))
        return bytes(out), f"arg@{start}:{name}"
    if kind == 2:  # delete a run of opcodes
        i = ops.index((name, start, end))
        j = min(len(ops) - 1, i + rng.randrange(1, 6))
        return data[:start] + data[ops[j][1]:], f"del-ops@{start}..{ops[j][1]}"
    if kind == 3:  # copy a run of opcodes elsewhere (memo/stack confusion)
        i = ops.index((name, start, end))
        j = min(len(ops) - 1, i + rng.randrange(1, 12))
        at = rng.choice(ops)[1]
        return data[:at] + data[start:ops[j][1]] + data[at:], f"dup-ops@{start}..{ops[j][1]}->{at}"
    if kind == 4:  # a gadget at an opcode boundary
        gadget = rng.choice(GADGETS)
        return data[:start] + gadget + data[start:], f"gadget@{start}:{gadget[:12]!r}"
    if kind == 5:  # a second pickle after STOP
        return data + rng.choice((b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idtR.", b"N.", data)), "second-pickle"
    if kind == 6:  # swap two opcodes
        other = rng.choice(ops)
        a, b = sorted([(start, end), (other[1], other[2])])
        if a[1] > b[0]:
            return generic(data, rng)
        return data[:a[0]] + data[b[0]:b[1]] + data[a[1]:b[0]] + data[a[0]:a[1]] + data[b[1]:], f"swap@{a[0]},{b[0]}"
    return truncate(data, rng, [s for _, s, _ in ops])


# ---- zip containers ------------------------------------------------------------------------------

def _rezip(members: list[tuple[str, bytes, int]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data, method in members:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return out.getvalue()


def _members(data: bytes) -> list[tuple[str, bytes, int]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i), i.compress_type) for i in zf.infolist()]


def mutate_zip(data: bytes, rng: random.Random, inner: Callable[[str, bytes, random.Random], tuple[bytes, str]]) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.3:
        return mutate_field(data, st.zip_fields(data), rng)
    if r < 0.4:
        return truncate(data, rng, st.zip_boundaries(data))
    try:
        members = _members(data)
    except Exception:  # noqa: BLE001
        return generic(data, rng)
    i = rng.randrange(len(members))
    name, content, method = members[i]
    r = rng.random()
    if r < 0.75:
        new, note = inner(name, content, rng)
        members[i] = (name, new, method)
        return _rezip(members), f"{name}: {note}"
    if r < 0.85:
        members[i] = (name, content, zipfile.ZIP_DEFLATED if method == zipfile.ZIP_STORED else zipfile.ZIP_STORED)
        return _rezip(members), f"{name}: recompressed"
    if r < 0.92:
        extra = rng.choice([(name, content), ("../evil", b"x"), (name.split("/")[0] + "/data.pkl", content),
                            ("other/data.pkl", content), (name + "2", content)])
        return _rezip(members + [(extra[0], extra[1], zipfile.ZIP_STORED)]), f"extra member {extra[0]!r}"
    del members[i]
    return _rezip(members), f"dropped {name}"


def inner_member(name: str, content: bytes, rng: random.Random) -> tuple[bytes, str]:
    if name.endswith(".pkl"):
        return mutate_pickle(content, rng)
    if name.endswith(".npy"):
        return mutate_npy(content, rng)
    if name.endswith(".h5"):
        return mutate_hdf5(content, rng)
    if name.endswith(".json"):
        return mutate_json_text(content, rng)
    if "/data/" in name:
        return rng.choice((truncate, splice, flip))(content, rng) if content else (b"\x00", "grow")
    return generic(content, rng)


def mutate_json_text(content: bytes, rng: random.Random) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.2:
        depth = rng.choice((200, 5000, 100000))
        return b"[" * depth + b"]" * depth, f"nested {depth}"
    if r < 0.4:
        return content.replace(b"{", b"{\"a\": 1, \"a\": ", 1), "dup key"
    return generic(content, rng)


# ---- formats -------------------------------------------------------------------------------------

def mutate_npy(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        width, start, end = st.npy_parts(data)
        header = data[start:end].decode("latin-1")
    except Exception:  # noqa: BLE001
        return generic(data, rng)
    r = rng.random()
    body = data[end:]
    if r < 0.45:
        descrs = ["'<f4'", "'|O'", "'<V0'", "'|V2'", "'<f-1'", "'>i8'", "'<U4'", "'|S0'", "'<f16'", "[('a', '<f4')]",
                  "'<c8'", "'bogus'", "'<M8[s]'", "('<f4', (2,))", "[('', '|V4')]", "'|b1'", "[[[[[[[[[[[[]]]]]]]]]]]]"]
        shapes = ["()", "(0,)", f"({2**64},)", "(-1,)", "(" + "1, " * 65 + ")", "(3, 4, 5)", "[3, 4]", "(3.0,)",
                  "('a',)", "(True,)", f"({2**62}, {2**62})", "(0, 18446744073709551616)"]
        fields = {"descr": rng.choice(descrs), "fortran_order": rng.choice(["False", "True", "1", "'x'"]),
                  "shape": rng.choice(shapes)}
        keep = {k: v for k, v in fields.items() if rng.random() < 0.5}
        text = header
        for k, v in keep.items():
            text = __import__("re").sub(rf"'{k}': ([^,]*\)|\[[^\]]*\]|'[^']*'|\w+)", f"'{k}': {v}", text)
        note = f"header {keep}"
    elif r < 0.55:
        text = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }" + " " * rng.choice((1000, 17000, 70000)) + "\n"
        note = "long header"
    elif r < 0.62:
        text = header.replace(")", "L)", 1) + "L" * 3
        note = "python2 header"
    elif r < 0.68:
        text = "{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': ()}"
        note = "code in header"
    else:
        hot = [0, 6, 7, 8, start, end - 1, end]
        return generic(data, rng, hot)
    raw = text.encode("latin-1", "replace")
    version = data[6] if rng.random() < 0.8 else rng.choice((0, 1, 2, 3, 4))
    if len(raw) > 65535 and version == 1:
        version = 2
    length = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return data[:6] + bytes([version, 0]) + length + raw + body, note


def mutate_safetensors(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        header, body = st.safetensors_parts(data)
    except Exception:  # noqa: BLE001
        return generic(data, rng, [0, 8])
    r = rng.random()
    keys = [k for k in header if k != "__metadata__"]
    note = ""
    if r < 0.45 and keys:
        key = rng.choice(keys)
        fieldname = rng.choice(["dtype", "shape", "data_offsets", "extra"])
        header[key][fieldname] = rng.choice(JSON_VALUES)
        note = f"{key}.{fieldname}"
    elif r < 0.55:
        header["__metadata__"] = rng.choice([{"a": 1}, [], "x", {"a": {"b": "c"}}, None])
        note = "metadata"
    elif r < 0.62 and keys:
        del header[rng.choice(keys)]
        note = "dropped a tensor"
    elif r < 0.7:
        depth = rng.choice((100, 3000, 100000))
        text = "{" + f'"deep": {"[" * depth}{"]" * depth}' + "}"
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw + body, f"nested {depth}"
    elif r < 0.76 and keys:
        raw = json.dumps(header).encode()
        raw = raw.replace(f'"{keys[0]}"'.encode(), f'"{keys[-1]}"'.encode(), 1)
        return struct.pack("<Q", len(raw)) + raw + body, "duplicate key"
    elif r < 0.85:
        out = bytearray(data)
        (n,) = struct.unpack_from("<Q", data)
        _put_int(out, 0, 8, rng.choice([0, 1, n - 1, n + 1, n + 8, len(data), len(data) - 7, 2**63, 100_000_001]))
        return bytes(out), "header length"
    else:
        return generic(data, rng, [0, 8, 8 + struct.unpack_from("<Q", data)[0]])
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body, note


def mutate_legacy(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        spans, counts = st.legacy_parts(data)
    except Exception:  # noqa: BLE001
        return generic(data, rng)
    r = rng.random()
    if r < 0.5:
        a, b = spans[3] if rng.random() < 0.7 else rng.choice(spans)
        new, note = mutate_pickle(data[a:b], rng)
        return data[:a] + new + data[b:], f"pickle@{a}: {note}"
    if r < 0.7:
        return mutate_field(data, counts, rng)
    return truncate(data, rng, [p for span in spans for p in span] + [c.offset for c in counts])


def mutate_hdf5(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        fields = st.hdf5_fields(data)
    except Exception:  # noqa: BLE001
        fields = []
    r = rng.random()
    if r < 0.55 and fields:
        return mutate_field(data, fields, rng)
    if r < 0.7:
        return truncate(data, rng, st.hdf5_boundaries(data) if fields else None)
    return generic(data, rng, [f.offset for f in fields])


def mutate_tensorflow(files: Files, rng: random.Random) -> tuple[Files, str]:
    files = dict(files)
    index_name = next(n for n in files if n.endswith(".index"))
    r = rng.random()
    if r < 0.45:
        return _mutate_tf_entries(files, index_name, rng)
    if r < 0.65:
        data = files[index_name]
        try:
            blocks = st.sstable_blocks(data)
        except Exception:  # noqa: BLE001
            blocks = []
        hot = [o for o, _ in blocks] + [len(data) - 48]
        new, note = generic(data, rng, hot)
        if blocks and rng.random() < 0.7:
            new = _recrc(new, blocks)
            note += " (block crcs fixed)"
        files[index_name] = new
        return files, f"index {note}"
    if r < 0.75:
        data = files[index_name]
        footer = [st.IntField(f"footer+{i}", len(data) - 48 + i, 1) for i in range(48)]
        files[index_name], note = mutate_field(data, footer, rng)
        return files, note
    if r < 0.87 and "checkpoint" in files:
        value = rng.choice(["../other/model.ckpt", "/etc/passwd", "model.ckpt\\\\", "\\q", "\\777", "\\xZZ", "a\\0b", "",
                            ".", "model.ckpt\\n", "\\303\\250", "..", "model.ckpt\\x00", "\\" + "\\" * 5])
        files["checkpoint"] = f'model_checkpoint_path: "{value}"\nall_model_checkpoint_paths: "{value}"\n'.encode()
        return files, f"state file {value!r}"
    shard = rng.choice([n for n in files if ".data-" in n])
    files[shard], note = rng.choice((truncate, flip, splice))(files[shard], rng)
    return files, f"{shard} {note}"


def _recrc(data: bytes, blocks: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for off, size in blocks:
        if off + size + 5 <= len(out):
            crc = tf_craft.mask(_crc32c(bytes(out[off:off + size + 1])))
            out[off + size + 1:off + size + 5] = struct.pack("<I", crc)
    return bytes(out)


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return google_crc32c.value(data)


def _mutate_tf_entries(files: Files, index_name: str, rng: random.Random) -> tuple[Files, str]:
    from ckptsurgeon.formats.tensorflow.sstable import read_table  # the seed's own (valid) table

    try:
        pairs = read_table(files[index_name], index_name)
    except Exception:  # noqa: BLE001 - already mutated in an earlier round
        files[index_name], note = generic(files[index_name], rng)
        return files, f"index {note}"
    i = rng.randrange(len(pairs))
    key, value = pairs[i]
    r = rng.random()
    if r < 0.6:
        fields = _proto_fields(value)
        if not fields:
            return mutate_tensorflow(files, rng)
        j = rng.randrange(len(fields))
        number, wire, val = fields[j]
        choice = rng.random()
        if choice < 0.4 and wire == 0:
            val = rng.choice(INTERESTING + [(1 << 64) - 1, (1 << 63) + 5, 1 << 70])
        elif choice < 0.55:
            wire, val = (2, b"\x01\x02") if wire == 0 else (0, 7)  # the wrong wire type
        elif choice < 0.65:
            wire = rng.choice((3, 4, 6, 7))
        elif wire == 2 and isinstance(val, bytes) and val:
            val, _ = generic(val, rng)
        else:
            fields.append((number, wire, val))  # a repeated field
        fields[j] = (number, wire, val)
        value = _encode_fields(fields)
        note = f"entry {key[:30]!r} field {number}"
    elif r < 0.8:
        key = rng.choice([b"\x00" + key, key + b"\xff\xfe", b"\x00\x01\x02", b"", key[:1]])
        note = f"key {key[:20]!r}"
    else:
        value, note = generic(value, rng)
        note = f"entry {key[:30]!r} bytes {note}"
    pairs[i] = (key, value)
    dedup = dict(pairs)
    files[index_name] = tf_craft.table(sorted(dedup.items()))
    return files, note


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    out, pos = [], 0
    try:
        while pos < len(buf):
            tag, pos = st._varint(buf, pos)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                val, pos = st._varint(buf, pos)
            elif wire == 2:
                n, pos = st._varint(buf, pos)
                val, pos = buf[pos:pos + n], pos + n
            elif wire == 5:
                val, pos = buf[pos:pos + 4], pos + 4
            elif wire == 1:
                val, pos = buf[pos:pos + 8], pos + 8
            else:
                return out
            out.append((number, wire, val))
    except IndexError:
        pass
    return out


def _encode_fields(fields: list[tuple[int, int, object]]) -> bytes:
    out = b""
    for number, wire, val in fields:
        out += tf_craft.varint(number << 3 | wire)
        if wire == 0:
            out += tf_craft.varint(int(val))  # type: ignore[arg-type]
        elif wire == 2:
            raw = val if isinstance(val, bytes) else b""
            out += tf_craft.varint(len(raw)) + raw
        elif isinstance(val, bytes):
            out += val
    return out


def mutate_proto(data: bytes, rng: random.Random, depth: int = 0) -> tuple[bytes, str]:
    """A protobuf message (ONNX ModelProto): one field of it or of a nested message, re-encoded."""
    fields = _proto_fields(data)
    if not fields or rng.random() < 0.25:
        return generic(data, rng)
    j = rng.randrange(len(fields))
    number, wire, val = fields[j]
    if wire == 2 and isinstance(val, bytes) and val and depth < 4 and rng.random() < 0.6:
        inner, note = mutate_proto(val, rng, depth + 1)  # a nested message (graph, node, tensor ...)
        fields[j] = (number, wire, inner)
        return _encode_fields(fields), f"field {number} > {note}"
    r = rng.random()
    if wire == 0 and r < 0.5:
        val = rng.choice(INTERESTING + [(1 << 64) - 1])
    elif r < 0.65:
        wire, val = (2, b"\x01\x02") if wire == 0 else (0, 7)
    elif r < 0.75:
        del fields[j]
        return _encode_fields(fields), f"dropped field {number}"
    elif r < 0.85:
        fields.insert(j, (number, wire, val))
    elif wire == 2 and isinstance(val, bytes):
        val = val[: rng.randrange(len(val) + 1)] if val else b"\xff" * rng.choice((1, 64))
    fields[j] = (number, wire, val)
    return _encode_fields(fields), f"field {number} wire {wire}"


def mutate_dcp(files: Files, rng: random.Random) -> tuple[Files, str]:
    files = dict(files)
    if rng.random() < 0.65:
        files[".metadata"], note = mutate_pickle(files[".metadata"], rng)
        return files, f".metadata {note}"
    name = rng.choice([n for n in files if n.endswith(".distcp")])
    files[name], note = generic(files[name], rng, [i for i in range(0, len(files[name]), 512)])
    return files, f"{name} {note}"


def mutate_hf_sharded(files: Files, rng: random.Random) -> tuple[Files, str]:
    files = dict(files)
    index = next(n for n in files if n.endswith(".index.json"))
    if rng.random() < 0.5:
        try:
            doc = json.loads(files[index])
            wmap = doc["weight_map"]
            key = rng.choice(sorted(wmap))
            r = rng.random()
            if r < 0.4:
                wmap[key] = rng.choice(["../evil.safetensors", "/etc/passwd", "missing.bin", "", 5, None,
                                        sorted(set(wmap.values()))[0], index, "a/b.safetensors"])
            elif r < 0.6:
                del wmap[key]
            elif r < 0.75:
                wmap[key + "x"] = wmap[key]
            else:
                doc[rng.choice(["weight_map", "metadata"])] = rng.choice([[], "x", {"a": 1}, None, {"total_size": -1}])
            files[index] = json.dumps(doc).encode()
            return files, f"index {key}"
        except Exception:  # noqa: BLE001 - an earlier round broke the JSON
            files[index], note = mutate_json_text(files[index], rng)
            return files, f"index {note}"
    name = rng.choice([n for n in files if n != index])
    if name.endswith(".safetensors"):
        files[name], note = mutate_safetensors(files[name], rng)
    else:
        files[name], note = mutate_zip(files[name], rng, inner_member)
    return files, f"{name} {note}"


# ---- GGUF ----------------------------------------------------------------------------------------

def _gguf_fields(data: bytes) -> list[st.IntField]:
    """Counts, string lengths, dims, types and offsets of a GGUF header, found by value: every u64 in 1..2**20 and
    every u32 in 0..40 before the first tensor's bytes (the seed's header is a few hundred bytes)."""
    end = min(len(data), 1024)
    out = [st.IntField("version", 4, 4), st.IntField("n_tensors", 8, 8), st.IntField("n_kv", 16, 8)]
    for k in range(24, end - 8):
        (v64,) = struct.unpack_from("<Q", data, k)
        if 1 <= v64 <= 1 << 20:
            out.append(st.IntField(f"u64@{k}", k, 8))
        (v32,) = struct.unpack_from("<I", data, k)
        if v32 <= 40:
            out.append(st.IntField(f"u32@{k}", k, 4))
    return out


def mutate_gguf(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.6:
        return mutate_field(data, _gguf_fields(data), rng)
    if r < 0.75:
        return truncate(data, rng, [f.offset for f in _gguf_fields(data)])
    return generic(data, rng)


# ---- values: inf / nan / 1e38 where the weights are (issue 23) ------------------------------------------------

SPECIALS = tuple(struct.pack("<f", v) for v in (float("inf"), float("-inf"), float("nan"), 1e38, -1e38, 3.4e38, 6.0e4,
                                                1e-45)) + (b"\x01\x00\x80\x7f", b"\x00\x00\xa0\xff")  # signaling NaNs
_SPECIAL_NAMES = ("inf", "-inf", "nan", "1e38", "-1e38", "3.4e38", "6e4", "1e-45", "snan", "-snan")


def _weight_offsets(data: bytes) -> list[int]:
    """Offsets of float32 (little-endian) values that look like weights: 1e-3 <= |x| <= 10."""
    import numpy as np

    out: list[int] = []
    for shift in range(4):
        n = (len(data) - shift) // 4
        if n <= 0:
            continue
        with np.errstate(all="ignore"):  # the bytes are anything: nan and inf among them
            a = np.abs(np.frombuffer(data, "<f4", n, shift).astype(np.float64))
        out += (np.nonzero((a >= 1e-3) & (a <= 10))[0] * 4 + shift).tolist()
    return out


def put_specials(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Overwrite a run of weight-looking float32 values with inf, nan, 1e38 ... (or all of them with one)."""
    offsets = _weight_offsets(data)
    if not offsets:
        return generic(data, rng)
    out = bytearray(data)
    if rng.random() < 0.2:  # every weight-looking value
        k = rng.randrange(len(SPECIALS))
        for off in offsets:
            out[off:off + 4] = SPECIALS[k]
        return bytes(out), f"all {len(offsets)} weights = {_SPECIAL_NAMES[k]}"
    start = rng.choice(offsets)
    picks = [rng.randrange(len(SPECIALS)) for _ in range(rng.choice((1, 2, 4, 16)))]
    for i, k in enumerate(picks):
        if start + 4 * i + 4 <= len(out):
            out[start + 4 * i:start + 4 * i + 4] = SPECIALS[k]
    return bytes(out), f"specials@{start}: {[_SPECIAL_NAMES[k] for k in picks]}"


def mutate_values(fmt: str, files: Files, rng: random.Random) -> tuple[Files, str]:
    """``put_specials`` into a seed's tensor bytes: zip members rewritten (so their CRCs still hold), other files in
    place. TensorFlow data files carry a crc32c per tensor in the index: those go through their own mutator."""
    if fmt == "tensorflow":
        return MUTATORS[fmt](files, rng)
    name = rng.choice(sorted(files))
    data = files[name]
    if data[:2] == b"PK":
        try:
            members = _members(data)
        except Exception:  # noqa: BLE001
            return {**files, name: put_specials(data, rng)[0]}, "specials (not a zip)"
        weights = [k for k, m in enumerate(members) if "data/" in m[0] or m[0].endswith((".npy", ".h5"))]
        i = rng.choice(weights) if weights else rng.randrange(len(members))
        member, content, method = members[i]
        new, note = put_specials(content, rng)
        members[i] = (member, new, method)
        return {**files, name: _rezip(members)}, f"{name}/{member}: {note}"
    new, note = put_specials(data, rng)
    return {**files, name: new}, f"{name}: {note}"


def _json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_paths(v, (*path, i))


def mutate_json_tree(content: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Parse the JSON and replace one value (or drop one key) anywhere in it; byte-level if it does not parse."""
    try:
        doc = json.loads(content)
    except ValueError:
        return mutate_json_text(content, rng)
    paths = [p for p in _json_paths(doc) if p]
    if not paths:
        return json.dumps(rng.choice(JSON_VALUES)).encode(), "root replaced"
    path = rng.choice(paths)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[path[-1]]
        return json.dumps(doc).encode(), f"del {'/'.join(map(str, path))[-60:]}"
    value = rng.choice(JSON_VALUES) if rng.random() < 0.7 else rng.choice([p[-1] for p in paths])
    parent[path[-1]] = value
    return json.dumps(doc).encode(), f"{'/'.join(map(str, path))[-60:]}={json.dumps(value)[:20]}"


def _is_json(name: str, data: bytes) -> bool:
    return data[:1] in (b"{", b"[") or name.endswith((".json", ".zarray", "_METADATA", "_sharding"))


def mutate_folder(files: Files, rng: random.Random) -> tuple[Files, str]:
    """A file inside a checkpoint folder (an Orbax step, a paddle.jit pair): JSON metadata parsed and changed, binary
    files (OCDBT manifests, zarr chunks, .pdiparams) hit byte-wise; now and then one file dropped or emptied."""
    name = rng.choice(sorted(files))
    data, r = files[name], rng.random()
    if r < 0.06 and len(files) > 1:
        return {n: d for n, d in files.items() if n != name}, f"{name}: removed"
    if r < 0.1:
        return {**files, name: b""}, f"{name}: emptied"
    if _is_json(name, data):
        new, note = mutate_json_tree(data, rng) if rng.random() < 0.7 else mutate_json_text(data, rng)
    else:
        new, note = generic(data, rng)
    return {**files, name: new}, f"{name}: {note}"


def _single(mutator: Callable[[bytes, random.Random], tuple[bytes, str]]):
    def run(files: Files, rng: random.Random) -> tuple[Files, str]:
        (name, data), = files.items()
        new, note = mutator(data, rng) if rng.random() < 0.85 else generic(data, rng)
        return {name: new}, note

    return run


MUTATORS: dict[str, Callable[[Files, random.Random], tuple[Files, str]]] = {
    "safetensors": _single(mutate_safetensors),
    "pytorch": _single(lambda d, r: mutate_zip(d, r, inner_member)),
    "pytorch-legacy": _single(mutate_legacy),
    "torchscript": _single(lambda d, r: mutate_zip(d, r, inner_member)),
    "pickle": _single(mutate_pickle),
    "npy": _single(mutate_npy),
    "npz": _single(lambda d, r: mutate_zip(d, r, inner_member)),
    "hdf5": _single(mutate_hdf5),
    "keras": _single(lambda d, r: mutate_zip(d, r, inner_member)),
    "tensorflow": mutate_tensorflow,
    "onnx": _single(mutate_proto),
    "dcp": mutate_dcp,
    "hf-sharded": mutate_hf_sharded,
    "gguf": _single(mutate_gguf),
    "flax": _single(generic),  # msgpack: byte flips, truncations, length fields hit at random
    "paddle": _single(mutate_pickle),  # a pickle of arrays
    "tflite": _single(generic),  # a flatbuffer: offsets and counts hit at random
    "orbax": mutate_folder,
    "paddle-jit": mutate_folder,
}


def mutate(fmt: str, files: Files, rng: random.Random, rounds: int | None = None,
           values: float = 0.0) -> tuple[Files, str]:
    """One to three mutations of ``files`` (a seed of format ``fmt``), each one with probability ``values`` a
    ``mutate_values`` (inf/nan/1e38 into the weights)."""
    notes = []
    for _ in range(rounds or rng.choice((1, 1, 1, 2, 3))):
        try:
            if values and rng.random() < values:
                files, note = mutate_values(fmt, files, rng)
            else:
                files, note = MUTATORS[fmt](files, rng)
        except Exception as exc:  # noqa: BLE001 - a structure parser choking on an earlier round's mutant
            name = rng.choice(sorted(files))
            new, note = generic(files[name], rng)
            files = {**files, name: new}
            note = f"{note} (after {type(exc).__name__})"
        notes.append(note)
    return files, "; ".join(notes)
