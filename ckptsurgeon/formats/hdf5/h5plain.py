"""A plain HDF5 file's metadata read in this process, in Python: what ``h5probe.describe`` would answer, or None.

"Plain" is what h5py writes by default and every Keras/h5py checkpoint we have met is: superblock 0 or 1 at byte 0,
version 1 object headers, symbol-table groups and compact (link message) groups, contiguous and compact datasets of
integers, IEEE floats, booleans and strings, attributes of those, soft links. Anything else (chunks, filters,
dense storage, shared messages, version 2 headers, compound or enum types, external links, user blocks, a bound
reached, a structure that does not add up) answers None, and libhdf5 reads the file in a child process as before
(``h5tree.describe_file``). The answer is ``describe``'s JSON exactly: tests/test_h5plain.py compares the two on
every HDF5 fixture and on files h5py writes from generated trees.

Every read is bounded by the image's size and by ``MAX_META_BYTES``; nothing is followed out of the file.
"""
from __future__ import annotations

import struct
from typing import Any

from ...dtype_lite import LiteDtype, from_typestr, python_values
from ...errors import CheckpointError
from ...source import ByteSource
from .h5probe import MAX_ATTR_ELEMENTS, MAX_DEPTH

__all__ = ["describe_plain", "MAX_META_BYTES"]

MAX_META_BYTES = 16 << 20  # metadata read for one file before giving it to libhdf5
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_WHOLE = 1 << 20  # images up to this size are read in one go; larger ones a page at a time
_PAGE = 1 << 12  # a local file's page; a remote one's is 64 KiB (one ranged request each)
_REMOTE_PAGE = 1 << 16
_MAX_CONTINUATIONS = 4096
_MAX_STRING = 1 << 20  # bytes of one fixed-length string
_MAX_OBJECTS = 50_000  # groups, datasets and links read here (about a second of Python at most)
_MAX_TOUCHED = 256 << 20  # bytes of structures read (the same bytes counted each time)
_MAX_PRODUCED = 16 << 20  # text bytes, and 16 a number, in one description (a Keras model_config: some 100 KB)
_UNDEF = 0xFFFFFFFFFFFFFFFF  # an undefined address

# object header message types (HDF5 spec IV.A.2)
_NIL, _DATASPACE, _LINK_INFO, _DATATYPE, _FILL_OLD, _FILL, _LINK, _EXTERNAL, _LAYOUT = 0, 1, 2, 3, 4, 5, 6, 7, 8
_GROUP_INFO, _FILTERS, _ATTRIBUTE, _CONTINUATION, _SYMBOL_TABLE, _MOD_TIME, _ATTR_INFO = 10, 11, 12, 16, 17, 18, 21
_IGNORED = frozenset({_NIL, _FILL_OLD, _FILL, _GROUP_INFO, _MOD_TIME})  # checked as libhdf5 decodes them, not used
_UNREAD = frozenset({13, 14, 15, 19, 20, 22, 23})  # comments, old times, tables, K values, refcounts ...: libhdf5's
_MSG_PLAIN_FLAGS = 0x01 | 0x04 | 0x08 | 0x80  # constant, not to be shared, fail if unknown


class _Unplain(Exception):
    """The file is not plain in the sense above: libhdf5 reads it."""


class _Image:
    """The HDF5 image's bytes, read a page at a time (the whole image when small), bounded."""

    def __init__(self, src: ByteSource, offset: int, size: int) -> None:
        self.src, self.base, self.size = src, offset, size
        self.pages: dict[int, bytes] = {}
        self.page = _PAGE if src.local_path is not None else _REMOTE_PAGE
        self.spent = self.touched = 0
        if size <= _WHOLE:
            self.whole: bytes | None = bytes(src.read(offset, size))
            self.spent = size
        else:
            self.whole = None

    def read(self, at: int, n: int) -> bytes:
        if at < 0 or n < 0 or at + n > self.size:
            raise _Unplain(f"{n} bytes at {at} lie past the end")
        self.touched += n  # structures that overlap or repeat (headers sharing bytes) are read again: bounded
        if self.touched > _MAX_TOUCHED:
            raise _Unplain("structures read over and over")
        if self.whole is not None:
            return self.whole[at:at + n]
        size = self.page
        first, last = at // size, (at + n - 1) // size if n else at // size
        if first == last:
            page = self._page(first)
            return page[at - first * size:at - first * size + n]
        return b"".join(self._page(p) for p in range(first, last + 1))[at - first * size:][:n]

    def _page(self, number: int) -> bytes:
        page = self.pages.get(number)
        if page is None:
            start = number * self.page
            length = min(self.page, self.size - start)
            self.spent += length
            if self.spent > MAX_META_BYTES:
                raise _Unplain("too much metadata")
            page = self.pages[number] = bytes(self.src.read(self.base + start, length))
        return page


