"""The fast paths ``scan`` takes through pickles and .npy headers give what the standard library's parsers give.

``pickle_static.analyze`` walks a well-formed pickle in place (``pickle_walk``) and hands anything else to
``analyze_genops`` (``pickletools.genops``); ``numpy_fmt.parse_header`` reads the header numpy writes without
``ast.literal_eval``. Each is compared here with the reference on real pickles (the repository's fixtures,
``pickle.dumps`` of generated objects, the public hostile corpus when present) and on damaged variants of them.
"""
from __future__ import annotations

import ast
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptsurgeon.check.findings import Finding
from ckptsurgeon.check.scan import _findings_by_file, _guided
from ckptsurgeon.formats.npy.numpy_fmt import _plain_header, parse_header
from ckptsurgeon.formats.pytorch import pickle_memo, pickle_walk
from ckptsurgeon.formats.pytorch.pickle_static import analyze, analyze_genops
from ckptsurgeon.formats.tree import work_budget
from conftest import CORPUS

ROOT = Path(__file__).resolve().parent.parent


def _same(a, b) -> bool:
    """Equal facts, insertion order of the opcode tables included (reports list opcodes in first-use order)."""
    return vars(a) == vars(b) and list(a.opcodes.items()) == list(b.opcodes.items()) \
        and list(a.first_at.items()) == list(b.first_at.items())


def _fast_equals_reference(data: bytes) -> bool:
    """``analyze`` equals ``analyze_genops``; returns whether the walk itself read it (no fallback)."""
    budget = work_budget(len(data))
    pickle_walk._FIRST.clear()
    assert _same(_uncached(data, budget), analyze_genops(data, budget)), data[:80]
    try:
        pickle_walk.walk(data, budget)
        return True
    except pickle_walk.Irregular:
        return False


def _uncached(data: bytes, budget: int):
    from ckptsurgeon.formats.pytorch import pickle_static

    pickle_static._MEMO.clear()
    return analyze(data, budget)


def _real_pickles() -> list[bytes]:
    """Every pickle the fixtures hold: bare pickles and legacy files from the front, zip members named *.pkl."""
    out = []
    for path in sorted(ROOT.glob("fixtures/**/*")):
        if not path.is_file() or path.stat().st_size > 4 << 20:
            continue
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                out += [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
        elif path.read_bytes()[:1] == b"\x80":
            out.append(path.read_bytes())
    return out


REAL = _real_pickles()


def test_fixture_pickles_are_many_and_walked():
    """The fixtures hold real torch, legacy and paddle pickles, and the walk reads most of them itself."""
    assert len(REAL) >= 20
    walked = sum(_fast_equals_reference(d) for d in REAL)
    assert walked >= len(REAL) // 2, f"only {walked} of {len(REAL)} pickles walked without the fallback"


@pytest.mark.parametrize("i", range(len(REAL)))
def test_fixture_pickle_and_damaged_variants(i):
    data = REAL[i]
    _fast_equals_reference(data)
    for cut in sorted({1, 2, len(data) // 3, len(data) // 2, len(data) - 1, len(data) - 2} - {0}):
        _fast_equals_reference(data[:cut])  # truncated: the fallback names the damage
    _fast_equals_reference(data + b"\x80\x04N.")  # a second pickle after STOP


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus not present")
def test_hostile_corpus_pickles():
    found = 0
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.stat().st_size < 4 << 20:
            data = path.read_bytes()
            for member in _members(path):
                _fast_equals_reference(member)
            _fast_equals_reference(data)
            found += 1
    assert found > 50


def _members(path: Path) -> list[bytes]:
    """The members zipfile can read (the corpus also holds encrypted members and other zip tricks)."""
    out = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                try:
                    out.append(zf.read(info)) if info.file_size < 4 << 20 else None
                except (RuntimeError, NotImplementedError, zipfile.BadZipFile, ValueError, OSError):
                    continue
    except (zipfile.BadZipFile, OSError, ValueError):
        pass
    return out


_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                    st.binary(max_size=20), st.integers(-300, 300).map(lambda n: 10 ** 40 + n))
_objects = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.tuples(inner, inner), st.tuples(inner),
    st.dictionaries(st.text(max_size=5), inner, max_size=4), st.frozensets(st.integers(), max_size=3),
    st.sets(st.text(max_size=3), max_size=3), st.builds(OrderedDict, st.dictionaries(st.text(max_size=3), inner)),
), max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_objects, protocol=st.integers(0, 5), shared=st.booleans())
def test_generated_pickles(obj, protocol, shared):
    """``pickle.dumps`` of generated data (shared parts memoized and read back), every protocol: walked exactly."""
    value = [obj, obj, (obj, obj)] if shared else obj
    data = pickle.dumps(value, protocol=protocol)
    assert _fast_equals_reference(data), "a well-formed pickle must be walked, not handed to the fallback"


