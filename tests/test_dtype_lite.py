"""``LiteDtype`` answers as numpy's dtype answers, and every reader's tensors resolve to the dtype it stated.

Readers check files with ``LiteDtype``s so that listing and scanning import no numpy; these tests hold each
attribute a reader asks (name, kind, itemsize, str, str(), newbyteorder) to numpy's own answer, for every row of
every table, for any type string, and for every tensor of every fixture."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import ml_dtypes  # noqa: F401 - numpy knows the ml_dtypes names once it is imported
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckptsurgeon
from ckptsurgeon.dtype_lite import ML_NAMES, NAMES, LiteDtype, as_numpy, from_typestr
from ckptsurgeon.dtypes import (ONNX_DTYPES, SAFETENSORS_DTYPES, TF_DTYPES, TORCH_DTYPES, TORCH_STORAGE_DTYPES,
                                CodeTable, DtypeTable, ml_dtype)
from ckptsurgeon.errors import CheckpointError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.index import TensorRef

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _numpy(name: str) -> np.dtype:
    return ml_dtype(name) if name in ML_NAMES else np.dtype(name)


def _same(lite: LiteDtype, real: np.dtype) -> None:
    assert (lite.name, lite.kind, lite.itemsize, lite.str, str(lite)) == (real.name, real.kind, real.itemsize, real.str,
                                                                          str(real))
    assert lite.hasobject is real.hasobject and lite.subdtype is None is real.subdtype
    assert lite.resolve() == real and lite.resolve().str == real.str
    assert lite == real and lite == LiteDtype(lite.name, lite.order)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_name_answers_as_numpy(name):
    real = _numpy(name)
    _same(LiteDtype(name), real)
    for order in ("<", ">", "="):
        _same(LiteDtype(name).newbyteorder(order), real.newbyteorder(order))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(NAMES)), orders=st.lists(st.sampled_from(["<", ">", "="]), max_size=3))
def test_chained_byte_orders_answer_as_numpy(name, orders):
    lite, real = LiteDtype(name), _numpy(name)
    for order in orders:
        lite, real = lite.newbyteorder(order), real.newbyteorder(order)
    _same(lite, real)
    assert (hash(lite) == hash(LiteDtype(name).newbyteorder(orders[-1]))) if orders else hash(lite) == hash(LiteDtype(name))


_ORDER = st.sampled_from(["", "<", ">", "|", "="])
_KIND = st.sampled_from(list("biufcSUVOMmxe?"))


@settings(max_examples=600, deadline=None)
@given(order=_ORDER, kind=_KIND, size=st.integers(0, 40), pad=st.sampled_from(["", "", "0", " "]))
def test_a_type_string_is_taken_only_as_numpy_takes_it(order, kind, size, pad):
    text = f"{order}{kind}{pad}{size}"
    lite = from_typestr(text)
    try:
        real = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        assert lite is None, text
        return
    if lite is not None:
        _same(lite, real)
        assert real.kind in "biufcSU" and real.itemsize > 0


@pytest.mark.parametrize("text", ["<U35", ">U3", "|U3", "=U3", "U03", "S3", ">S3", "=S3", "|S1", "a3", "S0", "U0",
                                  "U536870911", "U536870912", "S2147483647", "S2147483648", "U99999999999", "<U-1"])
def test_string_types_are_numpy_s_up_to_its_size_limits(text):
    """Fixed-width strings (an .npz metadata member is ``<U...``) answer as numpy's, by its names for them
    (``str96``, ``bytes24``); an unsized or oversized one, or numpy's deprecated alias, is left to numpy."""
    lite = from_typestr(text)
    try:
        real = np.dtype(text)
    except TypeError:
        assert lite is None
        return
    if text in ("S0", "U0", "a3"):
        assert lite is None
        return
    _same(lite, real)
    for order in ("<", ">", "=", "|"):
        _same(lite.newbyteorder(order), real.newbyteorder(order))
    assert LiteDtype(real.name) == real.newbyteorder("=") and pickle.loads(pickle.dumps(lite)) == lite
    with pytest.raises(KeyError):
        LiteDtype("str12")  # not a whole number of 4-byte characters


@pytest.mark.parametrize("table", [TORCH_STORAGE_DTYPES, TORCH_DTYPES, SAFETENSORS_DTYPES, TF_DTYPES, ONNX_DTYPES])
def test_every_table_row_resolves_to_its_numpy_dtype_and_back(table):
    fresh = DtypeTable({k: table.lite(k).name for k in table.names()})
    codes = CodeTable(fresh)
    for key in table.names():
        lite = table.lite(key)
        _same(lite, table[key])
        assert fresh[key] == table[key] and codes[table[key]] in [k for k in table.names() if table[k] == table[key]]
    assert table.lite(["unhashable"]) is None and table.get(["unhashable"]) is None


def test_a_reference_resolves_its_dtype_once_and_compares_as_numpy():
    a = TensorRef("w", "w", LiteDtype("float32").newbyteorder("<"), (2, 3), "f", 8)
    b = TensorRef("w", "w", np.dtype("<f4"), (2, 3), "f", 8)
    assert a.dtype_name == "float32" and a.nbytes == 24 and type(a.dtype_spec) is LiteDtype
    assert a == b and hash(a) == hash(b)
    assert a.dtype is a.dtype and a.dtype == np.dtype("float32") and isinstance(a.dtype_spec, np.dtype)
    c = a.replace(path="v")
    assert (c.path, c.key, c.dtype, c.offset) == ("v", "w", np.dtype("float32"), 8) and a.with_path("v") == c
    with pytest.raises(TypeError, match="no field"):
        a.replace(dtyp=np.float32)
    assert as_numpy(LiteDtype("bfloat16")) == np.dtype(ml_dtypes.bfloat16)


