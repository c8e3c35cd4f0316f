"""``scan``: globals and opcode classes of every pickle, findings, report formats; never passes what ls refuses."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

import ckptsurgeon
import hostile
from ckptsurgeon.check.scan import scan_file
from ckptsurgeon.errors import CheckpointError
from ckptsurgeon.formats import pickles as pickle_walkers
from conftest import CORPUS, FIXTURES, run_cli

HERE = Path(__file__).parent
AUDITED = HERE / "audited_cli.py"
BENIGN = {"benign0_v0.pkl", "benign0_v3.pkl", "benign0_v4.pkl", "pytorch_model.bin", "new_pytorch_model.bin",
          "int_array.npy", "int_arrays.npz", "int_arrays_compressed.npz"}  # as in test_security
CORPUS_FILES = sorted(p for p in CORPUS.glob("*/*") if p.name != "LICENSE") if CORPUS.exists() else []
REPRODUCERS = sorted(p for p in (HERE / "fuzz" / "reproducers").glob("*/*") if p.name != "case.json") + sorted(
    (HERE / "reproducers").glob("*.h5"))


def _scan_json(*paths: str) -> tuple[int, dict]:
    proc = subprocess.run([str(Path(sys.executable).parent / "ckptsurgeon"), "scan", *paths, "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.stderr == "" or proc.stderr.count("\n") <= 1, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_scan_lists_the_globals_and_opcodes_of_a_real_checkpoint():
    code, report = _scan_json(str(FIXTURES / "torch" / "lightning.ckpt"), str(FIXTURES / "torch" / "legacy.pt"))
    assert code == 0 and report["ok"], report
    zip_report, legacy = report["files"]
    (data_pkl,) = zip_report["pickles"]
    assert data_pkl["where"].endswith("data.pkl")
    names = {f"{g['module']}.{g['name']}" for g in data_pkl["globals"]}
    assert {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch.FloatStorage"} <= names
    assert all(g["allowed"] for g in data_pkl["globals"])
    assert data_pkl["opcodes"]["persistent-id"]["BINPERSID"] > 0 and "REDUCE" in data_pkl["opcodes"]["call"]
    assert len(legacy["pickles"]) == 5  # magic, protocol, sys info, the object, the storage keys


def _ls_refuses(path: Path) -> bool:
    """What ``ls`` would say (in process: opening runs nothing from the file)."""
    try:
        ckptsurgeon.open(path)
    except CheckpointError:
        return True
    return False


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus not present")
def test_scan_never_passes_what_ls_refuses_in_the_public_corpus(tmp_path):
    scan = subprocess.run([sys.executable, str(AUDITED), str(tmp_path / "audit.log"), "scan", "--format", "json",
                           *map(str, CORPUS_FILES)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert not (tmp_path / "audit.log").exists()  # nothing ran: no spawn, exec, import or write
    assert scan.returncode == 1 and scan.stderr == ""
    by_file = {r["file"]: r for r in json.loads(scan.stdout)["files"]}
    for sample in CORPUS_FILES:
        report = by_file[str(sample)]
        if sample.name in BENIGN:
            assert report["ok"] and not _ls_refuses(sample), report
        else:
            assert not report["ok"] and report["findings"], sample
        if _ls_refuses(sample):
            assert not report["ok"], sample


def test_scan_never_passes_what_ls_refuses_in_the_reproducers(monkeypatch):
    monkeypatch.setenv("CKPTSURGEON_HDF5_TIMEOUT", "2")  # two of them make libhdf5 loop forever
    code, report = _scan_json(*map(str, REPRODUCERS))
    by_file = {r["file"]: r for r in report["files"]}
    for sample in REPRODUCERS:
        if _ls_refuses(sample):
            assert not by_file[str(sample)]["ok"], sample


@pytest.mark.parametrize("builder", [hostile.self_referential_pickle, hostile.shared_dicts_pickle,
                                     hostile.tuple_key_pickle, hostile.memo_index_pickle])
def test_scan_reports_structural_refusals(tmp_path, builder):
    path = tmp_path / "x.pkl"
    path.write_bytes(builder())
    code, report = _scan_json(str(path))
    assert code == 1 and report["files"][0]["findings"]


def test_hidden_second_pickle_and_banned_opcodes_are_findings(tmp_path):
    canary = tmp_path / "canary"
    path = hostile.second_pickle_zip(tmp_path / "two.pt", canary)
    result = scan_file(str(path))
    assert [f.kind for f in result.findings][:1] == ["pickle"] and "STOP" in result.findings[0].message
    bare = tmp_path / "inst.pkl"
    bare.write_bytes(b"(ios\nsystem\nS'true'\no.")  # INST/OBJ: call opcodes outside the allowlist
    result = scan_file(str(bare))
    kinds = {f.kind for f in result.findings}
    assert {"global", "opcode"} <= kinds
    assert ("os", "system") in result.pickles[0].globals
    assert not canary.exists()


def test_object_arrays_in_npy_and_npz(tmp_path):
    arr = np.array([{"a": 1}, None], dtype=object)
    np.save(tmp_path / "obj.npy", arr, allow_pickle=True)
    np.savez(tmp_path / "mixed.npz", plain=np.arange(3), obj=arr)
    for name in ("obj.npy", "mixed.npz"):
        result = scan_file(str(tmp_path / name))
        assert len(result.pickles) == 1 and not result.ok
        assert any(m.startswith("numpy") for m, _ in result.pickles[0].globals)
        assert any("object array" in f.message for f in result.findings)
    np.save(tmp_path / "plain.npy", np.arange(3))
    assert scan_file(str(tmp_path / "plain.npy")).ok and not scan_file(str(tmp_path / "plain.npy")).pickles


def test_allow_global_admits_a_data_class(tmp_path):
    path = tmp_path / "cfg.pkl"
    path.write_bytes(b"\x80\x02cmyproj.config\nConfig\n)\x81}b.")  # Config.__new__(Config); BUILD {}
    assert not scan_file(str(path)).ok
    assert scan_file(str(path), allow_globals=["myproj.config.Config"]).ok


def test_report_formats(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    good = FIXTURES / "torch" / "model.pt"
    gh = run_cli("scan", str(good), str(evil), "--format", "github")
    assert gh.returncode == 1
    lines = gh.stdout.strip().splitlines()
    assert all(line.startswith(("::error file=", "::notice ")) for line in lines)
    assert any("title=ckptsurgeon scan global::" in line and "posix.system" in line for line in lines)
    out = tmp_path / "scan.xml"
    assert run_cli("scan", str(good), str(evil), "--format", "junit", "-o", str(out)).returncode == 1
    root = ET.parse(out).getroot()
    suites = root.findall("testsuite")
    assert root.tag == "testsuites" and len(suites) == 2
    assert suites[0].get("failures") == "0" and suites[1].get("failures") != "0"
    text = run_cli("scan", str(good), str(evil))
    assert "global   " in text.stdout and text.stdout.strip().endswith("1 of 2 file(s) with findings")
    assert run_cli("scan", str(good)).returncode == 0


def test_a_format_can_register_its_pickle_walker(tmp_path, monkeypatch):
    """The hook another reader (DCP .metadata) plugs into."""
    path = tmp_path / "w.safetensors"
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(path))
    assert scan_file(str(path)).ok
    monkeypatch.setitem(pickle_walkers.PICKLE_WALKERS, "safetensors",
                        lambda p: [(f"{p}:meta", b"\x80\x02cbuiltins\nexec\n.")])
    result = scan_file(str(path))
    assert not result.ok and result.findings[0].kind == "global" and "builtins.exec" in result.findings[0].message


def test_dcp_and_hf_shards(tmp_path):
    """The DCP hook: .metadata with its reader's stand-ins admitted, and the archives inside the .distcp files."""
    dcp = FIXTURES / "dcp" / "torch-2.5.1" / "dist2"
    result = scan_file(str(dcp))
    assert result.ok, result.findings
    wheres = [p.where for p in result.pickles]
    assert wheres[0].endswith(".metadata") and any(".distcp@" in w and w.endswith("data.pkl") for w in wheres[1:])
    bad = tmp_path / "dcp"
    bad.mkdir()
    for f in dcp.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / ".metadata").write_bytes(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    result = scan_file(str(bad))
    assert [f.kind for f in result.findings][0] == "global" and "posix.system" in result.findings[0].message
    import ckptsurgeon

    tensors = {f"layer_{i}.weight": np.full((4, 4), i, np.float32) for i in range(3)}
    ckptsurgeon.save_sharded(tensors, tmp_path / "shards", max_shard_size=100, format="pt")
    result = scan_file(str(tmp_path / "shards"))
    assert result.ok and result.format == "hf-sharded" and len(result.pickles) == 3