@settings(max_examples=300, deadline=None)
@given(obj=_objects, protocol=st.integers(0, 5), at=st.integers(0, 10_000), byte=st.integers(0, 255),
       cut=st.integers(0, 10_000))
def test_damaged_generated_pickles(obj, protocol, at, byte, cut):
    data = bytearray(pickle.dumps(obj, protocol=protocol))
    data[at % len(data)] = byte
    _fast_equals_reference(bytes(data))
    _fast_equals_reference(bytes(data[:cut % (len(data) + 1)]))


def test_the_walk_names_what_the_reference_names():
    """Globals (GLOBAL, STACK_GLOBAL with memoized names, INST), problems and first positions, on hostile shapes."""
    cases = [
        b"cos\nsystem\n(S'echo'\ntR.",
        b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",
        b"(ios\nsystem\nS'x'\no.",
        b"\x80\x02]q\x00(K\x01h\x00e.",
        b"\x80\x04\x8c\x02os\x94h\x00\x93.",  # STACK_GLOBAL of a memoized name read back
        b"\x80\x02N" + b"q\xff" + b".",  # a memo index larger than the pickle: the reference words the problem
        b"\x80\x02)q\x00h\x00h\x00\x86q\x01h\x01h\x01\x86q\x02h\x02h\x02\x86.",  # a tuple expanding on itself
    ]
    for data in cases:
        _fast_equals_reference(data)
    facts = analyze(cases[4], work_budget(len(cases[4])))
    assert [(m, n) for m, n, _ in facts.globals] == [("os", "os")]


def test_first_pickle_stops_at_stop_and_says_truncated():
    data = pickle.dumps({"a": [1, 2, 3], "b": "x" * 300}, protocol=2)
    facts = pickle_walk.first_pickle(data + b"\x00" * 1000)  # the raw storages of a legacy file follow
    remembered = analyze(data, work_budget(len(data)))  # what first_pickle left for the pickle alone
    assert facts.end == len(data) and _same(facts, _uncached(data, work_budget(len(data))))
    assert _same(remembered, analyze_genops(data, work_budget(len(data))))
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(pickle_walk.Truncated):
            pickle_walk.first_pickle(data[:cut])
    with pytest.raises(pickle_walk.Irregular):
        pickle_walk.first_pickle(b"\xff" + data)  # not an opcode: genops decides what it is


def test_first_pickle_budget_is_the_pickles_own():
    """A tuple that expands past the budget of the pickle's own size is a problem even with much data after it."""
    data = b"\x80\x02)q\x00" + b"h\x00h\x00\x86q\x00" * 30 + b"."
    exact = _uncached(data, work_budget(len(data)))
    assert exact.problems, "the test needs a pickle whose tuples expand past its own budget"
    got = pickle_walk.first_pickle(data + b"\x00" * (1 << 20))
    assert _same(got, exact)


