"""TensorFlow checkpoints (tensor bundle V2) read without TensorFlow.

``<prefix>.index`` is a LevelDB table: key "" holds a BundleHeaderProto, every other key a
BundleEntryProto (dtype, shape, shard, offset, size, masked crc32c, slices). Tensor bytes live in
``<prefix>.data-NNNNN-of-MMMMM``. Every read verifies the entry's crc32c.
"""
from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any, NamedTuple

import google_crc32c

from ...dtype_lite import LiteDtype
from ...dtypes import TF_DTYPES, TF_STRING, tf_dtype_name
from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, lazy_sha256
from ...scopes import join_path
from ...source import is_url, open_source
from .. import protowire as pw
from .sstable import MAX_INDEX, mask, read_table
from .tf_paths import resolve_prefix
from .tf_slices import decode_slice_key, parse_slices

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["read", "read_strings"]

FORMAT = "tensorflow"
ATTR_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
MAX_BYTES = 1 << 62
MAX_STRING_READ = 65536  # string tensors up to this size are shown in metadata when listing

# TF1 optimizer slot variables: <var>/<slot>; and optimizer bookkeeping at the top level.
_TF1_SLOTS = re.compile(r"^(Adam|Adam_\d+|AdamW(_\d+)?|Momentum|RMSProp(_\d+)?|Adagrad|AdagradDA(_\d+)?|"
                        r"Adadelta(_\d+)?|Ftrl(_\d+)?|ProximalAdagrad|ExponentialMovingAverage)$")
_TF1_OPT_VARS = re.compile(r"^(beta1_power|beta2_power|global_step)(_\d+)?$")


class Entry(NamedTuple):
    """One BundleEntryProto (a named tuple: 10,000 of them are made per listing)."""

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    slices: tuple[bytes, ...]


def _dim(raw: bytes) -> int:
    """TensorShapeProto.Dim's size; nearly always encoded as ``08 <one-byte varint>`` (or empty: 0)."""
    if len(raw) == 2 and raw[0] == 0x08 and raw[1] < 0x80:
        return raw[1]
    return pw.signed64(pw.first_int(pw.decode(raw), 1)) if raw else 0


_SHAPES: dict[bytes, tuple[int, ...]] = {}  # TensorShapeProto bytes -> dims: checkpoints repeat a few shapes


def _shape(raw: bytes, where: str, key: str) -> tuple[int, ...]:
    dims = _SHAPES.get(raw)
    if dims is None:
        dims = _decode_shape(raw, f"{where}: {key!r}")
        if len(_SHAPES) < 4096:
            _SHAPES[raw] = dims
    return dims


def _decode_shape(raw: bytes, where: str) -> tuple[int, ...]:
    fields = pw.decode(raw)
    if pw.first_int(fields, 3):
        raise FormatError(f"{where}: tensor of unknown rank")
    dims = tuple(_dim(_bytes(d)) for d in fields.get(2, ()))
    if any(d < 0 for d in dims):
        raise FormatError(f"{where}: negative dimension in shape {list(dims)}")
    return dims


