"""Remote checkpoints through fsspec, offline: a loopback HTTP server with byte ranges, and memory://.

The server counts the body bytes it sends, so the tests assert what travels: listing a 1 GiB
safetensors file fetches its header only, extracting one 4 MiB tensor fetches that tensor.
"""
from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

import ckptsurgeon
from ckptsurgeon.errors import FormatError, MissingDependencyError
from ckptsurgeon.source import open_source

from conftest import FIXTURES, run_cli
from range_server import RangeServer

N_BIG, ROWS = 256, 1024  # 256 tensors of 1024x1024 float32 = 4 MiB each = 1 GiB


def _sparse_safetensors(path):
    """A 1 GiB safetensors file that takes no disk: header, then a hole (zeros)."""
    header, offset = {}, 0
    for i in range(N_BIG):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [ROWS, ROWS], "data_offsets": [offset, offset + ROWS * ROWS * 4]}
        offset += ROWS * ROWS * 4
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)
    return offset


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder of checkpoints of every family, served over loopback HTTP."""
    from huggingface_hub import save_torch_state_dict
    import torch

    root = tmp_path_factory.mktemp("served")
    assert _sparse_safetensors(root / "big.safetensors") == 1 << 30
    shutil.copy(FIXTURES / "torch" / "model.pt", root / "model.pt")
    shutil.copytree(FIXTURES / "tensorflow" / "tf1_lstmcell", root / "tf1")
    shutil.copy(FIXTURES / "keras" / "tfkeras" / "model.h5", root / "model.h5")
    shutil.copytree(FIXTURES / "dcp" / "torch-2.13.0" / "dist2", root / "dcp")
    torch.manual_seed(0)
    (root / "hf").mkdir()
    save_torch_state_dict(torch.nn.LSTM(4, 3, num_layers=2).state_dict(), root / "hf", max_shard_size="0.2KB")
    with RangeServer(str(root)) as server:
        yield root, server


def _same(a, b):
    assert list(a) == list(b)
    for path in a:
        np.testing.assert_array_equal(a[path].numpy(), b[path].numpy())
        assert a[path].dtype == b[path].dtype


def test_ls_of_a_1gib_safetensors_fetches_its_header_only(served):
    root, server = served
    server.reset()
    proc = run_cli("ls", server.url("big.safetensors"))
    assert proc.returncode == 0, proc.stderr
    assert f"{N_BIG} tensors" in proc.stdout and "1.0 GiB" in proc.stdout
    assert 0 < server.sent < 200_000, server.sent
    print(f"ls of a 1 GiB safetensors over HTTP fetched {server.sent} bytes in {len(server.requests)} GETs")


def test_extracting_one_4mib_tensor_fetches_that_tensor(served, tmp_path):
    root, server = served
    out = tmp_path / "one.safetensors"
    server.reset()
    proc = run_cli("extract", server.url("big.safetensors"), "--scope", "layers/17/weight", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert 4 << 20 <= server.sent < 4_500_000, server.sent
    print(f"extracting one 4 MiB tensor over HTTP fetched {server.sent} bytes in {len(server.requests)} GETs")
    got = load_file(out)
    assert list(got) == ["layers.17.weight"] and got["layers.17.weight"].shape == (ROWS, ROWS)
    meta = ckptsurgeon.open(out).metadata["__metadata__"]
    assert meta["source"] == server.url("big.safetensors")  # provenance: the URL and the server's ETag
    assert meta["source_etag"].startswith(f"{os.stat(root / 'big.safetensors').st_ino:x}-")
    assert "source_sha256" not in meta  # nothing downloads the whole file to hash it


@pytest.mark.parametrize("rel,local", [
    ("model.pt", "torch/model.pt"),
    ("tf1/model.ckpt", "tensorflow/tf1_lstmcell/model.ckpt"),
    ("tf1", "tensorflow/tf1_lstmcell"),
    ("model.h5", "keras/tfkeras/model.h5"),
    ("dcp", "dcp/torch-2.13.0/dist2"),
])
def test_every_family_reads_the_same_over_http(served, rel, local):
    _root, server = served
    remote = ckptsurgeon.open(server.url(rel))
    _same(remote, ckptsurgeon.open(FIXTURES / local))
    assert remote.metadata.keys() == ckptsurgeon.open(FIXTURES / local).metadata.keys()


def test_hf_shards_over_http_by_folder_and_by_index(served):
    root, server = served
    local = ckptsurgeon.open(root / "hf")
    assert len(local.files) > 3
    for name in ("hf", "hf/model.safetensors.index.json"):
        remote = ckptsurgeon.open(server.url(name))
        assert remote.format == "sharded-safetensors" and remote.files[1].startswith("http://")
        _same(remote, local)


def test_commands_take_urls(served, tmp_path):
    _root, server = served
    url = server.url("dcp")
    for args in (["tree", url], ["stats", url, "--scope", "model"], ["validate", url, "--like", str(FIXTURES / "dcp" / "torch-2.13.0" / "dist2")],
                 ["diff", url, str(FIXTURES / "dcp" / "torch-2.13.0" / "dist2")], ["rnn", server.url("model.pt")]):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
    out = tmp_path / "c.safetensors"
    assert run_cli("consolidate", url, "-o", str(out)).returncode == 0
    assert set(load_file(out)) == {r.key for r in ckptsurgeon.open(url).values() if not r.optimizer}


def test_a_dropped_connection_is_one_line_and_leaves_no_file(served, tmp_path):
    _root, server = served
    out = tmp_path / "x.safetensors"
    server.drop_after = 1000
    try:
        proc = run_cli("extract", server.url("big.safetensors"), "--scope", "layers/3/weight", "-o", str(out))
    finally:
        server.drop_after = None
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "big.safetensors" in proc.stderr and "failed after 3 attempts" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_missing_remote_file_is_one_line(served):
    _root, server = served
    proc = run_cli("ls", server.url("nothing.safetensors"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no such file" in proc.stderr


def test_memory_filesystem_reads_by_range(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in (FIXTURES / "torch" / "lightning.ckpt", FIXTURES / "keras" / "tfkeras" / "model.weights.h5"):
        fs.pipe(f"/ckpt/{path.name}", path.read_bytes())
        url = f"memory://ckpt/{path.name}"
        _same(ckptsurgeon.open(url), ckptsurgeon.open(path))
        src = open_source(url)
        assert src.local_path is None and src.identity()["url"] == url and src.identity()["size"] == path.stat().st_size
    for f in (FIXTURES / "dcp" / "torch-2.5.1" / "dist2").iterdir():
        fs.pipe(f"/dcp/{f.name}", f.read_bytes())
    _same(ckptsurgeon.open("memory://dcp"), ckptsurgeon.open(FIXTURES / "dcp" / "torch-2.5.1" / "dist2"))


def test_memory_reads_only_the_header_then_one_tensor():
    import fsspec

    fs = fsspec.filesystem("memory")
    arrays = {f"w{i}": np.full((256, 256), i, np.float32) for i in range(64)}  # 64 x 256 KiB
    from safetensors.numpy import save

    fs.pipe("/sized/m.safetensors", save(arrays))
    url = "memory://sized/m.safetensors"
    index = ckptsurgeon.open(url)
    src = open_source(url)
    assert src.requests == 1 and src.bytes_fetched <= 128 * 1024  # one ranged read of the head
    assert index["w40"].numpy()[0, 0] == 40
    assert src.bytes_fetched <= 128 * 1024 + 256 * 1024


def test_hub_identity_is_the_lfs_sha256(monkeypatch):
    """What provenance records for hf:// files, from the info the Hub's filesystem returns."""
    import fsspec

    from ckptsurgeon import remote

    fsspec.filesystem("memory").pipe("/hub/model.safetensors", b"x" * 100)
    real_info = remote._info

    def hub_like(fs, path, url):
        info = real_info(fs, path, url)
        return {**info, "lfs": {"sha256": "ab" * 32, "size": 100}, "last_commit": {"oid": "c0ffee"}}

    monkeypatch.setattr(remote, "_info", hub_like)
    ident = remote.RemoteFile("memory://hub/model.safetensors").identity()
    assert ident == {"url": "memory://hub/model.safetensors", "size": 100, "sha256": "ab" * 32, "revision": "c0ffee"}


def test_urls_lose_credentials_in_messages_and_provenance():
    from ckptsurgeon.remote import public_url

    assert public_url("https://user:secret@host:8443/a/b.pt?X-Amz-Signature=abc") == "https://host:8443/a/b.pt"


def test_without_fsspec_the_error_names_the_extra(monkeypatch):
    import builtins

    from ckptsurgeon import remote, source

    real_import = builtins.__import__

    def no_fsspec(name, *args, **kw):
        if name == "fsspec" or name.startswith("fsspec."):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    monkeypatch.setattr(remote, "_INSTALLED", False)
    monkeypatch.setattr(source, "_SCHEMES", {})
    with pytest.raises(MissingDependencyError, match=r"pip install 'ckptsurgeon\[remote\]'"):
        open_source("s3://bucket/model.safetensors")
    with pytest.raises(FormatError, match="unsupported URL scheme"):
        open_source("ftp2://x/y")