def test_bytes_memo_is_bounded_and_remembers_no_failure():
    memo: pickle_memo.BytesMemo[int] = pickle_memo.BytesMemo()
    calls = []
    for i in range(pickle_memo.MAX_ENTRIES + 10):
        memo.get(b"%d" % i, None, lambda i=i: calls.append(i) or i)
    assert len(memo._entries) == pickle_memo.MAX_ENTRIES
    assert memo.get(b"%d" % (pickle_memo.MAX_ENTRIES + 9), None, lambda: -1) == pickle_memo.MAX_ENTRIES + 9
    assert memo.get(b"0", None, lambda: -1) == -1  # the oldest went first
    with pytest.raises(ValueError):
        memo.get(b"boom", None, lambda: (_ for _ in ()).throw(ValueError("x")))
    assert memo.get(b"boom", None, lambda: 7) == 7
    big = b"x" * (pickle_memo.MAX_BYTES + 1)
    assert memo.get(big, None, lambda: 1) == 1 and memo.get(big, None, lambda: 2) == 2  # too large: not kept
    assert memo.get(b"0", "other", lambda: 5) == 5  # the extra key part tells answers apart
    assert memo.get(bytearray(b"0"), "other", lambda: 6) == 5  # what a reader hands over: the same bytes


@settings(max_examples=200, deadline=None)
@given(shape=st.lists(st.integers(0, 10 ** 12), max_size=5),
       dtype=st.sampled_from(["<f4", ">f8", "|b1", "<i8", "|u1", "<U7", "|S3", "<c16", "<M8[ns]", "<f2"]),
       fortran=st.booleans(), version=st.sampled_from([(1, 0), (2, 0), (3, 0)]))
def test_npy_plain_header_is_literal_eval(shape, dtype, fortran, version):
    """The headers numpy itself writes read the same without the parser, every version."""
    d = {"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}
    buf = io.BytesIO()
    np.lib.format._write_array_header(buf, d, version) if hasattr(np.lib.format, "_write_array_header") else \
        (np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0)(buf, d)
    head = buf.getvalue()
    start = 10 if head[6] == 1 else 12
    text = head[start:].decode("utf-8" if head[6] == 3 else "latin1")
    assert _plain_header(text) == ast.literal_eval(text)
    got = parse_header(head, "x.npy", allow_object=True)
    assert got[1] == tuple(shape) and got[2] is fortran and got[0] == np.dtype(dtype)


@pytest.mark.parametrize("text", [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (03,), }",  # a leading zero: not a Python literal
    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }",  # structured: the parser reads it
    "{'fortran_order': False, 'descr': '<f4', 'shape': (3,), }",
    "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (3,,), }",
    "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (3,), }",  # an escape: only the parser undoes it
])
def test_npy_other_headers_go_to_the_parser(text):
    assert _plain_header(text) is None


