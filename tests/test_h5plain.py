"""The plain HDF5 reader (``h5plain``) against libhdf5: for every file it answers exactly what ``h5probe.describe``
answers in its child process, or None (libhdf5 reads the file then).

References are libhdf5's own answers, made by h5py in a child (``run_isolated``) on real files: every HDF5 file in
the fixtures and the tests (Keras 1/2/3, tf.keras, h5py, the hostile reproducers), files h5py writes from generated
trees (hypothesis), and byte flips of real checkpoints.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptsurgeon
from ckptsurgeon import isolate
from ckptsurgeon.errors import FormatError
from ckptsurgeon.formats.hdf5 import h5tree
from ckptsurgeon.formats.hdf5.h5plain import describe_plain
from ckptsurgeon.source import open_source
from conftest import FIXTURES, run_cli

HERE = Path(__file__).parent
MAGIC = b"\x89HDF\r\n\x1a\n"


def _hdf5_files() -> list[Path]:
    out = []
    for root in (FIXTURES, HERE / "reproducers", HERE / "fuzz"):  # (reproducers/h5plain: their own test)
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.parent.name != "h5plain":
                with open(path, "rb") as fh:
                    if fh.read(8) == MAGIC:
                        out.append(path)
    return out


FILES = _hdf5_files()
# what libhdf5 alone reads: chunked datasets, and the reproducers that crash or hang it
NOT_PLAIN = {"generic.h5", "hdf5-segv.weights.h5", "hdf5-hang.weights.h5", "hdf5-attr-hang.h5"}


def plain(path: str | Path) -> dict | None:
    src = open_source(str(path))
    got = describe_plain(src, 0, src.size)
    return None if got is None else json.loads(json.dumps(got))


def libhdf5(paths: list[str | Path]) -> list[dict]:
    """libhdf5's descriptions (or ``{"error": ...}``), all in one child; a child that dies or hangs: one each."""
    requests = [{"source": str(p), "offset": 0, "size": os.path.getsize(p), "where": str(p)} for p in paths]
    try:
        header, _ = isolate.run_isolated("hdf5.describe_many", {"requests": requests},
                                         isolate.Limits(30 if len(paths) > 1 else 5, 1 << 30),
                                         where="test", what="libhdf5", preload=("h5py",))
        return header["results"]
    except FormatError:
        if len(paths) == 1:
            return [{"error": "libhdf5 crashed or hung"}]
        return [r for p in paths for r in libhdf5([p])]


def test_every_hdf5_file_we_hold_reads_as_libhdf5_reads_it():
    assert len(FILES) >= 60, FILES
    for path in FILES:
        if path.name in NOT_PLAIN:
            assert plain(path) is None, path  # (libhdf5 hangs on two of them: not asked here)
    files = [p for p in FILES if p.name not in NOT_PLAIN]
    plain_files = 0
    for path, ref in zip(files, libhdf5(files)):
        got = plain(path)
        assert got is not None, f"{path}: read by libhdf5 only"
        assert got == ref, path
        plain_files += 1
    assert plain_files >= 60


@pytest.mark.parametrize("name", sorted(p.name for p in (HERE / "reproducers/h5plain").glob("*.h5")))
def test_what_an_independent_review_found_reads_as_libhdf5_or_goes_to_it(name):
    """Each file made this reader raise, loop (a continuation back to its own block: 23 s, 2.4 GB) or answer where
    libhdf5 refuses or answers otherwise (ignored messages it decodes, heap rules, string padding, dataspaces ...)."""
    path = HERE / "reproducers/h5plain" / name
    got = plain(path)
    if got is not None:
        assert got == libhdf5([path])[0], name


def test_a_file_past_the_plain_readers_bounds_goes_to_libhdf5(monkeypatch):
    """Text and numbers made (a model_config of 6.5 KB here), objects and structure bytes read are bounded: past
    them the file goes to libhdf5 under its child's limits (two reviews' files made this reader spend 18 s and
    7.6 GB on 4,000 references to one 1 MiB string)."""
    from ckptsurgeon.formats.hdf5 import h5plain

    path = FIXTURES / "keras/tfkeras/model.h5"
    assert plain(path) is not None
    for name, bound in (("_MAX_PRODUCED", 4_000), ("_MAX_OBJECTS", 20), ("_MAX_TOUCHED", 20_000)):
        with monkeypatch.context() as patch:
            patch.setattr(h5plain, name, bound)
            assert plain(path) is None, name


def test_byte_flips_of_real_checkpoints_read_as_libhdf5_reads_them_or_go_to_it(tmp_path):
    """A damaged file read here must read exactly as libhdf5 reads it; one libhdf5 refuses (or loops on, or crashes
    on) must not be read here. 300 seeded flips of three real checkpoints."""
    rng = random.Random(20261205)
    sources = [HERE / "fuzz/seeds/tiny.weights.h5", FIXTURES / "keras/tfkeras/model.h5",
               FIXTURES / "third_party/chars2vec/weights.h5"]
    answered = []
    for i in range(300):
        data = bytearray(rng.choice(sources).read_bytes())
        for _ in range(rng.choice([1, 1, 2, 3])):
            at = rng.randrange(len(data))
            data[at] = rng.choice([data[at] ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 255])
        path = tmp_path / f"flip{i}.h5"
        path.write_bytes(bytes(data))
        got = plain(path)
        if got is not None:
            answered.append((path, got))
    assert len(answered) > 150  # most flips land in tensor bytes: the reader answers for those
    for (path, got), ref in zip(answered, libhdf5([p for p, _ in answered])):
        assert got == ref, path


