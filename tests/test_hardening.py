"""Issue 13: damaged and hostile files never crash, hang, blow up memory or surface an internal error.

One test (or more) per case of the issue; each runs the real CLI in a subprocess and asserts exit 1
with one ``error:`` line naming the file and the problem, or the documented behaviour.
"""
from __future__ import annotations

import json
import os
import signal
import re
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import ckptsurgeon
import hostile
from ckptsurgeon import isolate
import tf_craft
from ckptsurgeon.errors import FormatError, OutputError, UnsafeCheckpointError
from conftest import FIXTURES, run_cli

HERE = Path(__file__).parent
REPRO = HERE / "reproducers"
SEEDS = HERE / "fuzz" / "seeds"


def refused(*args: str, match: str = "", env: dict | None = None, timeout: float = 60) -> str:
    """Run the CLI; it must exit 1 with one ``error:`` line (not an internal error) containing ``match``."""
    exe = Path(sys.executable).parent / "ckptsurgeon"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-500:], proc.stderr[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "internal error" not in lines[0] and "Traceback" not in proc.stderr, lines[0]
    assert match in lines[0], lines[0]
    return lines[0]


# ---- 1-2: libhdf5 crashes and hangs ------------------------------------------------------------

def _keras_with(weights: bytes, path: Path) -> Path:
    with zipfile.ZipFile(SEEDS / "tiny.keras") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, weights if name == "model.weights.h5" else data)
    return path


def test_libhdf5_segfault_is_a_one_line_error(tmp_path):
    """One flipped byte in a Keras 3 .weights.h5 crashed libhdf5 (SIGSEGV) while attributes were read."""
    line = refused("ls", str(REPRO / "hdf5-segv.weights.h5"))
    assert "hdf5-segv.weights.h5" in line
    keras = _keras_with((REPRO / "hdf5-segv.weights.h5").read_bytes(), tmp_path / "segv.keras")
    line = refused("extract", str(keras), "-o", str(tmp_path / "o.safetensors"))
    assert "segv.keras:model.weights.h5" in line
    assert list(tmp_path.iterdir()) == [keras]


@pytest.mark.parametrize("name", ["hdf5-hang.weights.h5", "hdf5-attr-hang.h5"])
@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_libhdf5_hang_is_bounded(tmp_path, name, mode):
    """libhdf5 looped forever on these (one flipped byte each, the second in a tf.keras model's attributes)."""
    env = {"CKPTSURGEON_HDF5_TIMEOUT": "2", "CKPTSURGEON_ISOLATE": mode}
    refused("ls", str(REPRO / name), match="did not finish within 2 s", env=env)
    keras = _keras_with((REPRO / name).read_bytes(), tmp_path / "hang.keras")
    refused("ls", str(keras), match="did not finish within 2 s", env=env)