def _bytes(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise FormatError("a length-delimited protobuf field holds a number")
    return bytes(value)


def _entry(key: str, raw: bytes, where: str) -> Entry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6 (fixed32), slices 7.

    One pass with fast paths for one-byte tags and varints (10,000 entries in a few tens of ms); a
    repeated scalar field keeps its last value, unknown fields are skipped, like protobuf does.
    """
    ints = [0, 0, 0, 0, 0, 0]  # index = field number 1..5
    shape, crc, slices = b"", None, []
    pos, end = 0, len(raw)
    read = pw.read_varint
    while pos < end:
        tag = raw[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read(raw, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            if pos < end and raw[pos] < 0x80:
                value, pos = raw[pos], pos + 1
            else:
                value, pos = read(raw, pos)
            if number < 6:
                ints[number] = value
        elif wire == 2:
            if pos < end and raw[pos] < 0x80:
                length, pos = raw[pos], pos + 1
            else:
                length, pos = read(raw, pos)
            if pos + length > end:
                raise FormatError("truncated length-delimited field")
            if number == 2:
                shape = raw[pos : pos + length]
            elif number == 7:
                slices.append(raw[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise FormatError("truncated fixed32")
            if number == 6:
                crc = int.from_bytes(raw[pos : pos + 4], "little")
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise FormatError("truncated fixed64")
            pos += 8
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
    return Entry(key, ints[1], _shape(shape, where, key), ints[3], pw.signed64(ints[4]),
                 pw.signed64(ints[5]), crc, tuple(slices))


def _unescape(component: str) -> str:
    return re.sub(r"\.(.)", lambda m: {".": ".", "S": "/"}.get(m.group(1), m.group(0)), component)


def scope_path(key: str) -> str:
    """TF1 keys as they are; TF2 object keys without the attribute suffix, escapes undone."""
    if key.endswith(ATTR_SUFFIX):
        key = key[: -len(ATTR_SUFFIX)]
        return join_path(_unescape(c) for c in key.split("/"))
    if key and "//" not in key and key[0] != "/" and key[-1] != "/":
        return key  # no empty component: the path is the key
    return join_path(key.split("/"))


def _is_optimizer(key: str, path: str, names: set[str]) -> bool:
    if path.startswith("optimizer/") or "/.OPTIMIZER_SLOT/" in key:
        return True
    head, _, last = key.rpartition("/")
    if head and last[:1] in _SLOT_INITIALS and _TF1_SLOTS.match(last) and head in names:
        return True
    return key[:1] in "bg" and _TF1_OPT_VARS.match(key) is not None


_SLOT_INITIALS = frozenset("AMREFP")  # first letters of the _TF1_SLOTS names: most keys skip the regex


class _Bundle:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        index_path = prefix + ".index"
        self.where = index_path
        src = open_source(index_path)
        if src.size > MAX_INDEX:
            raise UnsafeCheckpointError(f"{index_path}: index of {src.size} bytes is over the 1 GiB limit; refusing")
        raw = bytes(src.read(0, src.size))
        self.index_sha256 = lazy_sha256(raw)
        pairs = read_table(raw, index_path)
        if not pairs or pairs[0][0] != b"":
            raise FormatError(f"{index_path}: missing bundle header entry")
        try:
            header = pw.decode(pairs[0][1])
            self.num_shards = pw.first_int(header, 1, 1)
            self.byteorder = ">" if pw.first_int(header, 2) == 1 else "<"
        except FormatError as exc:
            raise FormatError(f"{index_path}: malformed bundle header: {exc}") from None
        if not 1 <= self.num_shards <= 100_000:
            raise FormatError(f"{index_path}: implausible shard count {self.num_shards}")
        self.entries: dict[str, Entry] = {}
        self.slice_entries: dict[tuple[str, tuple], Entry] = {}
        key = ""
        try:
            for raw_key, value in pairs[1:]:
                if raw_key[:1] == b"\x00":
                    key, extents = decode_slice_key(raw_key, index_path)
                    self.slice_entries[(key, extents)] = _entry(key, value, index_path)
                else:
                    key = raw_key.decode("utf-8", "replace")
                    self.entries[key] = _entry(key, value, index_path)
        except FormatError as exc:
            if str(exc).startswith(index_path):
                raise
            raise FormatError(f"{index_path}: malformed entry for tensor {key!r}: {exc}") from None
        self._sizes: dict[int, tuple[str, int]] = {}  # shard id -> (path, size)

    def shard(self, shard_id: int, key: str) -> tuple[str, int]:
        known = self._sizes.get(shard_id)
        if known is not None:
            return known
        if not 0 <= shard_id < self.num_shards:
            raise FormatError(f"{self.where}: tensor {key!r} names shard {shard_id}, but there are {self.num_shards}")
        path = f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"
        try:
            self._sizes[shard_id] = path, open_source(path).size
        except FormatError as exc:
            raise FormatError(f"{path}: data shard missing or unreadable (tensor {key!r}): {exc}") from None
        return self._sizes[shard_id]

    def check(self, e: Entry, dtype: np.dtype | LiteDtype | None) -> str:
        """Validate offsets, sizes and shape of an entry; returns its shard file."""
        path, size = self.shard(e.shard, e.key)
        if e.offset < 0 or e.size < 0 or e.offset + e.size > size:
            raise FormatError(f"{path}: tensor {e.key!r} at bytes {e.offset}..{e.offset + e.size} runs past the shard ({size} bytes)")
        numel = 1
        for d in e.shape:
            numel *= d
        if dtype is not None:
            if numel * dtype.itemsize > MAX_BYTES:
                raise UnsafeCheckpointError(f"{self.where}: tensor {e.key!r} shape {list(e.shape)} overflows")
            if numel * dtype.itemsize != e.size:
                raise FormatError(f"{self.where}: tensor {e.key!r}: shape {list(e.shape)} x {dtype.name} needs "
                                  f"{numel * dtype.itemsize} bytes, the entry says {e.size}")
        return path

    def read_bytes(self, e: Entry, verify: bool = True) -> bytes:
        path, _ = self.shard(e.shard, e.key)
        data = open_source(path).read(e.offset, e.size)
        if verify and e.crc is not None and mask(google_crc32c.value(bytes(data))) != e.crc:  # it takes bytes only
            raise FormatError(f"{path}: crc32c mismatch for tensor {e.key!r}: the data shard is corrupted")
        return data


def _numeric_loader(bundle: _Bundle, e: Entry, dtype: LiteDtype):
    def load() -> np.ndarray:
        return np.frombuffer(bundle.read_bytes(e), dtype=dtype.resolve()).reshape(e.shape)

    return load


def _partitioned_loader(bundle: _Bundle, e: Entry, lite: LiteDtype, parts: list[tuple[tuple, Entry]]):
    def load() -> np.ndarray:
        dtype = lite.resolve()
        full = np.empty(e.shape, dtype=dtype)
        for extents, part in parts:
            index = tuple(slice(s, s + n) for s, n in extents)
            full[index] = np.frombuffer(bundle.read_bytes(part), dtype=dtype).reshape([n for _, n in extents])
        return full

    return load


def read_strings(bundle: _Bundle, e: Entry) -> list[bytes]:
    """A string tensor: varint64 lengths, masked crc32c of the lengths, then the bytes.

    The entry's crc32c covers each length as a little-endian uint32, the 4 stored checksum
    bytes, then the strings (checked against TF-written files in the tests).
    """
    data = bundle.read_bytes(e, verify=False)
    numel = 1
    for d in e.shape:
        numel *= d
    if numel > len(data):  # every string needs at least its one-byte length
        raise FormatError(f"{bundle.where}: string tensor {e.key!r} of {numel} strings holds only {len(data)} bytes")
    pos, lengths, crc = 0, [], 0
    for _ in range(numel):
        try:
            n, pos = pw.read_varint(data, pos)
        except FormatError as exc:
            raise FormatError(f"{bundle.where}: string tensor {e.key!r}: {exc}") from None
        lengths.append(n)
        crc = google_crc32c.extend(crc, struct.pack("<I", n & 0xFFFFFFFF))
    if pos + 4 + sum(lengths) != len(data):
        raise FormatError(f"{bundle.where}: string tensor {e.key!r} lengths disagree with its size")
    if e.crc is not None and mask(google_crc32c.extend(crc, bytes(data[pos:]))) != e.crc:
        raise FormatError(f"{bundle.where}: crc32c mismatch for string tensor {e.key!r}: the data shard is corrupted")
    pos += 4
    out = []
    for n in lengths:
        out.append(data[pos : pos + n])
        pos += n
    return out


def _strings_metadata(values: list[bytes]) -> Any:
    return [v.decode("utf-8") if _is_text(v) else "0x" + v.hex() for v in values]


def _is_text(value: bytes) -> bool:
    try:
        return value.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


def _object_graph(raw: bytes) -> list[dict[str, str]]:
    """TrackableObjectGraph -> [{checkpoint_key, full_name}] (variables' names at save time)."""
    out = []
    for node in pw.decode(raw).get(1, []):
        for attr in pw.decode(_bytes(node)).get(2, []):
            fields = pw.decode(_bytes(attr))
            key = pw.first_bytes(fields, 3).decode("utf-8", "replace")
            name = pw.first_bytes(fields, 2).decode("utf-8", "replace")
            if key:
                out.append({"checkpoint_key": key, "full_name": name})
    return out


# Children of a TF2 object that list variables again (tf.Module / Keras layers track them in lists, and a
# SavedModel names every variable by such a list: ``variables/0``); a variable's path is taken from its
# owning layer instead, the path ``save_weights`` gives it (``layer_with_weights-0/cell/kernel``).
_LISTS = frozenset({"variables", "trainable_variables", "non_trainable_variables", "keras_api", "_variables",
                    "_trainable_variables", "_non_trainable_variables", "signatures", "_default_save_signature"})
MAX_GRAPH_NODES = 1_000_000


def object_paths(raw: bytes) -> dict[str, str]:
    """checkpoint_key -> the variable's path in the object graph (breadth first from the root, not through
    the variable lists above), for keys whose own path goes through such a list."""
    nodes = [pw.decode(_bytes(n)) for n in pw.decode(raw).get(1, [])[:MAX_GRAPH_NODES]]
    paths: dict[int, str] = {0: ""}
    queue = [0]
    for node_id in queue:
        for child in nodes[node_id].get(1, []) if node_id < len(nodes) else []:
            ref = pw.decode(_bytes(child))
            target, name = pw.first_int(ref, 1), pw.first_bytes(ref, 2).decode("utf-8", "replace")
            if target in paths or name in _LISTS or not 0 <= target < len(nodes):
                continue
            paths[target] = f"{paths[node_id]}/{name}" if paths[node_id] else name
            queue.append(target)
    out: dict[str, str] = {}
    for node_id, path in paths.items():
        for attr in nodes[node_id].get(2, []):
            fields = pw.decode(_bytes(attr))
            key = pw.first_bytes(fields, 3).decode("utf-8", "replace")
            if key and path and key.split("/", 1)[0] in _LISTS:
                out[key] = path
    return out


def _graph_paths(bundle: _Bundle) -> dict[str, str]:
    """Object-graph paths for variables that a SavedModel keys by list position (``variables/3``)."""
    e = bundle.entries.get(OBJECT_GRAPH)
    if e is None or e.dtype != TF_STRING or not any(k.split("/", 1)[0] in _LISTS for k in bundle.entries):
        return {}
    values = read_strings(bundle, e)
    try:
        return object_paths(values[0]) if values else {}
    except FormatError as exc:
        raise FormatError(f"{bundle.where}: malformed object graph: {exc}") from None


def read(path: str, **_: Any) -> CheckpointIndex:
    prefix = resolve_prefix(path)
    if prefix is None:
        raise FormatError(f"{path}: not a TensorFlow checkpoint (no .index file found)")
    bundle = _Bundle(prefix)
    builder = IndexBuilder(bundle.where)
    metadata: dict[str, Any] = {}
    names = set(bundle.entries)
    ordered: dict[int, LiteDtype] = {}  # TF dtype code -> its dtype in the bundle's byte order
    renamed = _graph_paths(bundle)
    for key, e in bundle.entries.items():
        path_ = renamed.get(key) or scope_path(key)
        if e.dtype == TF_STRING:
            bundle.check(e, None)
            if key != OBJECT_GRAPH and e.size > MAX_STRING_READ:  # listing stays lazy: big vocabularies are not read
                metadata[path_] = f"<string tensor {list(e.shape)}, {e.size} bytes>"
                continue
            values = read_strings(bundle, e)
            if key == OBJECT_GRAPH and values:
                try:
                    metadata["object_graph"] = _object_graph(values[0])
                except FormatError as exc:
                    raise FormatError(f"{bundle.where}: malformed object graph: {exc}") from None
            else:
                metadata[path_] = _strings_metadata(values)
            continue
        dtype = TF_DTYPES.lite(e.dtype)
        if dtype is None:
            metadata[path_] = f"<{tf_dtype_name(e.dtype)} tensor, not readable as an array>"
            continue
        if dtype.itemsize > 1:
            dtype = ordered.get(e.dtype) or ordered.setdefault(e.dtype, dtype.newbyteorder(bundle.byteorder))
        optimizer = _is_optimizer(key, path_, names)
        if e.slices:
            parts = parse_slices(bundle, e, dtype)
            builder.add(TensorRef(path_, key, dtype, e.shape, bundle.where, optimizer=optimizer,
                                  loader=_partitioned_loader(bundle, e, dtype, parts)))
        else:
            shard = bundle.check(e, dtype)
            builder.add(TensorRef(path_, key, dtype, e.shape, shard, e.offset, None, optimizer,
                                  _numeric_loader(bundle, e, dtype), False))
    if prefix.endswith("/variables/variables") and not is_url(prefix):  # a SavedModel: tf.keras states its layers
        from .keras_metadata import read_keras_metadata

        metadata.update(read_keras_metadata(prefix[: -len("/variables/variables")]))
    files = [bundle.where] + [f"{prefix}.data-{i:05d}-of-{bundle.num_shards:05d}" for i in range(bundle.num_shards)]
    return CheckpointIndex(builder.refs, format=FORMAT, files=files, metadata=metadata, key_sep="/",
                           header_sha256=bundle.index_sha256)
