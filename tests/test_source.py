"""The byte-source protocol: local files read safely, exactly, and never stale."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from safetensors.numpy import save_file

import ckptsurgeon
from ckptsurgeon.errors import FormatError, UnsafeCheckpointError
from ckptsurgeon.source import ByteSource, LocalFile, open_source, register_scheme

from conftest import run_cli


def test_local_file_reads_exact_ranges_and_windows(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 40
    path.write_bytes(data)
    src = open_source(str(path))
    assert isinstance(src, ByteSource) and src.size == len(data) and src.local_path == str(path)
    assert bytes(src.read(1000, 77)) == data[1000:1077]
    win = src.window(300, 500)
    assert win.read(10) == data[300:310]
    win.seek(-5, 2)
    assert win.read() == data[795:800]
    with pytest.raises(FormatError, match="truncated: wanted 100 bytes at offset 10200"):
        src.read(len(data) - 40, 100)
    assert src.identity()["size"] == len(data)


def test_a_replaced_file_is_reopened_not_served_stale(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(path))
    assert ckptsurgeon.open(path)["a"].numpy().tolist() == [0, 0, 0]
    tmp = tmp_path / "new.safetensors"
    save_file({"a": np.arange(3, dtype=np.float32)}, str(tmp))
    os.replace(tmp, path)  # what an atomic writer does
    assert ckptsurgeon.open(path)["a"].numpy().tolist() == [0, 1, 2]


def test_within_settled_a_file_is_checked_once_and_read_through_one_descriptor(tmp_path, monkeypatch):
    """``settled()`` (one scan task): the first ``open_source`` of a file checks it as always, the next ones reuse
    the descriptor without a stat; after the block, a replaced file is seen again."""
    from ckptsurgeon.source import settled

    path = tmp_path / "blob.bin"
    path.write_bytes(b"old!")
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: stats.append(a[0]) or real_stat(*a, **k))
    first = open_source(str(path))
    stats.clear()
    with settled():
        assert open_source(str(path)) is first and len(stats) == 1  # checked once ...
        tmp = tmp_path / "new.bin"
        tmp.write_bytes(b"new!")
        os.replace(tmp, path)
        for _ in range(3):  # ... then trusted: the descriptor reads the file it opened, whole and unchanged
            assert open_source(str(path)) is first and bytes(first.read(0, 4)) == b"old!"
        assert len(stats) == 1
    again = open_source(str(path))
    assert again is not first and bytes(again.read(0, 4)) == b"new!"


def test_symlinks_are_refused(tmp_path):
    real = tmp_path / "real.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(real))
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    with pytest.raises(UnsafeCheckpointError, match="symbolic link"):
        LocalFile(str(link))


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    t = threading.Thread(target=lambda: result.append(pytest.raises(FormatError, LocalFile, str(fifo)).value))
    t.start()
    t.join(10)
    assert not t.is_alive(), "opening a FIFO blocked"
    assert "not a regular file" in str(result[0])
    proc = run_cli("ls", str(fifo))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not a regular file" in proc.stderr


def test_url_schemes_dispatch_to_registered_openers(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"0123456789")
    register_scheme("testmem", lambda url: LocalFile(str(path)))
    assert bytes(open_source("testmem://anything").read(2, 3)) == b"234"
    with pytest.raises(FormatError, match="unsupported URL scheme 'nosuch'"):
        open_source("nosuch://x")
