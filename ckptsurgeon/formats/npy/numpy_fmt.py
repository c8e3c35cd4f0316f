"""numpy ``.npz`` archives and ``.npy`` files, read without pickle (object arrays are refused)."""
from __future__ import annotations

import ast
import json
import math
import os
import re
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...dtype_lite import ML_NAMES, LiteDtype, from_typestr
from ...errors import FormatError, OutputError, UnsafeCheckpointError
from ...index import CheckpointIndex, IndexBuilder, TensorRef, check_shape
from ...scopes import join_path, split_key
from ...source import open_source
from ..tree import is_optimizer_path
from ..zipsafe import SafeZip

if TYPE_CHECKING:
    import numpy as np
else:
    from ...lazy import numpy as np

__all__ = ["sniff_npy", "sniff_names", "parse_header", "header_length", "member_header", "read_npz", "read_npy", "write_npz"]

NPY_MAGIC = b"\x93NUMPY"


def sniff_npy(head: bytes) -> bool:
    return head.startswith(NPY_MAGIC)


def sniff_names(names: list[str]) -> bool:
    return bool(names) and all(n.endswith(".npy") for n in names)


MAX_HEADER = 16384  # numpy writes a few hundred bytes for any plain array; never parse a long one


def parse_header(head: bytes, where: str, allow_object: bool = False) -> tuple[np.dtype | LiteDtype, tuple[int, ...], bool, int]:
    """Parse a .npy header from its first bytes; returns dtype, shape, fortran order, header length.

    Not numpy's parser: that one falls back to Python's tokenizer on headers that are not literals,
    which a crafted header drives into minutes of work. Here the header is bounded first, then read
    with ``ast.literal_eval`` only.
    """
    if not head.startswith(NPY_MAGIC) or len(head) < 10:
        raise FormatError(f"{where}: not a .npy file (bad magic)")
    major = head[6]
    if major == 1:
        (n,), start, encoding = struct.unpack_from("<H", head, 8), 10, "latin1"
    elif major in (2, 3) and len(head) >= 12:
        (n,), start, encoding = struct.unpack_from("<I", head, 8), 12, "latin1" if major == 2 else "utf-8"
    else:
        raise FormatError(f"{where}: unsupported .npy version {major}.{head[7]}")
    if n > MAX_HEADER:
        raise UnsafeCheckpointError(f"{where}: .npy header of {n} bytes (a plain array needs a few hundred; "
                                    f"limit {MAX_HEADER}); refusing")
    if start + n > len(head):
        raise FormatError(f"{where}: truncated .npy header ({n} bytes declared)")
    key = (bytes(head[:start + n]), allow_object)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse_text(head, start, n, encoding, where, allow_object)
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def header_length(head: bytes) -> int:
    """How many bytes the header starting ``head`` takes (magic, version, length, text), by its first 12 bytes;
    0 when they do not tell (``parse_header`` says why)."""
    if len(head) >= 10 and head[6] == 1:
        return 10 + int(struct.unpack_from("<H", head, 8)[0])
    if len(head) >= 12 and head[6] in (2, 3):
        return 12 + int(struct.unpack_from("<I", head, 8)[0])
    return 0


_FIRST = 512  # bytes of a member read for its header first (numpy writes 128 for a plain array)


def member_header(zf: SafeZip, name: str) -> bytes:
    """The first bytes of an archive's ``.npy`` member, enough for ``parse_header``: of a stored member a few hundred,
    then up to ``MAX_HEADER`` when its header is longer (its tensor bytes are not read to list it); of a compressed
    one up to ``MAX_HEADER`` at once (a member that small is inflated to its end, its size and CRC-32 checked)."""
    member = zf.members[name]
    size = member.size
    if not member.stored:
        return zf.read_head(name, min(size, MAX_HEADER + 12))
    head = zf.read_head(name, min(size, _FIRST))
    if len(head) < min(size, MAX_HEADER + 12) and header_length(head) > len(head):
        head = zf.read_head(name, min(size, MAX_HEADER + 12))
    return head


# headers parsed, by their bytes (scan reads an archive's headers by content, then opens it as ls does)
_PARSED: dict[tuple[bytes, bool], tuple[np.dtype | LiteDtype, tuple[int, ...], bool, int]] = {}


