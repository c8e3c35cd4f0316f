"""Remote sources that lie (issue 23): a loopback server that stalls, trickles, over-answers, compresses
or redirects away. Each lie is a one-line error naming the URL and what the server did, exit code 1,
nothing written, in bounded time (1 s timeouts here) and bounded memory (the CLI's own peak RSS).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load, save

import ckptsurgeon
from ckptsurgeon.errors import FormatError
from ckptsurgeon.remote import MAX_REDIRECTS, RemoteFile

from range_server import LyingServer, gzip_bomb

TENSORS = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int64)}
BODY = save(TENSORS)  # a few hundred bytes: the first read asks for all of them
N = len(BODY)
MAX_RSS_MIB = 400  # the CLI reading a small file over HTTP peaks far below; the lies offer GiBs


@pytest.fixture(scope="module")
def lying():
    with LyingServer(BODY) as server, LyingServer(BODY) as other:
        server.away_to = other.url("good/model.safetensors")
        yield server, other


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    monkeypatch.setenv("CKPTSURGEON_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("CKPTSURGEON_READ_TIMEOUT", "1")


# Runs the command from a small fresh interpreter and reports its peak RSS: measured from pytest directly, the
# peak would include pytest's own pages (a forked child starts with them, and Linux keeps that peak across exec).
_LAUNCH = """import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)"""


def run(*args: str) -> SimpleNamespace:
    """The CLI in a subprocess, with its wall time and its own peak RSS."""
    exe = Path(sys.executable).parent / "ckptsurgeon"
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", _LAUNCH, rss.name, str(exe), *args], capture_output=True, text=True,
                              timeout=60)
        seconds = time.monotonic() - start
        return SimpleNamespace(returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, seconds=seconds,
                               rss_mib=int(rss.read()) / 1024)


def assert_one_line_error(res: SimpleNamespace, url: str, *phrases: str, seconds: float = 8) -> str:
    assert res.returncode == 1, (res.returncode, res.stderr)
    err = res.stderr
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert url in err, err
    for phrase in phrases:
        assert phrase in err, err
    assert res.seconds < seconds, res.seconds
    assert res.rss_mib < MAX_RSS_MIB, res.rss_mib
    print(f"{res.seconds:.1f} s, {res.rss_mib:.0f} MiB: {err.strip()}")
    return err


def test_the_honest_path_of_the_lying_server_works(lying):
    server, _other = lying
    res = run("ls", server.url("good/model.safetensors"))
    assert res.returncode == 0, res.stderr
    assert "2 tensors" in res.stdout and res.rss_mib < MAX_RSS_MIB


def test_headers_then_silence(lying, tmp_path):
    server, _other = lying
    url = server.url("silent/model.safetensors")
    res = run("extract", url, "-o", str(tmp_path / "out.safetensors"))
    assert_one_line_error(res, url, f"sent nothing for 1 s after 0 of the {N} bytes of bytes 0..{N}", "CKPTSURGEON_READ_TIMEOUT")
    assert os.listdir(tmp_path) == []


def test_one_byte_a_second(lying):
    server, _other = lying
    server.reset()
    url = server.url("trickle/model.safetensors")
    res = run("ls", url)
    assert_one_line_error(res, url, f"sends bytes 0..{N} at", "under 1,024 bytes/s for 1 s", "CKPTSURGEON_READ_TIMEOUT")
    assert server.sent <= 4  # no retry: a trickle is reported, not waited on again


def test_no_answer_to_the_size_request(lying):
    server, _other = lying
    url = server.url("nohead/model.safetensors")
    assert_one_line_error(run("ls", url), url, "did not answer the size request (HEAD) within 1 s")


def test_size_answer_trickled_header_by_header(lying):
    server, _other = lying
    url = server.url("slowhead/model.safetensors")
    # which limit ends it depends on where the trickle is when the clock runs out (a loaded CI machine): the
    # silence between two header bytes (1 s) or the whole answer (connect + read, 2 s); either is one line
    assert_one_line_error(run("ls", url), url, "the size request (HEAD) within", "CKPTSURGEON_READ_TIMEOUT")


def test_oversized_body_announced(lying, tmp_path):
    server, _other = lying
    server.reset()
    url = server.url("oversized/model.safetensors")
    res = run("extract", url, "-o", str(tmp_path / "out.safetensors"))
    assert_one_line_error(res, url, f"asked for bytes 0..{N} ({N} bytes), the server announces 3,221,225,472; refusing")
    assert os.listdir(tmp_path) == []
    assert server.sent < 16 << 20, server.sent  # the socket buffers, not the 3 GiB


def test_oversized_body_unannounced(lying):
    server, _other = lying
    server.reset()
    url = server.url("endless/model.safetensors")
    res = run("ls", url)
    assert_one_line_error(res, url, f"asked for bytes 0..{N} ({N} bytes), the server sends more; refusing")
    assert server.sent < 16 << 20, server.sent


def test_gzip_bomb(lying):
    server, _other = lying
    bomb = gzip_bomb()
    assert len(bomb) < 5 << 20 and len(zlib.decompressobj(31).decompress(bomb[:1 << 16], 1 << 30)) > 32 << 20  # a real bomb
    url = server.url("gzip/model.safetensors")
    res = run("ls", url)
    assert_one_line_error(res, url, f"answered bytes 0..{N} with Content-Encoding: gzip", "refusing")


def test_a_busy_server_is_retried_twice(lying):
    server, _other = lying
    server.reset()
    url = server.url("busy/model.safetensors")
    res = run("ls", url)
    assert_one_line_error(res, url, f"reading bytes 0..{N} failed after 3 attempts: ServerError: the server answered 503 "
                                    "Service Unavailable")
    assert [m for m, _path in server.requests].count("GET") == 3


def test_cross_origin_redirect(lying):
    server, other = lying
    server.reset()
    other.reset()
    url = server.url("away/model.safetensors")
    res = run("ls", url.replace("://", "://user:hunter2@") + "?token=hunter3")
    err = assert_one_line_error(res, url, f"redirects to another origin ({other.url('good/model.safetensors')})",
                                "same scheme, host and port")
    assert "hunter" not in err and "user" not in err
    assert other.requests == [] and len(server.requests) == 1


def test_redirect_loop(lying):
    server, _other = lying
    server.reset()
    url = server.url("loop/model.safetensors")
    res = run("ls", url)
    assert_one_line_error(res, url, f"redirects in a loop (back to {url})")
    assert len(server.requests) == 2


def test_endless_redirects_stop_at_the_hop_limit(lying):
    server, _other = lying
    server.reset()
    url = server.url("chain/0/model.safetensors")
    res = run("ls", url)
    assert_one_line_error(res, url, f"more than {MAX_REDIRECTS} redirects")
    assert len(server.requests) == MAX_REDIRECTS + 1


def test_same_origin_redirects_are_followed(lying):
    server, other = lying
    server.reset()
    other.reset()
    url = server.url("moved/model.safetensors")
    index = ckptsurgeon.open(url)
    got = {k: index[k].numpy() for k in index}
    assert got.keys() == TENSORS.keys()
    for k, v in TENSORS.items():
        np.testing.assert_array_equal(got[k], v)
    assert load(BODY).keys() == got.keys()
    kinds = [path.split("/")[1] for _method, path in server.requests]
    assert {"moved", "hop", "good"} == set(kinds) and other.requests == []
    res = run("ls", url)
    assert res.returncode == 0 and "2 tensors" in res.stdout, res.stderr


def test_a_server_without_head_gives_the_size_by_a_ranged_get(lying):
    server, _other = lying
    server.reset()
    res = run("ls", server.url("getonly/model.safetensors"))
    assert res.returncode == 0 and "2 tensors" in res.stdout, res.stderr
    methods = [m for m, _path in server.requests]
    k = methods.count("HEAD")  # each size request: a HEAD answered 405, then a one-byte GET; then the data
    assert k >= 1 and methods == ["HEAD", "GET"] * k + ["GET"], server.requests


def test_library_errors_are_format_errors(lying):
    server, _other = lying
    with pytest.raises(FormatError, match=r"^http://127\.0\.0\.1:\d+/silent/model\.safetensors: the server sent nothing"):
        RemoteFile(server.url("silent/model.safetensors")).read(0, 8)


def test_no_connection(monkeypatch):
    """A listener whose accept queue is full: the kernel drops the SYN, connect() hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.2)
        try:
            url = f"http://127.0.0.1:{port}/model.safetensors"
            assert_one_line_error(run("ls", url), url, "no connection within 1 s (CKPTSURGEON_CONNECT_TIMEOUT)")
        finally:
            for s in fillers:
                s.close()


