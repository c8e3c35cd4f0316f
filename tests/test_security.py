"""Hostile checkpoints: refused with one line and exit 1, and nothing they ask for ever happens."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import ckptsurgeon
from conftest import CORPUS

HERE = Path(__file__).parent


def audited(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "audit.log"
    proc = subprocess.run([sys.executable, str(HERE / "audited_cli.py"), str(log), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    return proc, log.read_text() if log.exists() else ""


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(canary: Path):
    import builtins

    return {
        "os_system": _Evil(os.system, f"touch {canary}"),
        "exec": _Evil(builtins.exec, f"open({str(canary)!r}, 'w').write('x')"),
        "subprocess": _Evil(subprocess.call, ["touch", str(canary)]),
    }


def _torch_zip(path: Path, payload, protocol: int) -> None:
    data = pickle.dumps({"weight": payload}, protocol=protocol)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")


def _torch_legacy(path: Path, payload, protocol: int) -> None:
    out = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, out, protocol=2)
    pickle.dump({"weight": payload}, out, protocol=protocol)
    pickle.dump([], out, protocol=2)
    path.write_bytes(out.getvalue())


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("payload", ["os_system", "exec", "subprocess"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_torch_files_are_refused(tmp_path, container, payload, protocol):
    canary = tmp_path / "canary"
    path = tmp_path / "evil.pt"
    (_torch_zip if container == "zip" else _torch_legacy)(path, _payloads(canary)[payload], protocol)
    for command in (["ls", str(path)], ["extract", str(path), "-s", "**", "-o", str(tmp_path / "o.safetensors")]):
        proc, audit = audited(tmp_path, *command)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "refusing global" in lines[0]
        assert "Traceback" not in proc.stderr
        assert not canary.exists() and not audit
    assert not (tmp_path / "o.safetensors").exists()


def test_allow_global_never_admits_callables(tmp_path):
    path = tmp_path / "evil.pt"
    _torch_zip(path, _payloads(tmp_path / "canary")["os_system"], 2)
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="--allow-global 'posix.system' refused"):
        ckptsurgeon.open(path, allow_globals=["posix.system"])


def test_allow_global_admits_a_data_class_inertly(tmp_path):
    class Config:  # pickled as tests.test_security.Config... we fake the module name
        pass

    Config.__module__, Config.__qualname__ = "myproj.config", "Config"
    sys.modules.setdefault("myproj", type(sys)("myproj"))
    sys.modules["myproj.config"] = mod = type(sys)("myproj.config")
    mod.Config = Config
    cfg = Config()
    cfg.hidden = 16
    path = tmp_path / "cfg.pt"
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2), "config": cfg}, path)
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="--allow-global myproj.config.Config"):
        ckptsurgeon.open(path)
    index = ckptsurgeon.open(path, allow_globals=["myproj.config.Config"])
    assert list(index) == ["w"] and "hidden" in str(index.metadata["config"])


def test_tar_legacy_is_refused(tmp_path):
    path = tmp_path / "old.tar.pt"
    with tarfile.open(path, "w") as tf:
        data = pickle.dumps({"a": 1})
        info = tarfile.TarInfo("pickle")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="tar-based"):
        ckptsurgeon.open(path)


def _zip_with(path: Path, entries, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in entries:
            zf.writestr(name, data)


def test_zip_tricks_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    with zipfile.ZipFile(good) as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    deflated = tmp_path / "deflated.pt"
    _zip_with(deflated, entries, zipfile.ZIP_DEFLATED)
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="compressed"):
        ckptsurgeon.open(deflated)
    escaping = tmp_path / "escape.pt"
    _zip_with(escaping, entries + [("archive/../../etc/x", b"x")])
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="escapes"):
        ckptsurgeon.open(escaping)
    dup = tmp_path / "dup.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _zip_with(dup, entries + [entries[0]])
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="appears twice"):
        ckptsurgeon.open(dup)


def test_symlinks_are_not_followed(tmp_path):
    torch = pytest.importorskip("torch")
    real = tmp_path / "real.pt"
    torch.save({"w": torch.zeros(1)}, real)
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="symbolic link"):
        ckptsurgeon.open(link)


def test_declared_storage_larger_than_file_is_refused(tmp_path):
    """A tensor whose size/offset reach past its storage: refused before any allocation."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    # Shrink the storage member: the pickle still claims 4 floats.
    entries = [(n, d[:4] if "/data/" in n else d) for n, d in entries]
    bad = tmp_path / "bad.pt"
    _zip_with(bad, entries)
    with pytest.raises(ckptsurgeon.FormatError, match="declares 4 elements"):
        ckptsurgeon.open(bad)


BENIGN = {"benign0_v0.pkl", "benign0_v3.pkl", "benign0_v4.pkl", "pytorch_model.bin", "new_pytorch_model.bin",
          "int_array.npy", "int_arrays.npz", "int_arrays_compressed.npz"}
