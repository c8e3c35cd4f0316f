"""PyTorch Distributed Checkpoints written by torch 2.1, 2.5 and 2.13, read without torch.

The fixtures (``fixtures/dcp/torch-*/``) were written by ``fixtures/dcp/make_dcp_fixtures.py`` with each
torch: one process (``no_dist``) and two gloo processes with DTensor / FSDP2 sharding. Every tensor is
compared with what the installed torch's ``dcp_to_torch_save`` gives, and with what the writing torch's
own loader gave (``reference.pt``).
"""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon.errors import FormatError, UnsafeCheckpointError

from conftest import FIXTURES, assert_same_as_torch, run_cli

VERSIONS = sorted(p.name for p in (FIXTURES / "dcp").glob("torch-*"))
CASES = [(v, k) for v in VERSIONS for k in ("nodist", "dist2")]


def _flat(obj, prefix=()):
    """(scope path, leaf) of a nested state, dotted keys split as the reader splits them."""
    import torch

    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, prefix + tuple(str(k).split(".")))
    elif isinstance(obj, torch.Tensor):
        yield "/".join(prefix), obj
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, torch.Tensor)) for v in obj):
        for i, v in enumerate(obj):
            yield from _flat(v, prefix + (str(i),))
    else:
        yield "/".join(prefix), obj