def _parse_text(head: bytes, start: int, n: int, encoding: str, where: str,
                allow_object: bool) -> tuple[np.dtype | LiteDtype, tuple[int, ...], bool, int]:
    try:
        text = head[start:start + n].decode(encoding)
        d = _plain_header(text) or ast.literal_eval(text)
    except (SyntaxError, ValueError, UnicodeDecodeError, MemoryError, RecursionError, TypeError) as exc:
        raise FormatError(f"{where}: invalid .npy header: {type(exc).__name__}") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise FormatError(f"{where}: invalid .npy header: not a dict of descr, fortran_order, shape")
    shape, fortran = d["shape"], d["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
        raise FormatError(f"{where}: invalid .npy header: shape {str(shape)[:80]}")
    if not isinstance(fortran, bool):
        raise FormatError(f"{where}: invalid .npy header: fortran_order {str(fortran)[:20]}")
    descr = d["descr"]
    try:
        dtype = _lite_descr(descr) or np.lib.format.descr_to_dtype(descr)
    except Exception as exc:  # noqa: BLE001 - numpy's dtype parser raises SyntaxError, TypeError ... on odd strings
        raise FormatError(f"{where}: invalid .npy header: descr {str(d['descr'])[:80]}: {type(exc).__name__}") from None
    if dtype.hasobject and not allow_object:
        raise UnsafeCheckpointError(f"{where}: object array (needs pickle); refusing")
    return dtype, tuple(shape), fortran, start + n


_OBJECT = ("|O", "O")  # an object array's descr as numpy writes it (its pickle follows the header)


def _lite_descr(descr: Any) -> LiteDtype | None:
    """The dtype of a plain descr without numpy: a numeric type string, an object array's, or an ml_dtypes name
    (numpy knows those only once ml_dtypes is imported: read alike in every process). None: numpy parses it."""
    if type(descr) is not str:
        return None
    if descr in _OBJECT:
        return LiteDtype("object")
    return LiteDtype(descr) if descr in ML_NAMES else from_typestr(descr)


# The header numpy writes for a plain array, e.g. "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }":
# read without the parser. Anything else (structured dtypes, other spacing) goes to ``ast.literal_eval``.
_DIM = r"(?:0|[1-9][0-9]{0,17})"  # longer numbers: the parser (Python's own limits and messages)
_PLAIN_HEADER = re.compile(r"\{'descr': '([^'\\\n\r\x00]*)', 'fortran_order': (True|False), "
                           rf"'shape': \((|{_DIM},|{_DIM}(?:, {_DIM})+,?)\), \}} *\n?")


def _plain_header(text: str) -> dict[str, Any] | None:
    """The header's dict when it is exactly as numpy writes it (what ``ast.literal_eval`` would give), else None."""
    m = _PLAIN_HEADER.fullmatch(text)
    if m is None:
        return None
    descr, fortran, dims = m.groups()
    return {"descr": descr, "fortran_order": fortran == "True",
            "shape": tuple(int(x) for x in dims.split(",") if x.strip())}


def _fortran_stride(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(shape) < 2:
        return None
    stride, acc = [], 1
    for n in shape:
        stride.append(acc)
        acc *= n
    return tuple(stride)


def _key_sep(keys: list[str]) -> str:
    return "/" if any("/" in k for k in keys) and not any("." in k for k in keys) else "."


METADATA_MEMBER = "__metadata__"  # a 0-d unicode array holding a JSON object of strings (no pickle needed)


def _metadata(path: str, zf: SafeZip) -> dict[str, str] | None:
    """The writer's metadata member, if it is one (a small unicode JSON object of strings)."""
    name = METADATA_MEMBER + ".npy"
    if name not in zf.members or zf.members[name].size > 64 << 20:
        return None
    head = member_header(zf, name)
    dtype, shape, _fortran, hlen = parse_header(head, f"{path}:{name}")  # bounded, before numpy parses it
    if dtype.kind != "U" or shape != ():
        return None
    text = _text_of(zf, name, dtype, hlen) if type(dtype) is LiteDtype else None
    if text is None:
        arr = _load_member(path, name, f"{path}:{name}")
        if arr.dtype.kind != "U" or arr.shape != ():
            return None
        text = str(arr)
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return None
    return meta


def _text_of(zf: SafeZip, name: str, dtype: LiteDtype, hlen: int) -> str | None:
    """A 0-d unicode member's string as ``str(numpy.load(...))`` gives it (UCS-4 code points, trailing NULs
    dropped), decoded without numpy; None where numpy is left to say what it makes of the bytes."""
    size = hlen + dtype.itemsize
    data = zf.read_with(name, lambda fh: fh.read(size))
    if len(data) != size:
        return None
    try:
        return data[hlen:].decode("utf-32-be" if dtype.str[0] == ">" else "utf-32-le").rstrip("\x00")
    except UnicodeDecodeError:  # a surrogate or a code point past U+10FFFF: numpy's own reading decides
        return None


def read_npz(path: str) -> CheckpointIndex:
    zf = SafeZip(path)
    builder = IndexBuilder(path)
    try:
        meta = _metadata(path, zf)
        names = [n for n in zf.names() if meta is None or n != METADATA_MEMBER + ".npy"]
        keys = [n[:-4] for n in names]
        sep = _key_sep(keys)
        digest = zf.directory_sha256()
        for name, key in zip(names, keys):
            member = zf.members[name]
            where = f"{path}:{name}"
            dtype, shape, fortran, hlen = parse_header(member_header(zf, name), where)
            check_shape(where, key, dtype, shape)
            nbytes = math.prod(shape) * dtype.itemsize
            if hlen + nbytes != member.size:
                raise FormatError(f"{where}: member holds {member.size - hlen} data bytes, {dtype} x {list(shape)} needs {nbytes}")
            p = join_path(split_key(key, sep))
            common = dict(path=p, key=key, dtype=dtype, shape=shape, file=path, optimizer=is_optimizer_path(p))
            if member.stored:
                builder.add(TensorRef(offset=member.data_offset + hlen, stride=_fortran_stride(shape) if fortran else None, **common))
            else:
                builder.add(TensorRef(loader=lambda n=name, w=where: _load_member(path, n, w), **common))
    finally:
        zf.close()
    return CheckpointIndex(builder.refs, format="npz", files=[path], key_sep=sep, header_sha256=digest,
                           metadata={} if meta is None else {"__metadata__": meta})


def _load_member(path: str, name: str, where: str) -> np.ndarray:
    zf = SafeZip(path)
    try:
        return zf.read_with(name, lambda fh: np.lib.format.read_array(fh, allow_pickle=False))
    except ValueError as exc:
        raise FormatError(f"{where}: {exc}") from None
    finally:
        zf.close()


def read_npy(path: str) -> CheckpointIndex:
    src = open_source(path)
    dtype, shape, fortran, hlen = parse_header(bytes(src.read(0, min(src.size, MAX_HEADER + 12))), path)
    key = os.path.splitext(os.path.basename(path))[0]
    check_shape(path, key, dtype, shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if hlen + nbytes > src.size:
        raise FormatError(f"{path}: truncated .npy: {dtype} x {list(shape)} needs {nbytes} bytes")
    ref = TensorRef(path=join_path([key]), key=key, dtype=dtype, shape=shape, file=path, offset=hlen,
                    stride=_fortran_stride(shape) if fortran else None)
    return CheckpointIndex([ref], format="npy", files=[path])


def write_npz(tensors: Mapping[str, np.ndarray], fh: Any, metadata: Mapping[str, str]) -> None:
    """Uncompressed npz (members stay readable in place). Dtypes numpy cannot name are refused.

    ``metadata`` goes into a ``__metadata__`` member: a 0-d unicode array of JSON, which
    ``numpy.load(..., allow_pickle=False)`` reads (``json.loads(str(npz["__metadata__"]))``).
    One pass: each tensor is read once, checked, written (a refusal fails the atomic write, nothing is left).
    """
    if METADATA_MEMBER in tensors:
        raise OutputError(f"tensor name {METADATA_MEMBER!r} is reserved in .npz outputs for the metadata; rename it")
    import zipfile  # here: only writing needs it (reading goes through zipsafe)

    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        if metadata:
            text = json.dumps({str(k): str(v) for k, v in metadata.items()}, sort_keys=True)
            with zf.open(METADATA_MEMBER + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.array(text), allow_pickle=False)
        for key, arr in tensors.items():
            if arr.dtype.kind == "V" or arr.dtype.name in _ML_DTYPE_NAMES:
                raise OutputError(
                    f"tensor {key!r}: .npz cannot hold {arr.dtype.name} faithfully (numpy.load would return raw bytes); "
                    "write safetensors instead (-o out.safetensors)"
                )
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arr, order="C"), allow_pickle=False)  # 0-d stays 0-d
            del arr  # before the next tensor is read: one tensor in memory at a time


_ML_DTYPE_NAMES = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"}
