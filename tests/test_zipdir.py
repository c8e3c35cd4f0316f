"""The zip reader (``formats/zipdir.py`` + ``SafeZip``) against ``zipfile`` itself: same members, same bytes,
on archives made by torch.save, numpy and zipfile in every layout those write (zip64, comments, prepended
bytes, deflate), and one-line refusals where it is stricter."""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from ckptsurgeon.errors import FormatError
from ckptsurgeon.formats.zipdir import read_directory
from ckptsurgeon.formats.zipsafe import SafeZip


def _members(path) -> dict[str, tuple[int, int, int, int]]:
    """name -> (compress_type, crc, compress_size, file_size), as zipfile reads them."""
    with zipfile.ZipFile(path) as zf:
        return {i.filename: (i.compress_type, i.CRC, i.compress_size, i.file_size) for i in zf.infolist()}


def _ours(path) -> dict[str, tuple[int, int, int, int]]:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        directory = read_directory(lambda o, n: os.pread(fh.fileno(), n, o), size, str(path))
    return {e.name: (e.compress_type, e.crc, e.compress_size, e.file_size) for e in directory.entries}


def _write(path, members: dict[str, bytes], method=zipfile.ZIP_STORED, comment=b"", force_zip64=False,
           utf8_names=False) -> None:
    with zipfile.ZipFile(path, "w", method, allowZip64=True) as zf:
        zf.comment = comment
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with zf.open(info, "w", force_zip64=force_zip64) as fh:
                fh.write(data)


def _check_against_zipfile(path) -> None:
    assert _ours(path) == _members(path)
    zf = SafeZip(str(path))
    with zipfile.ZipFile(path) as ref:
        for name in ref.namelist():
            assert zf.read(name) == ref.read(name)
            assert zf.read_head(name, 7) == ref.read(name)[:7]
            assert zf.read_with(name, lambda fh: fh.read()) == ref.read(name)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("layout", ["plain", "zip64", "comment", "unicode"])
def test_members_and_bytes_equal_zipfile_s(tmp_path, method, layout):
    rng = np.random.default_rng(0)
    members = {f"archive/data/{i}": rng.integers(0, 4, 3000 + 7 * i, dtype=np.uint8).tobytes() for i in range(5)}
    members["archive/data.pkl"] = b"\x80\x02}q\x00."
    if layout == "unicode":
        members["archive/data/gewicht-ä-层"] = b"x" * 100
    path = tmp_path / "a.zip"
    _write(path, members, method, comment=b"a comment\x00PK" * 3 if layout == "comment" else b"",
           force_zip64=layout == "zip64")
    _check_against_zipfile(path)


def test_real_torch_save_and_npz(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({f"layer{i}.weight": torch.randn(3, i + 1) for i in range(50)}, tmp_path / "m.pt")
    _check_against_zipfile(tmp_path / "m.pt")
    np.savez_compressed(tmp_path / "c.npz", a=np.arange(1000.0), b=np.zeros((30, 30), np.int8))
    _check_against_zipfile(tmp_path / "c.npz")


def test_prepended_bytes_shift_every_offset_as_zipfile_reads_them(tmp_path):
    inner = tmp_path / "inner.zip"
    _write(inner, {"a/x": b"hello" * 100, "a/y": b"world"}, zipfile.ZIP_DEFLATED)
    path = tmp_path / "stub.zip"
    path.write_bytes(b"#!/bin/sh\nexit 0\n" * 10 + inner.read_bytes())
    _check_against_zipfile(path)


def test_zip64_archive_of_more_than_65535_members(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(70_000):
            zf.writestr(f"d/{i}", b"")
    assert _ours(path) == _members(path)


def _deflated(tmp_path, data: bytes = b"abc" * 10_000) -> tuple[bytearray, int]:
    path = tmp_path / "d.zip"
    _write(path, {"d/x": data}, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    return raw, raw.find(b"PK\x01\x02")


@pytest.mark.parametrize("damage, match", [
    ("crc", "CRC-32 mismatch"),
    ("shorter", "ends .* before its declared size"),
    ("longer", "inflates past its declared size"),
    ("stream", "damaged deflate data"),
])
def test_damaged_deflated_members_are_one_line_errors(tmp_path, damage, match):
    raw, cd = _deflated(tmp_path)
    if damage == "crc":
        struct.pack_into("<I", raw, cd + 16, (struct.unpack_from("<I", raw, cd + 16)[0] + 1) & 0xFFFFFFFF)
    elif damage in ("shorter", "longer"):
        (size,) = struct.unpack_from("<I", raw, cd + 24)
        struct.pack_into("<I", raw, cd + 24, size + 10 if damage == "shorter" else size - 10)
    else:
        raw[40:80] = b"\xff" * 40
    path = tmp_path / "bad.zip"
    path.write_bytes(bytes(raw))
    zf = SafeZip(str(path))
    with pytest.raises(FormatError, match=match):
        zf.read("d/x")
    with pytest.raises(FormatError, match=match):
        zf.read_with("d/x", lambda fh: fh.read())


@pytest.mark.parametrize("damage, match", [
    ("nul", "holds a NUL byte"),
    ("utf8", "flagged UTF-8 but is not"),
    ("no_end", "not a zip archive"),
    ("cd_offset", "does not lie before its end record"),
    ("cd_size", "does not lie before its end record|truncated central directory|bad central directory"),
    ("entry_sig", "bad central directory entry"),
    ("version", "zip version 9.9"),
    ("disks", "spanning several disks"),
])
def test_damaged_directories_are_one_line_errors(tmp_path, damage, match):
    path = tmp_path / "s.zip"
    _write(path, {"d/abc": b"x" * 50, "d/xyz": b"y" * 10})
    raw = bytearray(path.read_bytes())
    cd, end = raw.find(b"PK\x01\x02"), raw.rfind(b"PK\x05\x06")
    name_at = cd + 46
    if damage == "nul":
        raw[name_at + 2] = 0
    elif damage == "utf8":
        struct.pack_into("<H", raw, cd + 8, 0x800)
        raw[name_at + 2:name_at + 4] = b"\xc3\x28"
    elif damage == "no_end":
        raw[end:end + 4] = b"PK\x00\x00"
    elif damage == "cd_offset":
        struct.pack_into("<I", raw, end + 16, len(raw))
    elif damage == "cd_size":
        struct.pack_into("<I", raw, end + 12, struct.unpack_from("<I", raw, end + 12)[0] + 9)
    elif damage == "entry_sig":
        raw[cd:cd + 4] = b"PK\x09\x09"
    elif damage == "version":
        raw[cd + 6] = 99
    else:
        struct.pack_into("<H", raw, end + 4, 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=match):
        SafeZip(str(path))


def test_the_directory_and_headers_are_read_in_few_calls(tmp_path, monkeypatch):
    """100,000 members: the directory in one read, local headers in 64 KiB blocks (not one read each)."""
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(20_000):
            zf.writestr(f"d/{i}", b"\x00" * 4)
    calls = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, o: calls.append(n) or real(fd, n, o))
    zf = SafeZip(str(path))
    assert len(zf.members) == 20_000 and 0 < len(calls) < 100


def test_stored_member_stream_is_exactly_its_bytes(tmp_path):
    path = tmp_path / "s.zip"
    _write(path, {"a/1": b"first", "a/2": b"second"})
    zf = SafeZip(str(path))
    assert zf.read_with("a/1", lambda fh: fh.read(100)) == b"first"  # stops at the member's end
    assert zlib.crc32(zf.read("a/2")) == zf.members["a/2"].crc
    assert io.BytesIO(zf.read("a/1")).read() == b"first"