def test_a_bad_timeout_setting_is_one_line(lying, monkeypatch):
    server, _other = lying
    monkeypatch.setenv("CKPTSURGEON_READ_TIMEOUT", "soon")
    res = run("ls", server.url("good/model.safetensors"))
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "CKPTSURGEON_READ_TIMEOUT='soon': expected a number of seconds above 0 (default 30)" in res.stderr


def test_http_needs_neither_fsspec_nor_asyncio_and_asks_the_size_once(lying):
    """A URL costs a local file's start-up: http.client, not fsspec's aiohttp session (issue 22, P8); the probes
    of the readers share one HEAD, and every request goes over one keep-alive connection."""
    server, _other = lying
    server.reset()
    url = server.url("good/model.safetensors")
    code = ("import sys, ckptsurgeon\n"
            f"index = ckptsurgeon.open({url!r})\n"
            "print(sorted((k, index[k].numpy().tolist()) for k in index))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fsspec', 'aiohttp', 'asyncio')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tensors, modules = proc.stdout.splitlines()
    assert tensors == str(sorted((k, v.tolist()) for k, v in TENSORS.items()))
    assert modules == "[]"
    assert server.requests == [("HEAD", "/good/model.safetensors"), ("GET", "/good/model.safetensors")]


def test_a_file_whose_size_changes_while_read_is_refused(lying):
    server, _other = lying
    src = RemoteFile(server.url("good/model.safetensors"))
    assert src.read(0, 8) == BODY[:8]
    try:
        server.body = BODY + bytes(64)  # the next answer's Content-Range says bytes a-b/N+64
        src.close()  # drops the block cache: the next read asks the server again
        with pytest.raises(FormatError, match=rf"the file changed while reading \(it had {N:,} bytes, the server now says "
                                              rf"{N + 64:,}\); open it again"):
            src.read(0, src.size)
    finally:
        server.body = BODY


def test_an_idle_connection_the_server_closed_is_replaced(lying):
    """A keep-alive connection the server dropped between two reads is reopened once, not reported."""
    from ckptsurgeon import remote

    server, _other = lying
    src = RemoteFile(server.url("good/model.safetensors"))
    assert src.read(0, 8) == BODY[:8]
    assert remote._HTTP is not None
    idle = [conn for conns in remote._HTTP._idle.values() for conn in conns]
    assert idle, "the connection was not kept"
    for conn in idle:
        conn.sock.shutdown(socket.SHUT_RDWR)
    server.reset()
    src.close()  # drops the block cache: the next read asks the server again
    assert bytes(src.read(8, 16)) == BODY[8:24]
    assert [m for m, _path in server.requests] == ["GET"] and src.requests == 2