class _Reader:
    """Structures of one image: superblock 0/1 fields, object headers, groups, heaps."""

    def __init__(self, image: _Image) -> None:
        self.img = image
        head = image.read(0, 24)
        if head[:8] != _SIGNATURE or head[8] not in (0, 1) or head[9:13] != b"\0\0\0\0" or head[15] or head[20:24] != b"\0" * 4:
            raise _Unplain("not a closed version 0/1 superblock at byte 0")
        self.so, self.sl = head[13], head[14]
        leaf_k, node_k = struct.unpack_from("<HH", head, 16)
        if not leaf_k or not node_k:
            raise _Unplain("a B-tree K of 0")
        # libhdf5 reads whole nodes, as large as K makes them
        self.snod_size, self.snod_max = 8 + 2 * leaf_k * 40, 2 * leaf_k
        self.tree_size, self.tree_max = 24 + 2 * node_k * 16 + 8, 2 * node_k
        if self.so != 8 or self.sl != 8:
            raise _Unplain("offsets or lengths not of 8 bytes")
        at = 24 + (4 if head[8] == 1 else 0)
        base, free, eof, driver = struct.unpack_from("<4Q", image.read(at, 32))
        if base != 0 or eof > image.size or free != _UNDEF or driver != _UNDEF:
            raise _Unplain("a base address, a truncated image, free-space or driver information")
        image.size = eof  # libhdf5 reads nothing past the end address the superblock states
        entry = image.read(at + 32, 40)
        self.root, cache = struct.unpack_from("<QI", entry, 8)
        self.global_heaps: dict[int, dict[int, bytes]] = {}
        self.cached: dict[int, bytes] = {}  # object address -> the symbol table its entry caches
        self.produced = 0  # bytes and elements of the description so far (``spend``)
        if cache == 1:
            self.cached[self.root] = entry[24:40]
        elif cache:
            raise _Unplain("a root entry")
        self.local_heaps: dict[int, bytes] = {}

    def address(self, data: bytes, at: int) -> int | None:
        value = struct.unpack_from("<Q", data, at)[0]
        return None if value == _UNDEF else value

    # ----------------------------------------------------------------- object headers
    def messages(self, addr: int) -> list[tuple[int, bytes]]:
        """Every message of the version 1 object header at ``addr``, continuations included, as (type, data)."""
        img = self.img
        head = img.read(addr, 16)
        if head[0] != 1:
            raise _Unplain("an object header other than version 1")
        count, _refs, size = struct.unpack_from("<HII", head, 2)
        blocks = [(addr + 16, size)]
        out: list[tuple[int, bytes]] = []
        hops, visited = 0, {addr + 16}
        while blocks:  # every message of every block, as libhdf5 decodes them, then their number checked
            start, length = blocks.pop(0)
            data = img.read(start, length)
            at = 0
            if length % 8:
                raise _Unplain("a block not aligned")
            while at < length:
                kind, msize, flags = struct.unpack_from("<HHB", data, at)
                body = data[at + 8:at + 8 + msize]
                if len(body) != msize or msize % 8:
                    raise _Unplain("a message past its block or not aligned")
                at += 8 + msize
                if len(out) >= count:
                    raise _Unplain("more messages than the header counts")
                if flags & ~_MSG_PLAIN_FLAGS:
                    raise _Unplain("a shared, shareable or unknown-marked message")
                if kind == _CONTINUATION:
                    hops += 1
                    block = struct.unpack_from("<QQ", body)
                    if hops > _MAX_CONTINUATIONS or not block[1] or block[0] in visited:
                        raise _Unplain("continuations")
                    visited.add(block[0])
                    blocks.append(block)
                elif kind in _IGNORED:
                    _check_ignored(kind, body)
                elif kind in _UNREAD or kind == _FILTERS:  # (a contiguous dataset has no filters)
                    raise _Unplain(f"message type {kind}")
                elif kind not in _KNOWN and flags & (0x08 | 0x80):
                    raise _Unplain(f"message type {kind} that must be understood")
                out.append((kind, body))
        if len(out) != count:
            raise _Unplain("not the number of messages the header counts")
        return out

    def object(self, addr: int) -> list[tuple[int, bytes]]:
        """``messages``; the symbol table a symbol table entry caches for it (libhdf5 may use that one) its own."""
        msgs = self.messages(addr)
        cached = self.cached.get(addr)
        tables = [b for k, b in msgs if k == _SYMBOL_TABLE]
        if cached is not None and tables and cached not in tables:  # (a group turned new-style keeps a stale one)
            raise _Unplain("a symbol table entry caching another group's B-tree or heap")
        return msgs

    # ----------------------------------------------------------------- groups
    def links(self, msgs: list[tuple[int, bytes]]) -> list[tuple[bytes, str, Any]] | None:
        """A group's links sorted by name as (raw name, "hard"|"soft", address|target); None: not a group."""
        kinds = {k for k, _ in msgs}
        if _SYMBOL_TABLE in kinds:
            if _LINK_INFO in kinds or _LINK in kinds:
                raise _Unplain("a group of both kinds")
            body = next(b for k, b in msgs if k == _SYMBOL_TABLE)
            btree, heap = struct.unpack_from("<QQ", body)
            out = self._symbol_links(btree, self._local_heap(heap))
        elif _LINK_INFO in kinds:
            body = next(b for k, b in msgs if k == _LINK_INFO)
            if body[0] != 0 or body[1]:
                raise _Unplain("link info version or creation order")
            at = 2 + (8 if body[1] & 1 else 0)
            if self.address(body, at) is not None:
                raise _Unplain("dense link storage")
            out = [self._link(b) for k, b in msgs if k == _LINK]
        else:
            if _LINK in kinds:
                raise _Unplain("links outside a group")
            return None
        out.sort(key=lambda link: link[0])
        if any(a[0] == b[0] for a, b in zip(out, out[1:])):
            raise _Unplain("a name twice")
        return out

    def _local_heap(self, addr: int) -> bytes:
        heap = self.local_heaps.get(addr)
        if heap is None:
            head = self.img.read(addr, 32)
            if head[:4] != b"HEAP" or head[4] != 0:
                raise _Unplain("a local heap")
            size, free, data = struct.unpack_from("<QQQ", head, 8)
            heap = self.local_heaps[addr] = self.img.read(data, size)
            _check_free_list(heap, free)
        return heap

    def _heap_text(self, heap: bytes, at: int) -> bytes:
        """The NUL-ended text at ``at`` of a local heap (a name, a key, a soft link's target), counted (``spend``)."""
        end = heap.find(b"\0", at)
        if at >= len(heap) or end < 0:
            raise _Unplain("a name past its heap")
        return self.spend(heap[at:end])

    def _symbol_links(self, btree: int, heap: bytes) -> list[tuple[bytes, str, Any]]:
        """The links under a group B-tree, level by level. Each name is where libhdf5's lookup finds it (a node's
        keys bracket the names below it: left < name <= right; a leaf's names are sorted), and each level's nodes
        are chained left to right by their sibling addresses."""
        level: list[tuple[int, bytes | None, bytes]] = [(btree, None, b"")]  # (node, low key, high key)
        seen: set[int] = set()
        height: int | None = None
        while True:
            below: list[tuple[int, bytes | None, bytes]] = []
            leaves: list[tuple[int, bytes, bytes]] = []
            for i, (addr, low, high) in enumerate(level):
                if addr in seen or len(seen) > 1 << 16:
                    raise _Unplain("a B-tree that loops")
                seen.add(addr)
                head = self.img.read(addr, 24)
                if head[:4] != b"TREE" or head[4] != 0:
                    raise _Unplain("a group B-tree node")
                depth, used = head[5], struct.unpack_from("<H", head, 6)[0]
                left, right = self.address(head, 8), self.address(head, 16)
                if used > self.tree_max or addr + self.tree_size > self.img.size:
                    raise _Unplain("a B-tree node larger than K allows or past the end")
                if (height is not None and depth != height - 1) or depth > 64 or (depth and not used) or \
                        left != (level[i - 1][0] if i else None) or \
                        right != (level[i + 1][0] if i + 1 < len(level) else None):
                    raise _Unplain("a B-tree whose nodes do not chain")
                body = self.img.read(addr + 24, used * 16 + 8)
                keys = [self._heap_text(heap, struct.unpack_from("<Q", body, 16 * k)[0]) for k in range(used + 1)]
                children = [struct.unpack_from("<Q", body, 8 + 16 * k)[0] for k in range(used)]
                if (low is not None and (keys[0] < low or keys[-1] > high)) or \
                        any(a > b for a, b in zip(keys, keys[1:])):  # libhdf5 finds a name by binary search
                    raise _Unplain("B-tree keys out of order")
                pairs = [(children[k], keys[k], keys[k + 1]) for k in range(used)]
                (below if depth else leaves).extend(pairs)  # type: ignore[arg-type]
            height = depth
            if not depth:
                break
            level = below
        out: list[tuple[bytes, str, Any]] = []
        for node, low_key, high_key in leaves:
            names = self._symbol_node(node, heap)
            if any(not low_key < name <= high_key for name, _, _ in names) or \
                    any(a[0] >= b[0] for a, b in zip(names, names[1:])):
                raise _Unplain("names a lookup would not find")
            out.extend(names)
            if len(out) > _MAX_OBJECTS:
                raise _Unplain("too many links")
        return out

    def _symbol_node(self, addr: int, heap: bytes) -> list[tuple[bytes, str, Any]]:
        head = self.img.read(addr, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise _Unplain("a symbol table node")
        count = struct.unpack_from("<H", head, 6)[0]
        if count > self.snod_max or addr + self.snod_size > self.img.size:
            raise _Unplain("a symbol table node larger than K allows or past the end")
        data = self.img.read(addr + 8, count * 40)
        out: list[tuple[bytes, str, Any]] = []
        for i in range(count):
            name_at, obj, cache = struct.unpack_from("<QQI", data, 40 * i)
            name = self._heap_text(heap, name_at)
            if cache == 2:
                target = self._heap_text(heap, struct.unpack_from("<I", data, 40 * i + 24)[0])
                out.append((name, "soft", target))
            elif cache in (0, 1) and obj != _UNDEF:
                if cache == 1:  # libhdf5 uses the B-tree and heap addresses cached here: they must be the group's
                    self.cached[obj] = data[40 * i + 24:40 * i + 40]
                out.append((name, "hard", obj))
            else:
                raise _Unplain("a symbol table entry")
        return out

    def _link(self, body: bytes) -> tuple[bytes, str, Any]:
        if body[0] != 1:
            raise _Unplain("link message version")
        flags, at = body[1], 2
        kind = 0
        if flags & 0x08:
            kind, at = body[at], at + 1
        if flags & 0x04:
            at += 8
        if flags & 0x10:
            if body[at] > 1:
                raise _Unplain("a link name character set")
            at += 1
        width = 1 << (flags & 3)
        size = int.from_bytes(body[at:at + width], "little")
        at += width
        name = body[at:at + size]
        at += size
        if len(name) != size or not size:
            raise _Unplain("a link name")
        if kind == 0:
            return name, "hard", struct.unpack_from("<Q", body, at)[0]
        if kind == 1:
            length = struct.unpack_from("<H", body, at)[0]
            return name, "soft", self.spend(body[at + 2:at + 2 + length])
        raise _Unplain("an external or user-defined link")

    # ----------------------------------------------------------------- global heap (variable-length data)
    def vlen(self, length: int, collection: int, index: int) -> bytes:
        if collection == 0 and length == 0:  # a null value (libhdf5 reads no heap for it)
            return b""
        objects = self.global_heaps.get(collection)
        if objects is None:
            head = self.img.read(collection, 16)
            if head[:4] != b"GCOL" or head[4] != 1:
                raise _Unplain("a global heap collection")
            size = struct.unpack_from("<Q", head, 8)[0]
            if size < 4096:  # libhdf5's least collection ("global heap size is too small")
                raise _Unplain("a global heap collection under 4096 bytes")
            objects = self.global_heaps[collection] = _collection(self.img.read(collection, size))
        value = objects.get(index)
        if value is None or len(value) != length:  # libhdf5 refuses a size that does not match
            raise _Unplain("a variable-length value missing from its heap")
        return self.spend(value[:length].split(b"\0", 1)[0])  # h5py reads it as a C string

    def spend(self, value: bytes, elements: int = 0) -> bytes:
        """``value`` (text made from the file) and ``elements`` (numbers), counted against what one description may
        hold: values shared by many references (one heap object, one soft-link target) are each counted."""
        self.produced += len(value) + 16 * elements  # a number as a Python object: tens of bytes
        if self.produced > _MAX_PRODUCED:
            raise _Unplain("a description larger than the plain reader makes")
        return value


def _check_ignored(kind: int, body: bytes) -> None:
    """Messages not needed here that libhdf5 decodes when it opens the object: as long as they say they are."""
    need = 0
    if kind == _FILL:
        version = body[0]
        if version in (1, 2):
            need = 8 + struct.unpack_from("<I", body, 4)[0] if version == 1 or body[3] else 4
        elif version == 3:
            if body[1] & ~0x3F or body[1] & 0x30 == 0x30:  # libhdf5's "unknown flag", "value and undefined value"
                raise _Unplain("fill value flags")
            need = 6 + struct.unpack_from("<I", body, 2)[0] if body[1] & 0x20 else 2
        else:
            raise _Unplain("fill value version")
    elif kind == _FILL_OLD:
        need = 4 + struct.unpack_from("<I", body)[0]
    elif kind == _GROUP_INFO:
        if body[0] or body[1] > 3:
            raise _Unplain("group info version or flags")
        need = 2 + (4 if body[1] & 1 else 0) + (4 if body[1] & 2 else 0)
    elif kind == _MOD_TIME:
        if body[0] != 1:
            raise _Unplain("modification time version")
        need = 8
    if need > len(body):
        raise _Unplain(f"message type {kind} shorter than it says")


def _collection(data: bytes) -> dict[int, bytes]:
    """A global heap collection's objects by index, walked over its whole size as libhdf5 walks it: a free-space
    object of size 0 (libhdf5 loops forever on it) or objects past the end are not plain."""
    objects: dict[int, bytes] = {}
    at, size = 16, len(data)
    while at < size:
        if at + 16 > size:
            return objects  # too small for an object header: free space to the end
        number, _refs, osize = struct.unpack_from("<HH4xQ", data, at)
        if number:
            need = 16 + (osize + 7) // 8 * 8
            if at + 16 + osize > size or number in objects:
                raise _Unplain("a global heap object past its collection")
            objects[number] = data[at + 16:at + 16 + osize]
        elif at + osize != size or osize % 8:  # one free-space object, the last (of size 0 libhdf5 loops on it)
            raise _Unplain("a global heap's free space")
        else:
            need = osize
        at += need
    if at != size:
        raise _Unplain("a global heap that does not add up")
    return objects


def _check_free_list(heap: bytes, free: int) -> None:
    """A local heap's free list, followed as libhdf5 follows it: aligned blocks of at least 16 bytes inside the
    heap, without a cycle."""
    seen = set()
    while free != 1:  # H5HL_FREE_NULL
        if free in seen or free % 8 or free + 16 > len(heap):
            raise _Unplain("a local heap free list")
        seen.add(free)
        after, size = struct.unpack_from("<QQ", heap, free)
        if size < 16 or free + size > len(heap) or (after != 1 and after <= free):
            raise _Unplain("a local heap free block")
        free = after


_KNOWN = frozenset({_DATASPACE, _LINK_INFO, _DATATYPE, _LINK, _EXTERNAL, _LAYOUT, _ATTRIBUTE,
                    _CONTINUATION, _SYMBOL_TABLE, _ATTR_INFO})


# --------------------------------------------------------------------- types and spaces
class _Type:
    """A datatype this reader decodes: numbers (``dtype``), fixed or variable-length text (``name``: numpy's
    ``str`` of the dtype h5py gives it)."""

    def __init__(self, dtype: LiteDtype | None, size: int, text: str | None = None, pad: int = 1,
                 name: str = "") -> None:
        self.dtype, self.size, self.text, self.pad = dtype, size, text, pad  # text: "fixed" | "vlen" | None
        self.name = str(dtype) if dtype is not None else name


def _number(typestr: str, size: int) -> _Type:
    dtype = from_typestr(typestr)
    assert dtype is not None
    return _Type(dtype, size)


def _datatype(body: bytes) -> _Type:
    cls, version = body[0] & 0x0F, body[0] >> 4
    bits = body[1] | body[2] << 8 | body[3] << 16
    size = struct.unpack_from("<I", body, 4)[0]
    order = ">" if bits & 1 else "<"
    if version not in (1, 2, 3):
        raise _Unplain("datatype version")
    if cls == 0:  # fixed-point
        offset, precision = struct.unpack_from("<HH", body, 8)
        if size not in (1, 2, 4, 8) or offset or precision != 8 * size or bits & ~0x09:
            raise _Unplain("an integer of unusual bits")
        return _number(f"{order if size > 1 else '|'}{'i' if bits & 8 else 'u'}{size}", size)
    if cls == 1:  # IEEE floats as numpy has them
        if (size, bits & 0xFFFFFE, body[8:20]) not in _IEEE:
            raise _Unplain("a float that is not IEEE half/single/double")
        return _number(f"{order}f{size}", size)
    if cls == 3:  # fixed-length string
        if not 1 <= size <= _MAX_STRING or bits >> 4 & 0x0F > 1 or bits & 0x0F > 2:
            raise _Unplain("a string type")
        return _Type(None, size, "fixed", bits & 0x0F, name=f"|S{size}")
    if cls == 8 and bits == 2 and size == 1 and body[8:8 + len(_BOOL_ENUM)] == _BOOL_ENUM:  # h5py's bool: enum FALSE=0, TRUE=1 of int8
        return _number("|b1", 1)
    if cls == 9 and size == 16 and bits & 0x0F == 1 and (bits >> 8 & 0x0F) <= 1:  # variable-length string
        chars = _datatype(body[8:]).dtype
        if body[8] & 0x0F or chars is None or chars.str not in ("|u1", "|i1"):  # its characters: bytes
            raise _Unplain("a variable-length string of other characters")
        return _Type(None, 16, "vlen", name="object")
    raise _Unplain(f"datatype class {cls}")


_IEEE = {
    (2, 0x0F20, struct.pack("<HHBBBBI", 0, 16, 10, 5, 0, 10, 15)),
    (4, 0x1F20, struct.pack("<HHBBBBI", 0, 32, 23, 8, 0, 23, 127)),
    (8, 0x3F20, struct.pack("<HHBBBBI", 0, 64, 52, 11, 0, 52, 1023)),
}
# base type int8 (class 0 v1, signed, size 1, offset 0, precision 8), names FALSE/TRUE padded to 8, values 0 and 1
_BOOL_ENUM = (bytes([0x10, 0x08, 0, 0]) + struct.pack("<IHH", 1, 0, 8) + b"FALSE\0\0\0TRUE\0\0\0\0" + b"\x00\x01")


def _dataspace(body: bytes) -> tuple[int, ...]:
    """The dims of a scalar (``()``) or simple dataspace; a null one is not plain."""
    version, rank, flags = body[0], body[1], body[2]
    if version == 1:
        at = 8
    elif version == 2:
        if body[3] > 1 or (body[3] == 0 and rank):
            raise _Unplain("a null, unknown or ranked scalar dataspace")
        at = 4
    else:
        raise _Unplain("dataspace version")
    if rank > 32:
        raise _Unplain("a dataspace rank")
    dims = struct.unpack_from(f"<{rank}Q", body, at)
    if flags & 2:
        raise _Unplain("a permuted dataspace")
    if flags & 1:  # libhdf5 refuses a dim over its maximum (all ones: unlimited)
        top = struct.unpack_from(f"<{rank}Q", body, at + 8 * rank)
        if any(d > m for d, m in zip(dims, top)):
            raise _Unplain("a dim over its maximum")
    return tuple(dims)


def _count(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


# --------------------------------------------------------------------- values
def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unplain(f"{what} is not UTF-8") from None


def _unpad(raw: bytes, pad: int) -> bytes:
    """A fixed-length string as h5py reads it: libhdf5 converts null-terminated and space-padded strings to
    null-padded ones (cut at the first NUL; trailing spaces dropped), then numpy drops trailing NULs."""
    if pad == 0:
        return raw.split(b"\0", 1)[0]
    return (raw.rstrip(b" ") if pad == 2 else raw).rstrip(b"\0")


def _values(reader: _Reader, kind: _Type, dims: tuple[int, ...], data: bytes, what: str) -> Any:
    """An attribute's value as ``h5probe._attr_value`` makes it."""
    n = _count(dims)
    if n > MAX_ATTR_ELEMENTS:
        raise _Unplain("a large attribute")
    if len(data) < n * kind.size:
        raise _Unplain("attribute data shorter than its type and space")
    reader.spend(b"", n)
    if kind.text == "fixed":
        texts = [_text(reader.spend(_unpad(data[i * kind.size:(i + 1) * kind.size], kind.pad)), what) for i in range(n)]
    elif kind.text == "vlen":
        texts = [_text(reader.vlen(*struct.unpack_from("<IQI", data, 16 * i)), what) for i in range(n)]
    else:
        assert kind.dtype is not None
        flat = python_values(kind.dtype, data, n)
        assert flat is not None  # _datatype makes only integers, IEEE floats and bools
        return flat[0] if not dims else _nest(flat, dims)
    return texts[0] if not dims else texts


def _nest(flat: list[Any], dims: tuple[int, ...]) -> list[Any]:
    """``flat`` (C order) as nested lists of ``dims``, as numpy's ``reshape(dims).tolist()``."""
    if len(dims) == 1:
        return flat
    step = _count(dims[1:])
    return [_nest(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]


def _attributes(reader: _Reader, msgs: list[tuple[int, bytes]], owner: str) -> dict[str, Any]:
    for kind, body in msgs:
        if kind == _ATTR_INFO:
            at = 2 + (2 if body[1] & 1 else 0)
            if body[0] != 0 or reader.address(body, at) is not None:
                raise _Unplain("dense attribute storage")
    found: list[tuple[bytes, Any]] = []
    for kind, body in msgs:
        if kind != _ATTRIBUTE:
            continue
        version = body[0]
        if version not in (1, 2, 3) or body[1]:  # 2 and 3 flag shared types/spaces; 1 pads its parts to 8 bytes
            raise _Unplain("attribute version or sharing")
        nsize, tsize, ssize = struct.unpack_from("<HHH", body, 2)
        at = 9 if version == 3 else 8
        if version == 3 and body[8] > 1:
            raise _Unplain("attribute name encoding")
        pad = (lambda n: (n + 7) // 8 * 8) if version == 1 else (lambda n: n)
        raw = body[at:at + nsize]
        if nsize < 2 or not raw.endswith(b"\0") or b"\0" in raw[:-1]:  # libhdf5: "decoded name length is invalid"
            raise _Unplain("an attribute name")
        if at + pad(nsize) + pad(tsize) + pad(ssize) > len(body):
            raise _Unplain("an attribute's parts past its message")
        at += pad(nsize)
        dtype = _datatype(body[at:at + tsize])
        at += pad(tsize)
        dims = _dataspace(body[at:at + ssize])
        at += pad(ssize)
        found.append((raw[:-1], (dtype, dims, body[at:])))
    found.sort(key=lambda item: item[0])
    out: dict[str, Any] = {}
    for raw, (dtype, dims, data) in found:
        name = _text(raw, "an attribute name")
        if name in out:
            raise _Unplain("an attribute twice")
        out[name] = _values(reader, dtype, dims, data, f"attribute {name!r} of {owner}")
    return out


def _dataset(reader: _Reader, msgs: list[tuple[int, bytes]], name: str) -> dict[str, Any]:
    by: dict[int, bytes] = {}
    for number, body in msgs:
        if number in by and number in (_DATATYPE, _DATASPACE, _LAYOUT):
            raise _Unplain("a message twice")
        by.setdefault(number, body)
    if _EXTERNAL in by:
        raise _Unplain("external storage")
    kind = _datatype(by[_DATATYPE])
    dims = _dataspace(by[_DATASPACE])
    layout = by[_LAYOUT]
    if layout[0] not in (3, 4):
        raise _Unplain("layout version")
    nbytes = _count(dims) * kind.size
    if nbytes >= 1 << 64:
        raise _Unplain("a dataset size that overflows")
    if layout[1] == 1:  # contiguous
        addr = reader.address(layout, 2)
        size = struct.unpack_from("<Q", layout, 10)[0]
        offset, storage = (None, 0) if addr is None else (addr, size)
        if addr is not None and (not addr or not nbytes or size != nbytes or addr + size > reader.img.size):
            raise _Unplain("contiguous data libhdf5 refuses")  # its H5D__contig_check, and a size that disagrees
    elif layout[1] == 0:  # compact
        offset, storage = None, struct.unpack_from("<H", layout, 2)[0]
        if storage != nbytes or 4 + storage > len(layout):
            raise _Unplain("compact data of another size")
    else:
        raise _Unplain("chunked or virtual layout")
    numeric = kind.dtype is not None and kind.text is None
    return {"kind": "dataset", "name": name, "virtual": False, "external": False,
            "dtype": kind.dtype.str if numeric and kind.dtype is not None else None, "dtype_text": kind.name,
            "shape": list(dims), "chunks": None,
            "filters": 0, "storage": storage, "offset": offset,
            "attrs": _attributes(reader, msgs, name)}


# --------------------------------------------------------------------- the walk
def _name(raw: bytes) -> str:
    name = _text(raw, "a link name")
    if "/" in name or name in (".", ""):
        raise _Unplain("a link name")
    return name


def _walk(reader: _Reader, size: int) -> dict[str, Any]:
    """``h5probe.describe``'s walk: depth first, a group's links in name order, datasets where they are met."""
    max_objects = min(_MAX_OBJECTS, max(10_000, size // 8))  # more: libhdf5, under its child's time limit
    objects: list[dict[str, Any]] = []
    seen: dict[int, tuple[str, dict[str, Any]]] = {}
    root = reader.object(reader.root)
    stack: list[tuple[str, list[tuple[int, bytes]], int]] = [("/", root, 0)]
    seen[reader.root] = ("/", {"kind": "group"})
    while stack:
        path, msgs, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Unplain("deep groups")
        links = reader.links(msgs)
        if links is None:
            raise _Unplain("a group that is not one")
        entry: dict[str, Any] = {"kind": "group", "name": path, "attrs": _attributes(reader, msgs, path), "links": []}
        objects.append(entry)
        children = []
        for raw, kind, value in links:
            name = _name(raw)
            if len(objects) + len(entry["links"]) > max_objects:
                raise _Unplain("many objects")
            full = path.rstrip("/") + "/" + name
            if kind == "soft":
                entry["links"].append([name, "soft", _text(value, "a soft link")])
                continue
            entry["links"].append([name, "hard"])
            if value in seen:
                if seen[value][1]["kind"] != "dataset":
                    raise _Unplain("a shared group or a cycle")  # libhdf5's reading words the refusal
                objects.append(dict(seen[value][1], name=full))
                continue
            child = reader.object(value)
            kinds = {k for k, _ in child}
            if _SYMBOL_TABLE in kinds or _LINK_INFO in kinds:
                seen[value] = (full, {"kind": "group"})
                children.append((full, child, depth + 1))
            elif _LAYOUT in kinds or _DATASPACE in kinds:
                desc = _dataset(reader, child, full)
                objects.append(desc)
                seen[value] = (full, desc)
            else:
                raise _Unplain("a committed datatype or an unknown object")
        stack.extend(reversed(children))
    return {"objects": objects}


def describe_plain(src: ByteSource, offset: int, size: int) -> dict[str, Any] | None:
    """``h5probe.describe``'s answer for the HDF5 image of ``size`` bytes at ``offset`` of ``src`` if it is plain,
    else None (libhdf5 reads it)."""
    try:
        return _walk(_Reader(_Image(src, offset, size)), size)
    except (_Unplain, struct.error, IndexError, ValueError, KeyError, StopIteration, CheckpointError, TypeError,
            OverflowError, RecursionError, MemoryError):
        return None