@pytest.mark.parametrize("name", ["hdf5-hang.weights.h5", "hdf5-attr-hang.h5"])
def test_libhdf5_hang_on_a_small_file_is_refused_in_seconds(name):
    """With no CKPTSURGEON_HDF5_TIMEOUT set, the limit grows with the file: 5 s for these 18 and 57 KB files,
    not 30 s (a service scanning many files is not held up)."""
    import time

    env = {k: v for k, v in os.environ.items() if k != "CKPTSURGEON_HDF5_TIMEOUT"}
    start = time.monotonic()
    exe = Path(sys.executable).parent / "ckptsurgeon"
    proc = subprocess.run([str(exe), "ls", str(REPRO / name)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and "did not finish within 5 s" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 15


def test_hdf5_values_equal_h5py_for_every_storage_layout():
    """Contiguous datasets are read by byte range, chunked/compressed/compact ones in the child: all exact."""
    import h5py

    index = ckptsurgeon.open(SEEDS / "generic.h5")
    with h5py.File(SEEDS / "generic.h5", "r") as f:
        for path, ref in index.items():
            expected = f[path][()]
            got = ref.numpy()
            assert got.dtype == expected.dtype.newbyteorder("=") and got.tobytes() == expected.astype(got.dtype).tobytes()
    assert index["block/inner/contiguous"].in_place and not index["block/inner/chunked"].in_place


def test_a_crash_in_the_dataset_child_is_a_one_line_error(tmp_path, monkeypatch):
    """Reading a chunked dataset also happens in a child: a crash there is an error, not a dead process.

    The patched entry point exists only in this process, so the child must be a fork: earlier tests can leave
    a thread behind (tqdm's monitor) that makes ``run_isolated`` choose a fresh interpreter instead."""
    monkeypatch.setitem(isolate.ENTRY_POINTS, "hdf5.read", "hostile:segfault")
    monkeypatch.setattr(isolate, "_fork_ok", lambda: True)
    index = ckptsurgeon.open(SEEDS / "generic.h5")
    with pytest.raises(FormatError, match=r"libhdf5 reading dataset /block/inner/chunked .*(crashed|stopped)"):
        index["block/inner/chunked"].numpy()


def test_the_metadata_child_may_not_take_700_mb_for_a_small_file():
    """A mutated 57 KB model.h5 made libhdf5 take 1.1 GB in the metadata child, under the 1024 MiB it was
    allowed then (found by the fuzzer). The child now gets 512 MiB over its start (plus three times the
    inflated size of a deflated .keras member): 700 MB is refused in one line, and never resident.
    In a fresh process, so that its children's peak is this child's alone."""
    code = (
        "import resource, sys; sys.path.insert(0, sys.argv[1])\n"
        "import ckptsurgeon\n"
        "from ckptsurgeon import isolate\n"
        "isolate.ENTRY_POINTS['hdf5.describe'] = 'hostile:allocate_700mb'\n"
        "isolate._fork_ok = lambda: True\n"
        "try:\n    ckptsurgeon.open(sys.argv[2])\nexcept ckptsurgeon.FormatError as exc:\n    print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(SEEDS / "generic.h5")],
                          capture_output=True, text=True, timeout=120)
    error, peak_mib = proc.stdout.strip().splitlines()
    assert re.search("needs more than the 512 MiB|ran out of its memory", error), proc.stdout + proc.stderr
    assert int(peak_mib) < 600


def test_hdf5_bad_link_name_and_unknown_string_encoding(tmp_path):
    refused("ls", str(hostile.hdf5_bad_link_name(tmp_path / "name.h5")), match="is not UTF-8 text")
    refused("ls", str(hostile.hdf5_unknown_string_encoding(tmp_path / "enc.h5")), match="Unknown string encoding")


# ---- 3: npy header -----------------------------------------------------------------------------

def test_long_npy_header_is_refused_before_parsing(tmp_path):
    """A 70 KB v2 header sent numpy's header tokenizer past 120 s."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }" + b" " * 70000 + b"L\n"
    path = tmp_path / "long.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header + b"\x00" * 12)
    refused("ls", str(path), match=f"header of {len(header)} bytes")
    npz = tmp_path / "long.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("a.npy", path.read_bytes())
    refused("ls", str(npz), match=f"header of {len(header)} bytes")


@pytest.mark.parametrize("descr, shape, match", [
    ("'<V0'", "(3,)", "of size 0"),
    ("'<f-1'", "(3,)", "invalid .npy header"),
    ("'<f4'", "(" + "1, " * 65 + ")", "65 dimensions"),
    ("'<f4'", f"({2**64},)", "invalid dimension"),
    ("'<f4'", f"({2**40}, {2**40})", "refusing"),
    ("__import__('os').system('true')", "(3,)", "invalid .npy header"),
])
def test_npy_itemsize_dims_and_sizes(tmp_path, descr, shape, match):
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}\n".encode()
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 12)
    for cmd in (["ls", str(path)], ["extract", str(path), "-o", str(tmp_path / "o.safetensors")]):
        refused(*cmd, match=match)


# ---- 4: pickle graphs --------------------------------------------------------------------------

@pytest.mark.parametrize("builder, match", [
    (hostile.self_referential_pickle, "holds a cycle"),
    (hostile.list_cycle_pickle, "holds a cycle"),
    (hostile.shared_dicts_pickle, "expands to more than"),
    (hostile.shared_ints_pickle, "expands to more than"),
    (hostile.tuple_key_pickle, "hashing or comparing it would not end"),
    (hostile.frozenset_bomb_pickle, "hashing or comparing it would not end"),
    (hostile.memo_index_pickle, "memo index 678,720,865 at byte 4 is larger than the pickle"),
])
def test_pickle_graphs_are_refused_quickly(tmp_path, builder, match):
    path = tmp_path / "g.pkl"
    path.write_bytes(builder())
    refused("ls", str(path), match=match, timeout=30)
    proc = run_cli("scan", str(path), "--format", "json")  # exit 1 with a report
    assert proc.returncode == 1 and not json.loads(proc.stdout)["ok"]


def test_torch_zip_referencing_one_tensor_a_million_times(tmp_path):
    """A 1 KB zip whose pickle names one tensor 2**20 times took 34 s and 2.7 GB to list."""
    path = hostile.shared_tensor_zip(tmp_path / "shared.pt")
    assert path.stat().st_size < 2000
    refused("ls", str(path), match="expands to more than", timeout=30)


def test_short_bounded_metadata_repr(tmp_path):
    path = tmp_path / "fs.pkl"
    path.write_bytes(hostile.frozenset_bomb_pickle(12))  # 4096 leaves: admitted, shown cut short
    proc = run_cli("ls", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["metadata"]["meta"]) <= 200


def test_shared_tensor_is_listed_once_with_its_aliases(tmp_path):
    path = hostile.tied_weights_zip(tmp_path / "tied.pt")
    proc = run_cli("ls", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "embed/weight  2x3  float32  24 B  (also: head/weight, lm/weight)" in proc.stdout
    assert "2 tensors, 9 parameters, 36 B (pytorch); 2 alias paths of listed tensors" in proc.stdout
    tensors = json.loads(run_cli("ls", "--json", str(path)).stdout)["tensors"]
    assert [(t["path"], t["aliases"]) for t in tensors] == [("embed/weight", ["head/weight", "lm/weight"]), ("bias", [])]
    out = tmp_path / "head.safetensors"
    assert run_cli("extract", str(path), "-s", "lm", "-o", str(out)).returncode == 0
    assert load_file(str(out))["lm.weight"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_real_tied_weights_are_aliases(tmp_path):
    torch = pytest.importorskip("torch")
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    torch.save(model.state_dict(), tmp_path / "tied.pt")
    tensors = json.loads(run_cli("ls", "--json", str(tmp_path / "tied.pt")).stdout)["tensors"]
    assert tensors == [{"path": "emb/weight", "key": "emb.weight", "dtype": "float32", "shape": [5, 3], "nbytes": 60,
                        "optimizer": False, "aliases": ["head/weight"]}]
    out = tmp_path / "all.safetensors"
    assert run_cli("extract", str(tmp_path / "tied.pt"), "-o", str(out)).returncode == 0
    loaded = load_file(str(out))
    assert sorted(loaded) == ["emb.weight", "head.weight"]  # a state dict stays loadable with strict=True
    assert (loaded["head.weight"] == emb.weight.detach().numpy()).all()


def test_second_pickle_after_stop_is_refused(tmp_path):
    canary = tmp_path / "canary"
    path = hostile.second_pickle_zip(tmp_path / "two.pt", canary)
    refused("ls", str(path), match="follow the pickle's STOP opcode")
    assert not canary.exists()


def test_legacy_storage_view_with_negative_offset(tmp_path):
    path = hostile.legacy_negative_view(tmp_path / "neg.pt")
    refused("extract", str(path), "-o", str(tmp_path / "o.safetensors"), match="malformed storage view")


# ---- 5: expanded views -------------------------------------------------------------------------

def test_expanded_view_is_refused_with_its_numbers(tmp_path):
    """65536 x 65536 float32 with strides (0, 0) on 4 bytes: extract allocated 16 GiB."""
    path = hostile.expanded_view_zip(tmp_path / "expand.pt")
    assert "65536x65536" in run_cli("ls", str(path)).stdout  # listing is fine: it reads nothing
    line = refused("extract", str(path), "-o", str(tmp_path / "o.safetensors"),
                   match="view of 4 stored bytes expanded to shape [65536, 65536]")
    assert "17,179,869,184 bytes" in line and "--allow-expanded" in line
    assert not list(tmp_path.glob("o*"))


def test_allow_expanded_writes_what_torch_expands(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.arange(3.0).reshape(3, 1).expand(3, 1_500_000)  # 18 MB from 12 bytes
    torch.save({"t": t, "small": torch.ones(1).expand(4, 4)}, tmp_path / "e.pt")
    refused("extract", str(tmp_path / "e.pt"), "-o", str(tmp_path / "o.safetensors"), match="--allow-expanded")
    assert run_cli("extract", str(tmp_path / "e.pt"), "-s", "small", "-o", str(tmp_path / "s.safetensors")).returncode == 0
    proc = run_cli("extract", str(tmp_path / "e.pt"), "--allow-expanded", "-o", str(tmp_path / "o.safetensors"))
    assert proc.returncode == 0, proc.stderr
    assert (load_file(str(tmp_path / "o.safetensors"))["t"] == t.numpy()).all()


# ---- 6: FIFOs and devices, at every entry point ------------------------------------------------

def _blocking_guard(proc_args: list[str]) -> str:
    return refused(*proc_args, timeout=30)


@pytest.fixture
def fifo_world(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    good = FIXTURES / "torch" / "model.pt"
    tf = tmp_path / "tf"
    tf.mkdir()
    for p in (FIXTURES / "tensorflow" / "tf1_lstmcell").glob("model.ckpt.*"):
        (tf / p.name).write_bytes(p.read_bytes())
    return fifo, good, tf


def test_fifo_as_checkpoint_for_every_command(fifo_world, tmp_path):
    fifo, good, _ = fifo_world
    out = str(tmp_path / "o.safetensors")
    for args in (["ls", str(fifo)], ["tree", str(fifo)], ["extract", str(fifo), "-o", out], ["scan", str(fifo)],
                 ["graft", str(good), "--into", str(fifo), "-o", out, "--map", "encoder=encoder"],
                 ["validate", str(fifo), "--like", str(good)], ["ls", "/dev/zero"]):
        proc = subprocess.run([str(Path(sys.executable).parent / "ckptsurgeon"), *args], capture_output=True, text=True,
                              timeout=30)
        said = proc.stdout if args[0] in ("scan", "validate") else proc.stderr  # an unreadable input is in their report
        assert proc.returncode == 1 and "not a regular file" in said, (args, proc.stdout, proc.stderr)


def test_fifo_side_files(fifo_world, tmp_path):
    fifo, good, tf = fifo_world
    out = str(tmp_path / "o.safetensors")
    proc = subprocess.run([str(Path(sys.executable).parent / "ckptsurgeon"), "validate", str(good), "--layout", str(fifo)],
                          capture_output=True, text=True, timeout=30)  # a lock that cannot be read is in the report
    assert proc.returncode == 1 and "not a regular file" in proc.stdout and not proc.stderr, (proc.stdout, proc.stderr)
    _blocking_guard(["remap", str(good), "--rules", str(fifo), "-o", out])
    _blocking_guard(["graft", str(good), "--into", str(good), "--rules", str(fifo), "-o", out])
    os.mkfifo(tf / "checkpoint")  # a TF folder whose state file is a FIFO
    refused("ls", str(tf), match="not a regular file", timeout=30)
    (tf / "checkpoint").unlink()
    data = tf / "model.ckpt.data-00000-of-00001"
    data.unlink()
    os.mkfifo(data)  # a data shard that is a FIFO
    refused("extract", str(tf / "model.ckpt"), "-o", out, match="not a regular file", timeout=30)


# ---- internal errors ---------------------------------------------------------------------------

def _zip_bytes(members: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_negative_zip_offset(tmp_path):
    data = bytearray((SEEDS / "arrays.npz").read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<I", data, eocd + 16)
    struct.pack_into("<I", data, eocd + 16, cd_offset + 5000)  # zipfile then puts headers at negative offsets
    (tmp_path / "neg.npz").write_bytes(bytes(data))
    refused("ls", str(tmp_path / "neg.npz"), match="neg.npz")


def test_zlib_error_and_zip_flag_bits(tmp_path):
    data = bytearray((SEEDS / "compressed.npz").read_bytes())
    n_name, n_extra = struct.unpack_from("<HH", data, 26)
    start = 30 + n_name + n_extra
    data[start + 4:start + 40] = b"\xff" * 36  # damage the deflate stream of the first member
    (tmp_path / "z.npz").write_bytes(bytes(data))
    refused("ls", str(tmp_path / "z.npz"), match="z.npz")
    for bit in (0x20, 0x40):
        data = bytearray((SEEDS / "arrays.npz").read_bytes())
        cd = data.find(b"PK\x01\x02")
        struct.pack_into("<H", data, cd + 8, bit)
        lh = data.find(b"PK\x03\x04")
        struct.pack_into("<H", data, lh + 6, bit)
        (tmp_path / f"f{bit}.npz").write_bytes(bytes(data))
        refused("ls", str(tmp_path / f"f{bit}.npz"), match="unsupported zip features")


def _safetensors(path: Path, header: bytes, body: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return path


@pytest.mark.parametrize("header, match", [
    (b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nests too deeply"),
    (b'{"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
    (b'{"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
    (b'{"a": {"dtype": "F32", "shape": [' + b"1," * 64 + b'1], "data_offsets": [0, 4]}}', "65 dimensions"),
    (b'{"a": {"dtype": "F32", "shape": [18446744073709551616, 0], "data_offsets": [0, 0]}}', "invalid dimension"),
])
def test_safetensors_header_damage(tmp_path, header, match):
    path = _safetensors(tmp_path / "x.safetensors", header, b"\x00" * 4)
    refused("extract", str(path), "-o", str(tmp_path / "o.npz"), match=match)


def test_tf_index_wrong_wire_type_and_bytes_shard_id(tmp_path):
    """A field of the wrong wire type is skipped as protobuf does (shard 0, dtype unknown), never a crash."""
    w = {"w": np.arange(4, dtype=np.float32)}
    for name, tweak in (("a", lambda k, f: f.update(shard=b"\x00")), ("b", lambda k, f: f.update(dtype=b"\x01")),
                        ("c", lambda k, f: f.update(shape=[1 << 40]))):
        tf_craft.write_bundle(tmp_path / name, w, tweak=tweak)
        for cmd in (["ls", str(tmp_path / f"{name}.index")],
                    ["extract", str(tmp_path / f"{name}.index"), "-o", str(tmp_path / f"{name}.safetensors")]):
            proc = run_cli(*cmd)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode in (0, 1) and len(lines) == proc.returncode, proc.stderr
            assert "internal error" not in proc.stderr
    pairs = [(b"", tf_craft.field(1, 1)), (b"w", tf_craft.varint(1 << 3 | 7) + b"\x00")]  # wire type 7
    (tmp_path / "d.index").write_bytes(tf_craft.table(pairs))
    (tmp_path / "d.data-00000-of-00001").write_bytes(b"")
    refused("ls", str(tmp_path / "d.index"), match="malformed entry for tensor 'w': unsupported protobuf wire type 7")
    header = [(b"", tf_craft.field(1, b"\x01")), (b"w", tf_craft.field(1, 1))]  # shard count as bytes
    (tmp_path / "e.index").write_bytes(tf_craft.table(header))
    refused("ls", str(tmp_path / "e.index"), match="malformed bundle header")


@pytest.mark.parametrize("named, match", [
    ("model\\q.ckpt", "invalid escape \\q"),
    ("model\\777", "invalid escape"),
    ("\\303\\050", "not UTF-8"),
    ("../other/model.ckpt", "outside"),
    ("sub/../../other/model.ckpt", "outside"),
])
def test_tf_state_file_escapes_and_paths(tmp_path, named, match):
    for folder in ("run", "other"):
        (tmp_path / folder).mkdir()
        for p in (FIXTURES / "tensorflow" / "tf1_lstmcell").glob("model.ckpt.*"):
            (tmp_path / folder / p.name).write_bytes(p.read_bytes())
    (tmp_path / "run" / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')
    refused("ls", str(tmp_path / "run"), match=match)


@pytest.mark.parametrize("target, refused_", [("../other/model.ckpt", True), ("inside.ckpt", False)])
def test_tf_state_file_naming_a_link_is_followed_only_inside_its_folder(tmp_path, target, refused_):
    """The state file names a plain name that is a link: one that leads out of the folder is refused, like
    ``../other``; one within it is the folder's own (what the realpath of every level of the path says)."""
    for folder in ("run", "other"):
        (tmp_path / folder).mkdir()
        for p in (FIXTURES / "tensorflow" / "tf1_lstmcell").glob("model.ckpt.*"):
            (tmp_path / folder / p.name).write_bytes(p.read_bytes())
    (tmp_path / "run" / "link.ckpt").symlink_to(target)
    (tmp_path / "run" / "checkpoint").write_text('model_checkpoint_path: "link.ckpt"\n')
    if refused_:
        refused("ls", str(tmp_path / "run"), match="outside")
    else:  # inside the folder: followed to what it names (no link.ckpt.index: that is the refusal)
        refused("ls", str(tmp_path / "run"), match="no link.ckpt.index")


def test_tf_state_file_escapes_that_tensorflow_writes_still_work(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for p in (FIXTURES / "tensorflow" / "tf1_lstmcell").glob("model.ckpt.*"):
        (run / p.name.replace("model", 'mo"del')).write_bytes(p.read_bytes())
    (run / "checkpoint").write_text('model_checkpoint_path: "mo\\"del.ckpt"\n')
    index = ckptsurgeon.open(run)
    assert index.files[0].endswith('mo"del.ckpt.index')
    assert len(index) == len(ckptsurgeon.open(FIXTURES / "tensorflow" / "tf1_lstmcell" / "model.ckpt"))


@pytest.mark.skipif(os.geteuid() != 0 and not hasattr(os, "chmod"), reason="needs chattr (root) or chmod")
def test_read_only_or_immutable_output_folder(tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i not permitted here")
    else:
        out.chmod(0o555)
    try:
        line = refused("extract", str(SEEDS / "model.safetensors"), "-o", str(out / "x.safetensors"), match="cannot write")
        assert str(out / "x.safetensors") in line
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True) if os.geteuid() == 0 else out.chmod(0o755)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS", "EDQUOT"])
def test_full_or_read_only_disk_is_an_output_error(tmp_path, monkeypatch, errno_name):
    import errno

    from ckptsurgeon import atomic

    code = getattr(errno, errno_name)

    def full(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", full)  # the disk fills up as the output is flushed
    with pytest.raises(OutputError, match=f"o.safetensors: cannot write: {os.strerror(code)}"):
        ckptsurgeon.extract(SEEDS / "model.safetensors", tmp_path / "o.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_library_messages_are_one_line():
    exc = FormatError("x.npy: header\nTo allow loading, adjust `max_header_size`\n\tor not \x1b[31m")
    assert str(exc) == "x.npy: header To allow loading, adjust `max_header_size` or not ?[31m"
    assert str(UnsafeCheckpointError("a\r\nb")) == "a b"


_SLOW_SAVE = """
import sys, time, numpy as np, ckptsurgeon
from ckptsurgeon.index import TensorRef
def slow():
    print("writing", flush=True); time.sleep(60); return np.zeros(3, np.float32)
ckptsurgeon.save({"a": TensorRef("a", "a", np.dtype("float32"), (3,), "mem", loader=slow)}, sys.argv[1])
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_termination_during_a_write_leaves_no_temporary_file(tmp_path, sig):
    out = tmp_path / "x.safetensors"
    # the signal's default action, even when this run inherited it ignored (CI under nohup ignores SIGHUP)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(out)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "writing"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file exists now
    proc.send_signal(sig)
    assert proc.wait(30) == -sig  # it still dies of the signal, as the caller expects
    assert list(tmp_path.iterdir()) == []


def test_a_handler_the_program_installed_is_kept(tmp_path):
    from ckptsurgeon.atomic import atomic_output

    seen = []
    old = signal.signal(signal.SIGHUP, lambda *_: seen.append(1))
    try:
        with atomic_output(str(tmp_path / "x.bin")) as fh:
            fh.write(b"x")
            os.kill(os.getpid(), signal.SIGHUP)
        assert seen == [1] and (tmp_path / "x.bin").read_bytes() == b"x"
    finally:
        signal.signal(signal.SIGHUP, old)


def test_isolation_falls_back_to_a_fresh_interpreter_with_threads():
    """With other Python threads running, the HDF5 child is spawned, not forked (a fork could inherit a held lock)."""
    from ckptsurgeon import isolate

    before = isolate._fork_ok()  # False already when an earlier test left a thread behind (tqdm's monitor)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not isolate._fork_ok()
        assert len(ckptsurgeon.open(SEEDS / "tiny.weights.h5")) == 5
    finally:
        stop.set()
        t.join()
    assert isolate._fork_ok() == before


def test_save_refuses_expanded_views_before_writing(tmp_path):
    index = ckptsurgeon.open(hostile.expanded_view_zip(tmp_path / "e.pt"))
    with pytest.raises(UnsafeCheckpointError, match="--allow-expanded"):
        ckptsurgeon.save(index, tmp_path / "o.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]


@pytest.mark.parametrize("edit,needle", [
    (("weight_ih_l1", (16, 5)), "weight_ih_l1 is [16, 5], expected [16, 4]"),
    (("bias_hh_l0", (15,)), "bias_hh_l0 is [15], expected [16]"),
])
def test_weights_that_do_not_fit_their_layout_are_one_line_refusals(tmp_path, edit, needle):
    """An LSTM whose weight or bias has the wrong length: rnn names it; stats, extract --to, verify and diff refuse in
    one line naming the tensor and the shape expected (they were internal errors: broadcasting, IndexError)."""
    import torch
    from click.testing import CliRunner

    from ckptsurgeon.cli import cli

    state = torch.nn.LSTM(3, 4, num_layers=2).state_dict()
    state[edit[0]] = torch.randn(*edit[1])
    torch.save(state, tmp_path / "bad.pt")
    runner = CliRunner()
    shown = runner.invoke(cli, ["rnn", str(tmp_path / "bad.pt")])
    assert shown.exit_code == 0 and needle in shown.output
    for args in (["stats", str(tmp_path / "bad.pt")], ["extract", str(tmp_path / "bad.pt"), "--to", "keras", "-o",
                 str(tmp_path / "x.safetensors")], ["verify", str(tmp_path / "bad.pt"), str(tmp_path / "bad.pt")]):
        out = runner.invoke(cli, args)
        assert out.exit_code == 1 and out.output.startswith("error: ") and "internal error" not in out.output, out.output
        assert out.output.count("\n") == 1, out.output
    assert not (tmp_path / "x.safetensors").exists()


def test_inf_and_huge_weights_make_no_warnings_on_stderr(tmp_path):
    """inf and 1e38 weights: diff and verify report (FAIL, different) without numpy RuntimeWarnings on stderr."""
    import torch

    from conftest import run_cli

    state = torch.nn.LSTM(3, 4).state_dict()
    state["weight_ih_l0"][0, 0] = float("inf")
    state["weight_hh_l0"][1, 1] = 1e38
    torch.save(state, tmp_path / "inf.pt")
    torch.save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "ok.pt")
    for command in ("verify", "diff"):
        res = run_cli(command, str(tmp_path / "inf.pt"), str(tmp_path / "ok.pt"))
        assert res.returncode == 1 and res.stderr == "", (command, res.stderr)
        assert ("FAIL" if command == "verify" else "different") in res.stdout