CORPUS_FILES = sorted(p for p in CORPUS.glob("*/*") if p.name != "LICENSE") if CORPUS.exists() else []


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus not present")
@pytest.mark.parametrize("sample", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_public_hostile_corpus(tmp_path, sample):
    proc, audit = audited(tmp_path, "ls", str(sample))
    assert not audit, audit
    assert "pwned" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
    if sample.name in BENIGN:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")


def test_the_opcode_scan_sees_exactly_what_pickletools_sees():
    import pickletools

    from ckptsurgeon.errors import FormatError as Malformed
    from ckptsurgeon.formats.pytorch.safepickle import _ALLOWED_OPCODES, scan_opcodes

    samples = [{"a": [1, -2, 2**70, 1.5, "x" * 300, b"y" * 300, (1, 2, 3), None, True], "b": {3, 4}, "c": frozenset([5])},
               list(range(300)), "i\nos\nsystem\n", b"\x82\x83\x92", bytearray(b"q" * 10)]
    for proto in range(6):
        for obj in samples:
            data = pickle.dumps(obj, protocol=proto)
            refused = sorted({op.name for op, _, _ in pickletools.genops(data)} - _ALLOWED_OPCODES)
            if refused:
                with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match=refused[0]):
                    scan_opcodes(data, "x")
            else:
                scan_opcodes(data, "x")  # refused opcode bytes inside arguments are data, not opcodes
            for cut in (1, len(data) // 2, len(data) - 1):
                if not refused:
                    with pytest.raises(Malformed):
                        scan_opcodes(data[:cut], "x")
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="INST"):
        scan_opcodes(b"(ios\nsystem\nS'echo'\n.", "x")
    with pytest.raises(Malformed, match="unknown opcode"):
        scan_opcodes(b"\x80\x02\xff.", "x")


def test_argument_bytes_that_look_like_a_memoized_tuple_do_not_cost_the_exact_check(monkeypatch):
    """Every 256th LONG_BINPUT index of a 100k-tensor torch pickle holds ``) q \\x02``: EMPTY_TUPLE, BINPUT 2 as
    bytes, inside an argument. Taken for opcodes, it sent ``ls`` into the exact expansion model (5.6 s)."""
    from ckptsurgeon.formats.pytorch import safepickle

    calls = []
    monkeypatch.setattr(safepickle, "_check_expansion", lambda data, where: calls.append(where))
    pushes = b"X\x01\x00\x00\x00a" * 27_000  # one-letter strings, as torch's keys: longer than the memo index below
    memo2 = b"K\x07q\x02h\x02"  # BINPUT 2 of an int, BINGET 2
    fake = b"K\x00K\x00\x86r" + (0x00027129).to_bytes(4, "little")  # TUPLE2, LONG_BINPUT 160,041 = bytes ) q \x02 \x00
    safepickle.scan_opcodes(b"\x80\x02" + memo2 + pushes + fake + b".", "fake")
    assert calls == []
    real = b"K\x00K\x00\x86q\x02h\x02"  # TUPLE2, BINPUT 2, BINGET 2: a memoized tuple read back
    safepickle.scan_opcodes(b"\x80\x02" + pushes + real + b".", "real")
    assert calls == ["real"]


def test_the_scan_steps_over_learned_memo_reads_but_still_records_new_ones(monkeypatch):
    """After 512 stops the scan's run also steps over BINGETs of indices it has recorded (a torch pickle reads the
    same few globals back for every tensor); a memo read of any other index must still stop it and be recorded."""
    from ckptsurgeon.formats.pytorch import safepickle

    calls, learned = [], []
    monkeypatch.setattr(safepickle, "_check_expansion", lambda data, where: calls.append(where))
    fixed_run = safepickle._fixed_run
    monkeypatch.setattr(safepickle, "_fixed_run", lambda known=frozenset(): learned.append(known) or fixed_run(known))
    pad = (b"X\x14\x00\x00\x00" + b"k" * 20 + b"h\x00") * 3000  # 20-byte strings stop the run; BINGET 0 repeated
    head = b"\x80\x02K\x07q\x00"  # an int memoized at 0
    safepickle.scan_opcodes(head + pad + b"K\x00K\x00\x86q\x05" + b".", "unread")
    assert calls == [] and frozenset({0}) in learned
    safepickle.scan_opcodes(head + pad + b"K\x00K\x00\x86q\x05h\x05" + b".", "read back")  # a tuple read back
    assert calls == ["read back"]
    safepickle.scan_opcodes(head + b"K\x00K\x00\x86q\x00" + pad + b".", "learned index")  # BINGET 0 reads a tuple
    assert calls == ["read back", "learned index"]