@pytest.mark.parametrize("n,jobs", [(0, 2), (1, 2), (7, 2), (825, 2), (825, 8), (100_000, 2)])
def test_guided_chunks_cover_everything_in_order_and_shrink(n, jobs):
    chunks = _guided(list(range(n)), jobs)
    assert [x for c in chunks for x in c] == list(range(n))
    sizes = [len(c) for c in chunks]
    assert sizes == sorted(sizes, reverse=True) or sizes[-1] <= sizes[0]
    assert len(chunks) <= 4096 and all(sizes)
    if n > 100:
        assert sizes[-2] <= max(8, n // 2048 + 1) < sizes[0]  # big chunks first, small ones last


def test_findings_go_to_the_longest_file_they_name():
    files = ["d/a.pt", "d/a.pt:x", "d/b"]
    findings = [Finding("global", p, "m") for p in ["d/a.pt:archive/data.pkl", "d/a.pt:x@12", "d/a.pt@5", "d/b",
                                                     "d/c:y", "d/b@1:z@2"]]
    got = {k: [f.path for f in v] for k, v in _findings_by_file(findings, files).items()}
    assert got == {"d/a.pt": ["d/a.pt:archive/data.pkl", "d/a.pt@5"], "d/a.pt:x": ["d/a.pt:x@12"],
                   "d/b": ["d/b", "d/b@1:z@2"]}


# Found by an independent differential fuzzing run (409k byte strings against analyze_genops).
@pytest.mark.parametrize("head", [b"q\x04.$.", b"\x80\x02Nr\x00\x01\x00\x00." + b"\x00" * 300, b"Np6\n.\x83"])
def test_first_pickle_checks_memo_indices_against_the_pickles_own_end(head):
    """A memo index larger than the pickle but not than the bytes after it is still the problem genops names."""
    try:
        facts = pickle_walk.first_pickle(head)
    except pickle_walk.Irregular:
        return  # the caller then finds the end by genops and analyses the pickle alone
    exact = _uncached(head[:facts.end], work_budget(facts.end))
    assert _same(facts, exact)


@pytest.mark.parametrize("head", [b"I\n", b"F\n", b"L\n", b"p\x0e\n", b"S\n", b"S'a\n", b"S'\\'\n", b"c\xb9\n", b"c\\\n"])
def test_a_whole_line_that_does_not_parse_is_not_truncation(head):
    """More bytes cannot mend a complete text line genops refuses: not ``Truncated`` (which reads on)."""
    with pytest.raises(pickle_walk.Irregular) as info:
        pickle_walk.first_pickle(head)
    assert not isinstance(info.value, pickle_walk.Truncated)
    with pytest.raises(pickle_walk.Truncated):
        pickle_walk.first_pickle(head[:-1])  # the same line without its newline: out of bytes


def test_many_tuples_past_the_budget_take_linear_time():
    """Each tuple past the budget once checked the problems found so far: quadratic in hostile pickles."""
    k = 20_000
    data = b"\x80\x04" + b"NN\x93" * k + b")" + b"2\x86" * k + b"."
    budget = work_budget(len(data))
    fast, ref = _uncached(data, budget), analyze_genops(data, budget)
    assert _same(fast, ref) and sum(p.startswith("a tuple") for p in ref.problems) == 1


@pytest.mark.parametrize("text", [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }",  # (3) is the number 3, not a shape
    "{'descr': '<f\x00', 'fortran_order': False, 'shape': (3,), }",
    "{'descr': '<f\r', 'fortran_order': False, 'shape': (3,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",), }",  # Python's own digit limit
])
def test_npy_near_misses_found_by_fuzzing_go_to_the_parser(text):
    assert _plain_header(text) is None


def test_bytes_memo_shared_by_threads():
    """Threads (a Python API user's) share the memo: each gets the right answer and nothing raises."""
    import threading

    memo: pickle_memo.BytesMemo[int] = pickle_memo.BytesMemo()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(5000):
                k = (i * 7 + seed) % (pickle_memo.MAX_ENTRIES * 2)
                if memo.get(b"%d" % k, None, lambda k=k: k * 3) != k * 3:
                    raise AssertionError(k)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(memo._entries) <= pickle_memo.MAX_ENTRIES


@pytest.mark.parametrize("tensors", [3, 3000])  # a pickle well within the walked 64 KiB, and one past it (genops)
def test_legacy_torch_files_either_side_of_the_walked_span(tmp_path, tensors):
    """torch.save's legacy format: pickles followed by raw storages. ``ls`` and ``scan`` find every tensor and no
    finding, whether the walk or genops finds where the object pickle ends."""
    torch = pytest.importorskip("torch")
    import ckptsurgeon
    from ckptsurgeon.check.scan import scan_file

    state = {f"layer{i}.weight": torch.full((2, 3), float(i)) for i in range(tensors)}
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    index = ckptsurgeon.open(str(path))
    assert len(list(index)) == tensors
    assert np.array_equal(index[f"layer{tensors - 1}/weight"].numpy(), np.full((2, 3), tensors - 1, np.float32))
    result = scan_file(str(path))
    assert result.ok, [f.message for f in result.findings]
    assert max(p.nbytes for p in result.pickles) > (64 << 10) if tensors > 1000 else True