def _fixture_files() -> list[str]:
    out = []
    for root, dirs, files in os.walk(FIXTURES):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files)]
        out += [os.path.join(root, d) for d in dirs]  # checkpoint folders (TF, DCP, HF shards)
    return out


def test_every_fixture_tensor_states_the_dtype_its_bytes_read_as():
    """Each tensor a reader lists without numpy: its lite answers are its numpy dtype's, and reading it gives an
    array of exactly that dtype (what the file states, not what a default would be)."""
    checked = lite = 0
    for path in _fixture_files():
        try:
            index = open_checkpoint(path)
        except (CheckpointError, OSError):
            continue
        for ref in index.values():
            spec, real = ref.dtype_spec, ref.dtype
            if type(spec) is LiteDtype:
                lite += 1
                _same(spec, real)
            assert ref.dtype_name == real.name or ref.dtype_name != real.name and hasattr(ref, "ggml")
            if ref.loader is None and ref.nbytes <= 1 << 20 and ref.in_place:
                assert ref.numpy().dtype == real.newbyteorder("="), (path, ref.path)
            checked += 1
    assert checked > 1000 and lite > 500, (checked, lite)


def test_a_reference_still_passes_for_the_dataclass_it_was():
    """``TensorRef`` is public and was a dataclass: ``dataclasses.replace/fields/asdict``, ``match`` and assignment
    work as before (its ``dtype``, resolved, is what they see)."""
    import dataclasses

    from ckptsurgeon.formats.gguf.reader import QuantizedRef

    a = TensorRef("w", "w", LiteDtype("int16").newbyteorder(">"), (4,), "f", 8, optimizer=True)
    b = dataclasses.replace(a, path="v")
    assert type(b) is TensorRef and (b.path, b.dtype, b.offset, b.optimizer) == ("v", np.dtype(">i2"), 8, True)
    assert [f.name for f in dataclasses.fields(a)] == ["path", "key", "dtype", "shape", "file", "offset", "stride",
                                                        "optimizer", "loader", "raw"]
    assert dataclasses.is_dataclass(a) and dataclasses.asdict(a)["dtype"] == np.dtype(">i2")
    match a:
        case TensorRef(path, key, dtype, shape):
            assert (path, key, dtype, shape) == ("w", "w", np.dtype(">i2"), (4,))
        case _:
            raise AssertionError("no match")
    a.dtype = np.dtype("float64")
    assert a.nbytes == 32 and a.dtype_name == "float64"
    q = QuantizedRef("q", "q", np.dtype("float32"), (32,), "f", ggml="q4_0", stored=18)
    r = dataclasses.replace(q, path="p")
    assert type(r) is QuantizedRef and (r.path, r.ggml, r.stored, r.nbytes, r.dtype_name) == ("p", "q4_0", 18, 18, "q4_0")
    assert r != q and r == dataclasses.replace(q, path="p") and "ggml='q4_0'" in repr(r)


@pytest.mark.parametrize("dtype", ["float8_e5m2", "float8_e4m3fn", "bfloat16", "float16", "complex128", "bool"])
def test_strided_tensors_of_every_kind_read_as_torch_holds_them(tmp_path, dtype):
    """A transposed or sliced tensor is read through a strided view of its raw items: numpy rebuilds a strided
    view from its type string, which it cannot parse for float8_e5m2 ('<f1')."""
    import torch

    base = torch.arange(15, dtype=torch.float32).reshape(3, 5) / 4
    t = base.to(getattr(torch, dtype)) if dtype != "complex128" else torch.complex(base, -base).to(torch.complex128)
    path = tmp_path / "s.pt"
    torch.save({"t": t.T, "s": t[:, 1:3]}, path)
    index = ckptsurgeon.open(path)
    for key, want in (("t", t.T), ("s", t[:, 1:3])):
        ref = index[key]
        assert ref.stride is not None and ref.dtype_name == dtype
        got = ref.numpy()
        raw = want.contiguous().view(torch.uint8) if want.element_size() == 1 else want.contiguous()
        expect = raw.view(torch.int16).numpy() if dtype == "bfloat16" else raw.numpy()
        assert got.shape == tuple(want.shape) and got.tobytes() == expect.tobytes(), key


def test_an_npy_naming_an_ml_dtype_reads_alike_in_every_process(tmp_path):
    """numpy parses the descr 'bfloat16' only once ml_dtypes is imported: a header naming it reads as bfloat16
    whatever the process imported before (scan's workers did not all agree)."""
    import subprocess
    import sys

    header = b"{'descr': 'bfloat16', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (63 - len(header) % 64) + b"\n"
    path = tmp_path / "b.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x80\x3f\x00\x40")
    code = "import ckptsurgeon; r = ckptsurgeon.open({!r})['b']; print(r.dtype_name, r.numpy().tolist())"
    for first in ("", "import ml_dtypes; "):
        proc = subprocess.run([sys.executable, "-c", first + code.format(str(path))], capture_output=True, text=True,
                              timeout=60)
        assert proc.stdout.split(None, 1) == ["bfloat16", "[1.0, 2.0]\n"], (first, proc.stderr)