_NAME = st.text(st.characters(min_codepoint=33, max_codepoint=0x24F, exclude_characters="/."), min_size=1,
                max_size=6).filter(lambda name: name != "@")  # "@": the attributes' key in a generated tree
_DTYPES = ["<f4", "<f8", "<f2", ">f4", "<i8", "<i4", "|i1", "|u1", "<u2", ">i2", "|b1"]


@st.composite
def _array(draw):
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    n = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    arr = np.frombuffer(raw, np.uint8).view(np.uint8).copy()
    if dtype.kind == "b":
        return (arr % 2).astype(bool).reshape(shape)
    return arr.view(dtype).reshape(shape)


_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=12)
_ATTR = st.one_of(
    _array(),
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.booleans(),
    _TEXT,  # variable-length UTF-8
    _TEXT.map(lambda s: np.bytes_(s.encode("utf-8"))),  # fixed-length
    st.lists(_TEXT, min_size=1, max_size=4),
    st.lists(_TEXT.map(lambda s: s.encode("utf-8")), min_size=1, max_size=4).map(np.array),
)


@st.composite
def _tree(draw, depth=0):
    """{name: array | subtree | ("soft", target) | ("alias", index)}, with attributes under "@"."""
    node: dict = {"@": draw(st.dictionaries(_NAME, _ATTR, max_size=4))}
    wide = draw(st.sampled_from([0, 0, 0, 1])) and depth == 0
    names = draw(st.lists(_NAME, unique=True, min_size=0, max_size=40 if wide else 5))
    for name in names:
        kind = draw(st.sampled_from(["data", "data", "group" if depth < 2 else "data", "soft"]))
        node[name] = (draw(_tree(depth + 1)) if kind == "group" else ("soft", draw(_NAME)) if kind == "soft"
                      else draw(_array()))
    return node


def _ascii_names(tree: dict) -> bool:
    return all(name.isascii() and (not isinstance(value, dict) or _ascii_names(value))
               for name, value in tree.items() if name != "@")


def _write(group, tree, datasets) -> None:
    for key, value in tree["@"].items():
        group.attrs[key] = value
    for name, value in tree.items():
        if name == "@":
            continue
        if isinstance(value, dict):
            _write(group.create_group(name), value, datasets)
        elif isinstance(value, tuple):
            group[name] = h5py.SoftLink(value[1])
        else:
            datasets.append(group.create_dataset(name, data=value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                    HealthCheck.function_scoped_fixture])
@given(tree=_tree(), alias=st.booleans(), compact=st.booleans(), options=st.sampled_from([{}, {}, {"track_order": True},
                                                                                           {"libver": "latest"}]))
def test_files_h5py_writes_read_as_libhdf5_reads_them(tmp_path, tree, alias, compact, options):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w", **options) as f:
        datasets: list = []
        _write(f, tree, datasets)
        if alias and datasets:
            f["alias_of_first"] = datasets[0]
        if compact:
            space = h5py.h5s.create_simple((3,))
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT32, space, plist).write(
                h5py.h5s.ALL, h5py.h5s.ALL, np.arange(3, dtype=np.int32))
    got = plain(path)
    [ref] = libhdf5([path])
    if not options and _ascii_names(tree):  # (a UTF-8 link name makes libhdf5 turn a group new-style, and more
        # than 8 links then go to dense storage: read by libhdf5)
        assert got is not None, "an h5py file with default options must be read here"
    if got is not None:
        assert got == ref


def test_a_group_of_many_links_reads_through_its_b_tree(tmp_path):
    """Hundreds of links: several symbol-table nodes under a two-level B-tree, in name order."""
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as f:
        for i in range(600):
            f.create_dataset(f"w{(i * 7919) % 600:04d}", data=np.full(2, i, np.float32))
    got = plain(path)
    assert got is not None and got == libhdf5([path])[0]
    assert [name for name, _ in got["objects"][0]["links"]] == sorted(f"w{i:04d}" for i in range(600))


def test_ls_of_a_keras_file_spawns_no_child_and_says_what_libhdf5_says(monkeypatch):
    path = FIXTURES / "keras/tfkeras/model.h5"

    def no_child(*args, **kwargs):
        raise AssertionError("libhdf5 was started for a plain file")

    monkeypatch.setattr(h5tree, "run_isolated", no_child)
    index = ckptsurgeon.open(path)
    assert len(index) > 10
    monkeypatch.undo()
    ours = run_cli("ls", str(path), "--json")
    monkeypatch.setenv("CKPTSURGEON_HDF5_READER", "libhdf5")
    theirs = run_cli("ls", str(path), "--json")
    assert ours.returncode == theirs.returncode == 0 and ours.stdout == theirs.stdout


def test_a_keras_archive_member_reads_in_place(monkeypatch):
    """A ``.keras`` stores ``model.weights.h5`` uncompressed: read at its offset in the zip, without a child."""
    index = ckptsurgeon.open(HERE / "fuzz/seeds/tiny.keras")
    monkeypatch.setenv("CKPTSURGEON_HDF5_READER", "libhdf5")
    ref = ckptsurgeon.open(HERE / "fuzz/seeds/tiny.keras")
    assert list(index) == list(ref) and all(index[k].numpy().tobytes() == ref[k].numpy().tobytes() for k in index)