@pytest.fixture(scope="module")
def consolidated(tmp_path_factory):
    """torch's own answer for every fixture: dcp_to_torch_save, then torch.load."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = {}
    d = tmp_path_factory.mktemp("dcp_ref")
    for version, kind in CASES:
        target = d / f"{version}-{kind}.pt"
        dcp_to_torch_save(str(FIXTURES / "dcp" / version / kind), str(target))
        out[(version, kind)] = torch.load(target, weights_only=False)
    return out


def test_all_three_torch_generations_are_fixtures():
    assert {"torch-2.1.2", "torch-2.5.1", "torch-2.13.0"} <= set(VERSIONS)


@pytest.mark.parametrize("version,kind", CASES)
def test_every_tensor_equals_dcp_to_torch_save(version, kind, consolidated):
    import torch

    index = ckptsurgeon.open(FIXTURES / "dcp" / version / kind)
    assert index.format == "dcp"
    expected = {p: v for p, v in _flat(consolidated[(version, kind)]) if isinstance(v, torch.Tensor)}
    assert list(index) and set(index) == set(expected)
    for path, ref in index.items():
        assert ref.shape == tuple(expected[path].shape) and ref.dtype_name == str(expected[path].dtype)[6:]
        assert_same_as_torch(ref.numpy(), expected[path])


@pytest.mark.parametrize("version,kind", CASES)
def test_tensors_equal_what_the_writing_torch_loaded(version, kind):
    import torch

    d = FIXTURES / "dcp" / version / kind
    index = ckptsurgeon.open(d)
    ref = dict(_flat(torch.load(d / "reference.pt", weights_only=False)))
    if kind == "nodist":  # its optimizer state was saved unflattened by the script
        ref = {p.replace("optim_state/", "optim/state/"): v for p, v in ref.items()}
    tensors = {p: v for p, v in ref.items() if isinstance(v, torch.Tensor)}
    assert len(tensors) >= 4 and set(tensors) <= set(index)
    for path, value in tensors.items():
        assert_same_as_torch(index[path].numpy(), value)


@pytest.mark.parametrize("version", VERSIONS)
def test_sharded_tensors_are_really_split_and_reassembled(version):
    index = ckptsurgeon.open(FIXTURES / "dcp" / version / "dist2")
    assert len([f for f in index.files if f.endswith(".distcp")]) == 2
    rows = index["dtensors/rows5"]  # 5 rows over 2 ranks: 3 + 2
    cols = index["dtensors/cols"]  # split on dim 1: chunks are not contiguous blocks of the full tensor
    assert rows.shape == (5, 3) and cols.shape == (4, 6)
    assert not rows.in_place and rows.numpy().flags.c_contiguous
    if version == "torch-2.13.0":  # a ShardedTensor (FSDP1 sharded state dicts, Megatron torch_dist) too
        assert index["sharded_tensor/st"].shape == (7, 2)


def test_non_tensor_state_goes_to_metadata_and_optimizer_is_marked():
    index = ckptsurgeon.open(FIXTURES / "dcp" / "torch-2.13.0" / "nodist")
    assert index.metadata["step"] == 7
    assert index.metadata["config/name"] == "demo" and index.metadata["config/sizes"] == [1, 2]
    assert index.metadata["optim/param_groups/0/lr"] == 0.01
    opt = [p for p, r in index.items() if r.optimizer]
    assert opt and all(p.startswith("optim/") for p in opt)
    assert not index["model/0/weight"].optimizer
    old = ckptsurgeon.open(FIXTURES / "dcp" / "torch-2.1.2" / "nodist")  # 2.1 kept lists as one bytes item
    assert old.metadata["config"] == {"lr": 0.01, "name": "demo", "sizes": [1, 2]}
    fsdp = ckptsurgeon.open(FIXTURES / "dcp" / "torch-2.13.0" / "dist2")
    assert fsdp["optim/state/0/weight/exp_avg"].optimizer and fsdp.metadata["step"] == 3


def test_opening_reads_only_the_metadata(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(FIXTURES / "dcp" / "torch-2.13.0" / "dist2", d)
    index = ckptsurgeon.open(d)
    for f in d.glob("*.distcp"):
        f.write_bytes(b"\0" * f.stat().st_size)  # tensor bytes gone: opening and listing still work
    assert index["model/0/weight"].shape == (8, 3)
    with pytest.raises(FormatError, match="not a torch.save archive|damaged zip|not a zip archive"):
        index["model/0/weight"].numpy()


def _rewrite_metadata(src, dst, edit):
    import torch.distributed.checkpoint  # noqa: F401  (the real classes, to re-pickle a modified file)

    shutil.copytree(src, dst)
    md = pickle.loads((dst / ".metadata").read_bytes())
    edit(md)
    (dst / ".metadata").write_bytes(pickle.dumps(md))
    return dst


def test_damaged_metadata_is_a_one_line_error(tmp_path):
    src = FIXTURES / "dcp" / "torch-2.13.0" / "dist2"

    def escape(md):
        for info in md.storage_data.values():
            info.relative_path = "../../etc/passwd"

    def drop_chunk(md):
        md.state_dict_metadata["dtensors.rows5"].chunks.pop()

    def overlap(md):
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex
        import torch

        chunks = md.state_dict_metadata["dtensors.rows5"].chunks
        chunks[1] = ChunkStorageMetadata(offsets=torch.Size([2, 0]), sizes=torch.Size([3, 3]))
        md.storage_data[MetadataIndex("dtensors.rows5", torch.Size([2, 0]))] = \
            md.storage_data[MetadataIndex("dtensors.rows5", torch.Size([3, 0]))]

    cases = [(escape, UnsafeCheckpointError, "outside the checkpoint folder"),
             (drop_chunk, FormatError, "cover 9 of its 15 elements"),
             (overlap, FormatError, "overlap")]
    for i, (edit, exc, msg) in enumerate(cases):
        d = _rewrite_metadata(src, tmp_path / f"c{i}", edit)
        with pytest.raises(exc, match=msg):
            ckptsurgeon.open(d)
        proc = run_cli("ls", str(d))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and msg.split()[0] in proc.stderr


def test_a_metadata_pickle_calling_code_is_refused(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    (d / ".metadata").write_bytes(pickle.dumps({"state_dict_metadata": Evil()}))
    with pytest.raises(UnsafeCheckpointError, match="refusing global (posix|os).system"):
        ckptsurgeon.open(d)


def test_cli_lists_and_extracts_a_dcp_folder(tmp_path):
    from safetensors.numpy import load_file

    d = FIXTURES / "dcp" / "torch-2.13.0" / "dist2"
    proc = run_cli("ls", str(d), "--scope", "model")
    assert proc.returncode == 0 and "model/2/weight" in proc.stdout and "(dcp)" in proc.stdout
    out = tmp_path / "m.safetensors"
    proc = run_cli("extract", str(d), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "left out" in proc.stdout  # optimizer state
    got = load_file(out)
    index = ckptsurgeon.open(d)
    assert set(got) == {r.key for r in index.values() if not r.optimizer}
    np.testing.assert_array_equal(got["dtensors.cols"], index["dtensors/cols"].numpy())
