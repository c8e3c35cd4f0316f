"""Hugging Face sharded checkpoints: read as one index, checked against the shards, written by the same
rules as huggingface_hub (compared with huggingface_hub's own split and files)."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
from safetensors.numpy import load_file

import ckptsurgeon
from ckptsurgeon.errors import FormatError, OutputError, UnsafeCheckpointError
from ckptsurgeon.formats.sharded.hf_shards import parse_size, plan_shards

from conftest import assert_same_as_torch, run_cli


def _model_state():
    import torch

    torch.manual_seed(3)
    model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 8), "rnn": torch.nn.LSTM(8, 6, num_layers=2),
                                 "head": torch.nn.Linear(6, 4)})
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """The same state dict saved by huggingface_hub as safetensors shards and as .bin shards."""
    from huggingface_hub import save_torch_state_dict

    state = _model_state()
    out = {}
    for kind, safe in (("safetensors", True), ("bin", False)):
        d = tmp_path_factory.mktemp(f"hf_{kind}")
        save_torch_state_dict(state, d, max_shard_size="1KB", safe_serialization=safe)
        out[kind] = d
    return state, out


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_index_and_folder_open_as_one_index_equal_to_torch(hf_dirs, kind):
    state, dirs = hf_dirs
    d = dirs[kind]
    index_name = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    wmap = json.loads((d / index_name).read_text())["weight_map"]
    assert len(set(wmap.values())) > 3  # really sharded
    for given in (d, d / index_name):
        index = ckptsurgeon.open(given)
        assert index.format == ("sharded-safetensors" if kind == "safetensors" else "sharded-pytorch")
        assert {r.key for r in index.values()} == set(state)
        for ref in index.values():
            assert os.path.basename(ref.file) == wmap[ref.key]  # each tensor knows its shard
            assert_same_as_torch(ref.numpy(), state[ref.key])


def test_shards_read_through_safetensors_agree(hf_dirs):
    _, dirs = hf_dirs
    index = ckptsurgeon.open(dirs["safetensors"])
    per_shard = {}
    for shard in sorted(dirs["safetensors"].glob("model-*.safetensors")):
        per_shard.update(load_file(shard))
    assert set(per_shard) == {r.key for r in index.values()}
    for ref in index.values():
        np.testing.assert_array_equal(ref.numpy(), per_shard[ref.key])


def test_every_command_works_on_shards(hf_dirs, tmp_path):
    state, dirs = hf_dirs
    d = str(dirs["safetensors"])
    for args in (["ls", d], ["tree", d], ["rnn", d], ["stats", d, "--scope", "head"], ["layout", d],
                 ["validate", d, "--like", str(dirs["bin"])], ["diff", d, str(dirs["bin"])]):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
    assert "LSTM" in run_cli("rnn", d).stdout
    out = tmp_path / "rnn.safetensors"
    assert run_cli("extract", d, "--scope", "rnn", "-o", str(out)).returncode == 0
    assert set(load_file(out)) == {k for k in state if k.startswith("rnn.")}


def test_graft_into_and_from_shards(hf_dirs, tmp_path):
    import torch
    from safetensors.torch import save_file

    state, dirs = hf_dirs
    torch.manual_seed(9)
    new_lstm = torch.nn.LSTM(8, 6, num_layers=2)
    src = tmp_path / "pre.safetensors"
    save_file({f"lstm.{k}": v.contiguous() for k, v in new_lstm.state_dict().items()}, src)
    out = tmp_path / "warm"
    proc = run_cli("graft", str(src), "--into", str(dirs["safetensors"]), "--map", "lstm=rnn", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(os.listdir(dirs["safetensors"]))  # same shards, same index
    warm = ckptsurgeon.open(out)
    for ref in warm.values():
        expect = new_lstm.state_dict()[ref.key[4:]] if ref.key.startswith("rnn.") else state[ref.key]
        assert_same_as_torch(ref.numpy(), expect)
    back = tmp_path / "back.safetensors"  # the sharded checkpoint as a source
    proc = run_cli("graft", str(out), "--into", str(src), "--map", "rnn=lstm", "-o", str(back))
    assert proc.returncode == 0, proc.stderr
    for k, v in load_file(back).items():
        np.testing.assert_array_equal(v, new_lstm.state_dict()[k[5:]].numpy())


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst, json.loads((dst / "model.safetensors.index.json").read_text())


def _write_index(d, data):
    (d / "model.safetensors.index.json").write_text(json.dumps(data))


def test_index_disagreeing_with_shards_is_a_one_line_error(hf_dirs, tmp_path):
    from safetensors.numpy import save_file

    _, dirs = hf_dirs
    d, data = _copy(dirs["safetensors"], tmp_path / "missing")
    (d / ("model-00002-of-%05d.safetensors" % len(set(data["weight_map"].values())))).unlink()
    cases = [(d, FormatError, "is missing from")]

    d, data = _copy(dirs["safetensors"], tmp_path / "moved")
    shards = sorted(set(data["weight_map"].values()))
    values = list(data["weight_map"].values())
    first = next(s for s in shards if values.count(s) > 1)  # its shard keeps other tensors
    other = shards[-1] if shards[-1] != first else shards[0]
    key = [k for k, v in data["weight_map"].items() if v == first][-1]
    data["weight_map"][key] = other
    _write_index(d, data)
    cases.append((d, FormatError, f"lists tensor '{key}' in {other}, but it is stored in"))

    d, data = _copy(dirs["safetensors"], tmp_path / "overlap")
    shard = load_file(d / other)
    shard[key] = load_file(d / first)[key]
    save_file(shard, d / other)
    cases.append((d, FormatError, f"'{key}' is stored in both"))

    d, data = _copy(dirs["safetensors"], tmp_path / "absent")
    data["weight_map"]["ghost.weight"] = first
    _write_index(d, data)
    cases.append((d, FormatError, "lists tensor 'ghost.weight'"))

    d, data = _copy(dirs["safetensors"], tmp_path / "escape")
    data["weight_map"][key] = "../outside.safetensors"
    _write_index(d, data)
    cases.append((d, UnsafeCheckpointError, "not a file beside the index"))

    for folder, exc, msg in cases:
        with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
            ckptsurgeon.open(folder)
        proc = run_cli("ls", str(folder))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr


def test_split_rules_equal_huggingface_hub():
    from huggingface_hub import split_state_dict_into_shards_factory

    rng = random.Random(0)
    for trial in range(200):
        sizes = [(f"t{i}", rng.choice([0, 1, 5, 40, 99, 100, 101, 250, 1000])) for i in range(rng.randint(1, 30))]
        limit = rng.choice([1, 50, 100, 101, 300, 10_000])
        ours = plan_shards(sizes, limit)
        ref = split_state_dict_into_shards_factory(
            dict(sizes), get_storage_size=lambda n: n, filename_pattern="model{suffix}.safetensors",
            max_shard_size=limit)
        assert ours == list(ref.filename_to_tensors.values()), (trial, sizes, limit)
    for text in ("5GB", "1.5MB", "300KB", " 2TB ", "10gb"):
        from huggingface_hub.serialization._base import parse_size_to_int

        assert parse_size(text) == parse_size_to_int(text)
    with pytest.raises(OutputError, match="unit must be one of"):
        parse_size("5GiB")


@pytest.mark.parametrize("limit", ["1KB", "3KB", "1GB"])
def test_max_shard_size_writes_what_huggingface_hub_writes(tmp_path, limit):
    import torch
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import save_file

    state = _model_state()
    src = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, src)
    order = [r.key for r in ckptsurgeon.open(src).values()]  # the file's order, which the output keeps
    state = {k: state[k] for k in order}
    ref_dir = tmp_path / "hub"
    ref_dir.mkdir()
    save_torch_state_dict(state, ref_dir, max_shard_size=limit)
    out = tmp_path / "ours"
    proc = run_cli("extract", str(src), "--max-shard-size", limit, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(os.listdir(ref_dir))
    index_name = "model.safetensors.index.json"
    if (ref_dir / index_name).exists():
        ours, theirs = (json.loads((d / index_name).read_text()) for d in (out, ref_dir))
        assert list(ours["weight_map"].items()) == list(theirs["weight_map"].items())
        for shard in set(ours["weight_map"].values()):  # tensors never split, their order kept in each shard
            keys = [k for k, v in ours["weight_map"].items() if v == shard]
            assert keys == [k for k in order if k in keys]
        assert ours["metadata"]["total_size"] == theirs["metadata"]["total_size"]
    for name in os.listdir(ref_dir):
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(out / name, "pt") as f:
                assert f.metadata()["format"] == "pt"  # transformers refuses shards without it
                for key in f.keys():
                    assert torch.equal(f.get_tensor(key), state[key])


def test_remap_and_consolidate_shard_too(tmp_path, hf_dirs):
    state, dirs = hf_dirs
    out = tmp_path / "remapped"
    proc = run_cli("remap", str(dirs["bin"]), "--map", "rnn/*=lstm/*", "--max-shard-size", "2KB", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    index = ckptsurgeon.open(out)
    assert index.format == "sharded-safetensors" and len(index.files) > 2
    for ref in index.values():
        assert_same_as_torch(ref.numpy(), state[ref.key.replace("lstm/", "rnn.")])
    one = tmp_path / "one.safetensors"
    assert run_cli("consolidate", str(out), "-o", str(one)).returncode == 0
    assert set(load_file(one)) == {r.key for r in index.values()}


def test_sharded_writes_are_atomic_and_never_clobber(tmp_path, hf_dirs, monkeypatch):
    _, dirs = hf_dirs
    src = ckptsurgeon.open(dirs["safetensors"])
    out = tmp_path / "out"
    calls = {"n": 0}
    from ckptsurgeon.source import LocalFile

    def interrupting(real):
        def wrapper(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt  # Ctrl-C half way through the shards
            return real(self, *args, **kwargs)
        return wrapper

    # the writer copies byte ranges (read/readinto) rather than decoding arrays: interrupt those reads
    monkeypatch.setattr(LocalFile, "read", interrupting(LocalFile.read))
    monkeypatch.setattr(LocalFile, "readinto", interrupting(LocalFile.readinto))
    with pytest.raises(KeyboardInterrupt):
        ckptsurgeon.extract(src, out, max_shard_size="1KB")
    assert calls["n"] >= 5
    assert not out.exists() and os.listdir(tmp_path) == []  # no folder, no temporary files
    monkeypatch.undo()
    ckptsurgeon.extract(src, out, max_shard_size="1KB")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        ckptsurgeon.extract(src, out, max_shard_size="1KB")
    before = sorted(os.listdir(out))
    ckptsurgeon.extract(src, out, max_shard_size="2KB", force=True)  # fewer shards: stale ones removed
    after = sorted(os.listdir(out))
    assert len(after) < len(before) and ckptsurgeon.open(out).keys() == src.keys()
    with pytest.raises(OutputError, match="input of this operation|already exists"):
        ckptsurgeon.extract(src, dirs["safetensors"], max_shard_size="1KB", force=True)
