"""Hand-made hostile checkpoints: a tiny pickle assembler and a torch zip writer (no torch needed).

Each builder makes the smallest file that shows one failure of issue 13; the regression tests
(``test_hardening.py``) and the fuzzer's seeds use them.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

# ---- pickle opcodes, written by hand (nothing here is ever unpickled by the tests) -----------------

PROTO2 = b"\x80\x02"
MARK, STOP, TUPLE, EMPTY_TUPLE, REDUCE = b"(", b".", b"t", b")", b"R"
EMPTY_DICT, EMPTY_LIST, SETITEM, SETITEMS, APPEND, APPENDS = b"}", b"]", b"s", b"u", b"a", b"e"
NEWFALSE, NONE, BINPERSID = b"\x89", b"N", b"Q"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s: str) -> bytes:
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw if len(raw) < 256 else b"X" + struct.pack("<I", len(raw)) + raw


def num(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(1 << 31) <= n < 1 << 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def tensor(storage_key: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
           storage: str = "FloatStorage") -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    pid = tup(text("storage"), glob("torch", storage), text(storage_key), text("cpu"), num(numel))
    return (glob("torch._utils", "_rebuild_tensor_v2")
            + tup(pid + BINPERSID, num(offset), tup(*map(num, size)), tup(*map(num, stride)), NEWFALSE,
                  glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE)
            + REDUCE)


def dict_of(items: list[tuple[bytes, bytes]]) -> bytes:
    return EMPTY_DICT + MARK + b"".join(k + v for k, v in items) + SETITEMS


def shared_graph(leaf: bytes, levels: int) -> bytes:
    """``x = leaf; x = {'a': x, 'b': x}`` ``levels`` times: 2**levels paths from a few bytes per level."""
    out = leaf + put(0)
    for i in range(levels):
        out += dict_of([(text("a"), get(i)), (text("b"), get(i))]) + put(i + 1)
    return out


def pickle_of(body: bytes) -> bytes:
    return PROTO2 + body + STOP


# ---- files ---------------------------------------------------------------------------------------

def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], *, extra: dict[str, bytes] | None = None) -> Path:
    """A torch.save-style zip: ``archive/data.pkl``, ``archive/data/<key>``, version, byteorder."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", b"little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", b"3\n")
        for name, raw in (extra or {}).items():
            zf.writestr(name, raw)
    return path


def self_referential_pickle() -> bytes:
    """``d = {}; d['a'] = d`` in 14 bytes."""
    return PROTO2 + EMPTY_DICT + b"q\x00" + b"U\x01a" + b"h\x00" + SETITEM + STOP


def list_cycle_pickle() -> bytes:
    """``l = []; l.append({'x': l})``: a cycle through a list and a dict."""
    return PROTO2 + EMPTY_LIST + b"q\x00" + EMPTY_DICT + b"U\x01x" + b"h\x00" + SETITEM + APPEND + STOP


def shared_dicts_pickle(levels: int = 40) -> bytes:
    """2**40 paths to one empty dict."""
    return pickle_of(shared_graph(EMPTY_DICT, levels))


def shared_ints_pickle(levels: int = 24) -> bytes:
    """2**24 metadata leaves (one shared int)."""
    return pickle_of(shared_graph(num(7), levels))


def tuple_dag(levels: int) -> bytes:
    """``t = 1; t = (t, t, i)`` ``levels`` times: a tuple of 2**levels leaves in a few bytes per level."""
    return num(1) + put(0) + b"".join(tup(get(i), get(i), num(i)) + put(i + 1) for i in range(levels))


def tuple_key_pickle(levels: int = 60) -> bytes:
    """``{t: 1}`` with that tuple as a dict key: the unpickler would hash 2**60 elements."""
    return pickle_of(tuple_dag(levels) + dict_of([(get(levels), num(1))]))


def memo_index_pickle() -> bytes:
    """``LONG_BINPUT`` with index 678,720,865: the C unpickler grew its memo table to 5 GB (found by atheris)."""
    return b"].]]]}raut(s0.\xb2"


def frozenset_bomb_pickle(levels: int = 60) -> bytes:
    """``{'meta': frozenset([t])}``: building the set hashes the tuple; printing it would never end."""
    fs = glob("builtins", "frozenset") + tup(EMPTY_LIST + get(levels) + APPEND) + REDUCE
    return pickle_of(tuple_dag(levels) + dict_of([(text("meta"), fs)]))


def shared_tensor_zip(path: Path, levels: int = 20) -> Path:
    """One 4-byte tensor referenced 2**levels times (a 1 KB file)."""
    body = shared_graph(tensor("0", 1, 0, (1,), (1,)), levels)
    return torch_zip(path, pickle_of(body), {"0": b"\x00\x00\x80\x3f"})


def tied_weights_zip(path: Path) -> Path:
    """Two names for one tensor record (memo), a third record of the same storage view: all aliases."""
    t = tensor("0", 6, 0, (2, 3), (3, 1))
    body = dict_of([(text("embed.weight"), t + put(0)), (text("head.weight"), get(0)),
                    (text("lm.weight"), tensor("0", 6, 0, (2, 3), (3, 1))),
                    (text("bias"), tensor("1", 3, 0, (3,), (1,)))])
    return torch_zip(path, pickle_of(body), {"0": struct.pack("<6f", *range(6)), "1": struct.pack("<3f", 7, 8, 9)})


def expanded_view_zip(path: Path, n: int = 65536) -> Path:
    """A tensor of n x n with strides (0, 0) on a 4-byte storage (expand of one float)."""
    return torch_zip(path, pickle_of(dict_of([(text("w"), tensor("0", 1, 0, (n, n), (0, 0)))])),
                     {"0": b"\x00\x00\x80\x3f"})


def second_pickle_zip(path: Path, canary: Path) -> Path:
    """A good data.pkl followed by a second pickle that calls os.system (torch.load would ignore it)."""
    good = pickle_of(dict_of([(text("w"), tensor("0", 1, 0, (1,), (1,)))]))
    evil = PROTO2 + glob("os", "system") + tup(text(f"touch {canary}")) + REDUCE + STOP
    return torch_zip(path, good + evil, {"0": b"\x00\x00\x80\x3f"})


def legacy_torch(path: Path, obj_pickle: bytes, keys: list[str], storages: list[bytes]) -> Path:
    """A pre-1.6 ``torch.save``: magic, version, sys info, the object pickle, the key list, storages."""
    out = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, out, protocol=2)
    out.write(obj_pickle)
    pickle.dump(keys, out, protocol=2)
    for raw in storages:
        out.write(struct.pack("<q", len(raw) // 4) + raw)
    path.write_bytes(out.getvalue())
    return path


def legacy_negative_view(path: Path) -> Path:
    """A legacy storage view ``(key, offset=-4, size=4)``: would read 16 bytes before its storage."""
    pid = tup(text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), num(8),
              tup(text("0"), num(-4), num(4)))
    t = glob("torch._utils", "_rebuild_tensor_v2") + tup(pid + BINPERSID, num(0), tup(num(4)), tup(num(1)), NEWFALSE,
                                                        glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE) + REDUCE
    return legacy_torch(path, pickle_of(dict_of([(text("w"), t)])), ["0"], [struct.pack("<8f", *range(8))])


# ---- HDF5 (built with h5py, then patched: libhdf5 itself would not write these) ---------------------

def hdf5_bad_link_name(path: Path) -> Path:
    """A link whose name is not UTF-8 (h5py hands such names over as bytes)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f["g/ok"] = np.arange(3.0)
        f["g/oXk"] = np.arange(2.0)
    data = bytearray(path.read_bytes())
    i = data.find(b"oXk")
    data[i + 1] = 0xFF
    path.write_bytes(bytes(data))
    return path


def hdf5_unknown_string_encoding(path: Path) -> Path:
    """A ``model_config`` attribute whose string type names character set 5 (reserved)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f["w"] = np.arange(3.0)
        f.attrs.create("model_config", np.bytes_(b'{"class_name": "Model", "config": {"layers": []}}'))
    data = bytearray(path.read_bytes())
    i = data.find(b"model_config") + 16  # the attribute's datatype message follows its padded name
    assert data[i] == 0x13, "h5py wrote an unexpected attribute layout"
    data[i + 1] = (data[i + 1] & 0x0F) | 0x50
    path.write_bytes(bytes(data))
    return path


def segfault(_args: object) -> None:
    """An isolate entry point that crashes the way libhdf5 did (tests point ``ENTRY_POINTS`` here)."""
    import ctypes

    ctypes.string_at(0)


def allocate_700mb(_args: object) -> tuple[dict, bytes]:
    """An isolate entry point that takes 700 MB the way a libhdf5 heap object with a forged size did."""
    block = bytearray(700 << 20)  # zero-filled: every page touched
    return {"allocated": len(block)}, b""
