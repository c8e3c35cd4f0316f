"""``scan``: globals and opcode classes of every pickle, findings, report formats; never passes what ls refuses."""
from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import time
import zipfile
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
# (``ref``: the good second input of a diff/verify reproducer)
def _reproducer_samples() -> list[Path]:
    """Each saved fuzz case's checkpoint: its files, or the case folder itself when the checkpoint is a folder (an
    Orbax checkpoint: its inner folders are no samples of their own)."""
    out: list[Path] = []
    for case in sorted((HERE / "fuzz" / "reproducers").glob("*/case.json")):
        if json.loads(case.read_text()).get("target") == "" and case.parent.joinpath("_METADATA").exists():
            out.append(case.parent)
        else:
            out += sorted(p for p in case.parent.iterdir() if p.name not in ("case.json", "ref"))
    return out


REPRODUCERS = _reproducer_samples() + sorted((HERE / "reproducers").glob("*.h5"))


def _scan_json(*paths: str) -> tuple[int, dict]:
    proc = subprocess.run([str(Path(sys.executable).parent / "ckptsurgeon"), "scan", *paths, "--json"],
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
    scan = subprocess.run([sys.executable, str(AUDITED), str(tmp_path / "audit.log"), "scan", "--jobs", "1", "--json",
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
    gh = run_cli("scan", str(good), str(evil), "--report", "github")
    assert gh.returncode == 1
    lines = gh.stdout.strip().splitlines()
    assert all(line.startswith(("::error file=", "::notice ")) for line in lines)
    assert any("title=ckptsurgeon scan global::" in line and "posix.system" in line for line in lines)
    out = tmp_path / "scan.xml"
    assert run_cli("scan", str(good), str(evil), "--report", f"junit={out}").returncode == 1
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


# --- verdicts: what is found by content, and how bad it is -------------------------------------------------------

EVIL = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."  # os.system("true"), were it ever unpickled


def _torch_file(path: Path, **kwargs) -> Path:
    import torch

    torch.manual_seed(0)
    torch.save({"w": torch.randn(4, 3), "b": torch.zeros(3)}, path, **kwargs)
    return path


def _root(path: Path) -> str:
    return zipfile.ZipFile(path).namelist()[0].split("/")[0]


def _evil_zip() -> bytes:
    """A torch-like archive whose data.pkl calls posix.system."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", EVIL)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _verdict(path: Path, *flags: str) -> tuple[int, dict]:
    code, report = _scan_json(str(path), *flags)
    (one,) = report["files"]
    assert report["level"] == one["level"]
    return code, one


def _globals_found(report: dict) -> list[tuple[str, str]]:
    return [(f["path"], f["actual"]) for f in report["findings"] if f["kind"] == "global"]


@pytest.mark.parametrize("member", ["DATA.PKL", "extra.PKL", "Notes.Pickle", "extras/readme.txt"])
def test_a_pickle_member_is_found_by_its_bytes_whatever_its_name(tmp_path, member):
    path = _torch_file(tmp_path / "model.pt")
    root = _root(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{root}/{member}", EVIL)
    if member.lower() == "data.pkl":  # a name torch.load may take for data.pkl: ls refuses the archive too
        with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="differ only in case"):
            ckptsurgeon.open(path)
    else:
        assert set(ckptsurgeon.open(path).keys()) == {"w", "b"}  # ls reads data.pkl and nothing else
    code, report = _verdict(path)
    assert code == 1 and report["level"] == "unsafe"
    if member.lower() == "data.pkl":
        assert any("differ only in case" in f["message"] for f in report["findings"])
        return
    assert _globals_found(report) == [(f"{path}:{root}/{member}", "posix.system")]
    assert [p["where"] for p in report["pickles"]][0] == f"{path}:{root}/data.pkl"


def test_a_member_whose_name_differs_only_in_case_is_what_torch_load_reads(tmp_path):
    """torch.load looks members up through miniz, which compares names regardless of case in a binary search:
    which of archive/data.pkl and archive/DATA.PKL it unpickles depends on how many members there are (here, with
    one tensor, the upper-case one). So two such names are a finding even when both pickles are harmless."""
    import torch

    path = tmp_path / "model.pt"
    torch.save({"w": torch.randn(4, 3)}, path)
    root = _root(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{root}/DATA.PKL", pickle.dumps("the upper-case member", protocol=2))
    assert torch.load(path, weights_only=True) == "the upper-case member"
    with pytest.raises(ckptsurgeon.UnsafeCheckpointError, match="differ only in case"):  # ls would read data.pkl
        ckptsurgeon.open(path)
    code, report = _verdict(path)
    assert code == 1 and report["level"] == "unsafe"
    assert report["findings"] and all("differ only in case" in f["message"] for f in report["findings"])


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_an_evil_zip_inside_a_benign_zip(tmp_path, compression):
    path = _torch_file(tmp_path / "model.pt")
    root = _root(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{root}/extra/inner.pt", _evil_zip(), compress_type=compression)
    assert set(ckptsurgeon.open(path).keys()) == {"w", "b"}
    code, report = _verdict(path)
    assert code == 1 and report["level"] == "unsafe"
    assert _globals_found(report) == [(f"{path}:{root}/extra/inner.pt:archive/data.pkl", "posix.system")]


def test_an_evil_zip_followed_by_a_benign_one(tmp_path):
    """zipfile and ls read the archive whose end record ends the file (the benign one); a reader that starts
    at the front (local headers one by one) reads the evil one."""
    evil = _evil_zip()
    path = tmp_path / "cat.pt"
    path.write_bytes(evil + _torch_file(tmp_path / "benign.pt").read_bytes())
    assert zipfile.ZipFile(path).namelist()[0].endswith("data.pkl") and set(ckptsurgeon.open(path).keys()) == {"w", "b"}
    code, report = _verdict(path)
    assert code == 1 and report["level"] == "unsafe"
    assert _globals_found(report) == [(f"{path}:archive/data.pkl", "posix.system")]
    assert [p["where"] for p in report["pickles"]] == [f"{path}@{len(evil)}:benign/data.pkl", f"{path}:archive/data.pkl"]


def test_benign_legacy_pickles_followed_by_an_evil_zip(tmp_path):
    """torch.load reads the legacy file from the front; zipfile finds the zip from the end."""
    import torch

    path = _torch_file(tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = path.stat().st_size
    path.write_bytes(path.read_bytes() + _evil_zip())
    assert set(torch.load(path, weights_only=True)) == {"w", "b"}
    assert zipfile.ZipFile(path).read("archive/data.pkl") == EVIL
    code, report = _verdict(path)
    assert code == 1 and report["level"] == "unsafe"
    assert _globals_found(report) == [(f"{path}@{legacy}:archive/data.pkl", "posix.system")]
    assert len(report["pickles"]) == 6  # the legacy file's five, and the zip's


def test_every_file_of_a_folder_is_scanned_whether_or_not_an_index_names_it(tmp_path):
    folder = tmp_path / "hf"
    ckptsurgeon.save_sharded({f"layer_{i}.weight": np.full((4, 4), i, np.float32) for i in range(3)}, folder,
                             max_shard_size=100, format="pt")
    (folder / "README.md").write_text("# a model\n")
    code, report = _verdict(folder)
    assert code == 0 and report["level"] == "clean" and report["format"] == "hf-sharded"
    assert len(report["pickles"]) == 3 and len(report["files"]) == 5  # three shards, the index, the README
    (folder / "extra.bin").write_bytes(_evil_zip())  # no index names it
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "sub" / "deeper" / "optimizer.pkl").write_bytes(EVIL)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(_evil_zip())
    (folder / "link.bin").symlink_to(outside)
    code, report = _verdict(folder)
    assert code == 1 and report["level"] == "unsafe"
    levels = {Path(v["file"]).relative_to(folder).as_posix(): v["level"] for v in report["files"]}
    assert {k: v for k, v in levels.items() if v != "clean"} == {"extra.bin": "unsafe", "link.bin": "unsafe",
                                                                 "sub/deeper/optimizer.pkl": "unsafe"}
    assert len(levels) == 8
    assert sorted(_globals_found(report)) == [(f"{folder}/extra.bin:archive/data.pkl", "posix.system"),
                                              (f"{folder}/sub/deeper/optimizer.pkl@0", "posix.system")]
    assert not any(str(outside) in p["where"] for p in report["pickles"])  # the link was not followed
    text = run_cli("scan", str(folder))
    assert text.returncode == 1 and "8 file(s): 5 clean, 3 unsafe" in text.stdout


def _keras_model(with_lambda: bool):
    keras = pytest.importorskip("keras")
    inp = keras.Input((3,))
    out = keras.layers.Dense(2)(inp)
    if with_lambda:
        out = keras.layers.Lambda(lambda x: x * 2.0)(out)
    return keras, keras.Model(inp, out)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras_lambda_layer_is_code(tmp_path, suffix):
    keras, model = _keras_model(with_lambda=True)
    path = tmp_path / f"lambda{suffix}"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):  # what Keras' safe mode exists to refuse
        keras.saving.load_model(path)
    code, report = _verdict(path)
    assert code == 0 and report["level"] == "code"
    (finding,) = report["findings"]
    assert finding["kind"] == "code" and "Lambda" in finding["message"] and "marshalled Python bytecode" in finding["message"]
    assert _verdict(path, "--fail-on", "code")[0] == 1
    _keras, plain = _keras_model(with_lambda=False)
    plain.save(tmp_path / f"plain{suffix}")
    assert _verdict(tmp_path / f"plain{suffix}", "--fail-on", "code")[:1] == (0,)


def test_keras_custom_objects_are_code_and_standard_library_names_unsafe(tmp_path):
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="ScanTest")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((3,))
    model = keras.Model(inp, Doubler()(keras.layers.Dense(2)(inp)))
    path = tmp_path / "custom.keras"
    model.save(path)
    code, report = _verdict(path)
    assert code == 0 and report["level"] == "code"
    assert [f["actual"] for f in report["findings"]] == [f"{Doubler.__module__}.Doubler"]
    # the same file whose Dense layer names os.system for its activation (the CVE-2025-1550 class)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(members["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["activation"] = {"module": "os", "class_name": "function", "config": "system",
                                     "registered_name": "function"}
    members["config.json"] = json.dumps(config).encode()
    hostile_path = tmp_path / "hostile.keras"
    with zipfile.ZipFile(hostile_path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    code, report = _verdict(hostile_path)
    assert code == 1 and report["level"] == "unsafe"
    assert sorted(f["kind"] for f in report["findings"]) == ["code", "config"]
    assert any(f["actual"] == "os.system" for f in report["findings"])


def test_torchscript_is_code_not_unsafe(tmp_path):
    """Every TorchScript archive used to make scan exit 1 (its __torch__ classes are no allowlisted globals),
    though ls reads it: it is code that torch.jit.load compiles, not a pickle that runs arbitrary code."""
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(path))
    assert set(ckptsurgeon.open(path).keys()) == {"weight", "bias"}
    code, report = _verdict(path)
    assert code == 0 and report["level"] == "code"
    assert [f["kind"] for f in report["findings"]] == ["code"] and "TorchScript" in report["findings"][0]["message"]
    assert len(report["pickles"]) == 3  # data.pkl, constants.pkl and the debug pickle of its code
    assert _verdict(path, "--fail-on", "code")[0] == 1
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{_root(path)}/extra.pkl", EVIL)
    code, report = _verdict(path)
    assert code == 1 and report["level"] == "unsafe" and _globals_found(report) == [
        (f"{path}:{_root(path)}/extra.pkl", "posix.system")]


def test_zip_bombs_and_deep_nesting_are_findings_not_hangs(tmp_path):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data/0", bytes(64 << 20))  # 64 MiB of zeros in 64 KiB
    path = _torch_file(tmp_path / "bomb.pt")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{_root(path)}/extra/bomb.zip", bomb.getvalue())
    nested = pickle.dumps({"a": 1}, protocol=2)
    for level in range(8):  # a pickle in a zip in a zip ... eight deep
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("inner.zip" if level else "data.pkl", nested)
        nested = buf.getvalue()
    deep = tmp_path / "deep.zip"
    deep.write_bytes(nested)
    start = time.monotonic()
    code, report = _scan_json(str(path), str(deep))
    assert time.monotonic() - start < 60
    bomb_report, deep_report = report["files"]
    assert code == 1 and bomb_report["level"] == deep_report["level"] == "unsafe"
    assert any("zip bomb" in f["message"] and f["path"] == f"{path}:{_root(path)}/extra/bomb.zip"
               for f in bomb_report["findings"])
    assert any(f["kind"] == "archive" and "nested 5 deep" in f["message"] for f in deep_report["findings"])
    assert deep_report["pickles"] == []


def test_levels_per_file_exit_codes_and_fail_on(tmp_path):
    import torch

    clean = _torch_file(tmp_path / "clean.pt")
    code_file = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(code_file))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(EVIL)
    code, report = _scan_json(str(clean), str(code_file), str(evil))
    assert code == 1 and report["level"] == "unsafe" and report["fail_on"] == "unsafe"
    assert [r["level"] for r in report["files"]] == ["clean", "code", "unsafe"]
    assert {f["level"] for f in report["files"][2]["findings"]} == {"unsafe"}
    assert _scan_json(str(clean), str(code_file))[0] == 0
    assert _scan_json(str(clean), str(code_file), "--fail-on", "code")[0] == 1
    assert _scan_json(str(clean), "--fail-on", "code")[0] == 0
    gh = run_cli("scan", str(clean), str(code_file), "--report", "github")
    assert gh.returncode == 0 and gh.stdout.startswith("::warning file=") and "1 code" in gh.stdout
    xml = run_cli("scan", str(code_file), "--report", "junit")
    suite = ET.fromstring(xml.stdout).find("testsuite")
    assert xml.returncode == 0 and suite.get("failures") == "0" and "TorchScript" in suite.find("testcase[@name='code']/system-out").text
    assert suite.find("properties/property").get("value") == "code"
    xml = run_cli("scan", str(code_file), "--report", "junit", "--fail-on", "code")
    assert xml.returncode == 1 and ET.fromstring(xml.stdout).find("testsuite").get("failures") == "1"
    text = run_cli("scan", str(clean), str(code_file), str(evil))
    verdicts = [line.strip() for line in text.stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")
                and line.strip().split(":")[0] in ("clean", "code", "unsafe")]
    assert verdicts == ["clean", "code: 1 finding(s)", "unsafe: 2 finding(s)"]


def test_storages_and_arrays_of_any_bytes_are_not_taken_for_pickles(tmp_path):
    """Members are read by content: the bytes of thousands of random tensors must not look like pickles."""
    import torch

    torch.manual_seed(0)
    tensors = {f"t{i}": (torch.randn(64) if i % 2 else torch.randint(-128, 128, (256,), dtype=torch.int8))
               for i in range(4000)}
    path = tmp_path / "many.pt"
    torch.save(tensors, path)
    rng = np.random.default_rng(0)
    npz = tmp_path / "many.npz"
    np.savez_compressed(npz, **{f"a{i}": rng.integers(0, 256, 4096, dtype=np.uint8) for i in range(500)})
    code, report = _scan_json(str(path), str(npz))
    assert code == 0 and [r["level"] for r in report["files"]] == ["clean", "clean"]
    assert [len(r["pickles"]) for r in report["files"]] == [1, 0]


def test_a_folder_of_hdf5_files_is_described_in_one_child_with_the_same_verdicts(tmp_path, monkeypatch):
    """scan of a folder tree reads its plain HDF5 files in this process (``h5plain``) and describes the others in
    one child process (was one each); a damaged file among them still gets its own refusal, and the verdicts equal
    those of scanning each file alone."""
    import shutil

    from ckptsurgeon.check.scan import scan_files
    from ckptsurgeon.formats.hdf5 import h5tree

    monkeypatch.setenv("CKPTSURGEON_HDF5_TIMEOUT", "2")
    good = next(p for p in sorted((HERE.parent / "fixtures").rglob("*.h5")) if p.stat().st_size < 1 << 20)
    for i in range(6):
        shutil.copy(good, tmp_path / f"m{i}.h5")
    for i in range(3):  # chunked datasets: libhdf5 reads these
        shutil.copy(HERE / "fuzz" / "seeds" / "generic.h5", tmp_path / f"chunked{i}.h5")
    (tmp_path / "damaged.h5").write_bytes(good.read_bytes()[: good.stat().st_size // 3])  # cut short
    calls = []
    real = h5tree.run_isolated
    monkeypatch.setattr(h5tree, "run_isolated", lambda name, *a, **k: calls.append((name, a)) or real(name, *a, **k))
    together = scan_files([str(tmp_path)], jobs=1)[0]
    assert [c[0] for c in calls] == ["hdf5.describe_many"], calls
    assert sorted(r["where"].rsplit("/", 1)[-1] for r in calls[0][1][0]["requests"]) == \
        ["chunked0.h5", "chunked1.h5", "chunked2.h5", "damaged.h5"]
    alone = [scan_files([str(f)], jobs=1)[0] for f in sorted(tmp_path.iterdir())]
    assert sorted((v.file.rsplit("/", 1)[-1], v.format, v.level) for v in together.files) == \
        sorted((r.file.rsplit("/", 1)[-1], r.format, r.level) for r in alone)
    assert [r.findings for r in alone if r.file.endswith("damaged.h5")][0], "the damaged file is a finding"


def _cut_legacy(path: Path) -> Path:
    """A legacy torch file cut short: scan finds its pickles, and ls (so scan) refuses it (truncated)."""
    data = (FIXTURES / "torch" / "legacy.pt").read_bytes()
    path.write_bytes(data[:-100])
    return path


def test_a_parallel_scan_of_checkpoint_folders_equals_the_serial_one(tmp_path):
    """Forked workers scan the files while this process reads the checkpoint folders (DCP, TensorFlow): a file in
    such a folder waits for that reading to know whether ls opens it on its own; every other file is opened at
    once. The report is the serial one, findings in the same order, each file's verdict its own."""
    import shutil

    from ckptsurgeon.check.scan import scan_files

    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "dcp" / "torch-2.13.0", tree / "dcp")
    shutil.copytree(FIXTURES / "tensorflow" / "tf1_lstmcell", tree / "tf")
    shutil.copytree(FIXTURES / "torch", tree / "torch")
    stray = _cut_legacy(tree / "dcp" / "dist2" / "stray.pt")  # in a checkpoint folder, not read by its reading
    cut = _cut_legacy(tree / "torch" / "cut.pt")
    serial = [r.as_dict() for r in scan_files([str(tree)], jobs=1)]
    parallel = [r.as_dict() for r in scan_files([str(tree)], jobs=3)]
    assert parallel == serial == [scan_file(str(tree)).as_dict()]
    levels = {v["file"]: v["level"] for v in serial[0]["files"]}
    assert levels[str(stray)] == levels[str(cut)] == "unsafe"
    assert any("truncated" in f["message"] and f["path"] == str(stray) for f in serial[0]["findings"])
    assert sum(v["format"] == "pytorch" and v["level"] == "clean" for v in serial[0]["files"]) >= 3


def test_a_file_opened_before_its_folder_was_read_is_told_as_serially(tmp_path):
    """A worker opens a file as ls does before the checkpoint folders are read; if a folder's reading covers
    it after all, that finding is dropped. A file in a checkpoint folder is opened afterwards if not covered."""
    from ckptsurgeon.check.scan import ScanResult, _finish, _run, _Scan, _Task

    cut = str(_cut_legacy(tmp_path / "cut.pt"))
    for covered in (True, False):
        for defer in (True, False):
            task = _Task(False, cut, defer, ())
            done = _run(task)
            assert len(done.part.findings) == done.before_ls + (not defer)  # the worker's opening: one refusal
            serial = ScanResult(cut, None)
            _Scan(serial, ()).member(cut, covered)
            assert _finish(done, task, covered).findings == serial.findings, (covered, defer)
            assert len(serial.findings) == (not covered)  # ls's refusal, unless a folder's reading covers it


def test_a_file_a_folder_reading_leaves_uncovered_is_opened_while_the_workers_scan(tmp_path, monkeypatch):
    """With workers, this process opens the files of checkpoint folders that the folders' readings leave
    uncovered while the workers scan (``_open_uncovered``), not one by one after the pool; ``_finish`` takes that
    outcome and tells it exactly as opening the file then would (a refusal told once, after the content's)."""
    import shutil

    from ckptsurgeon.check import scan as scan_mod

    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "dcp" / "torch-2.13.0" / "dist2", tree / "dcp")
    shutil.copy(FIXTURES / "torch" / "model.pt", tree / "dcp" / "extra.pt")  # uncovered, clean
    stray = _cut_legacy(tree / "dcp" / "stray.pt")  # uncovered, refused by ls
    shutil.copy(FIXTURES / "torch" / "model.pt", tree / "plain.pt")  # in no checkpoint folder: not deferred
    plans, tasks = scan_mod._plan([str(tree)], ())
    begun = [scan_mod._begin(p, w, ()) if w is not None else None for p, w in plans]
    opened = scan_mod._open_uncovered(plans, begun, tasks)
    names = {Path(tasks[i].path).name: o for i, o in opened.items()}
    assert {"extra.pt", "stray.pt"} <= set(names) and "plain.pt" not in names  # only deferred files
    assert all(Path(tasks[i].path).parent == tree / "dcp" for i in opened)
    assert names["extra.pt"].refusal is None and "truncated" in str(names["stray.pt"].refusal)
    for at, outcome in opened.items():  # _finish with the outcome equals _finish opening the file itself
        task = tasks[at]
        with_opened = scan_mod._finish(scan_mod._run(task), task, False, outcome).findings
        assert with_opened == scan_mod._finish(scan_mod._run(task), task, False).findings
    real = scan_mod.open_checkpoint
    reopened = []
    monkeypatch.setattr(scan_mod, "open_checkpoint", lambda path, **k: reopened.append(path) or real(path, **k))
    parallel = scan_mod.scan_files([str(tree)], jobs=2)[0].as_dict()
    assert str(stray) in reopened  # by _open_uncovered, in this process (the workers' openings are not seen here)
    assert reopened.count(str(stray)) == 1  # and not again after the pool
    monkeypatch.undo()
    assert parallel == scan_mod.scan_files([str(tree)], jobs=1)[0].as_dict()


def test_only_folders_holding_a_checkpoint_name_are_probed_as_checkpoints(tmp_path):
    """The walk of a folder tree probes a folder as a checkpoint (DCP, HF index, TensorFlow) only when its entries
    hold a name such a checkpoint needs; the checkpoints it finds are those probing every folder finds, on the
    fixtures and on folders made of those names."""
    import itertools
    import os

    from ckptsurgeon.check import scan as scan_mod

    walked = scan_mod.walk_folder(str(FIXTURES))
    every = [str(FIXTURES), *walked.below]
    assert walked.checkpoints == frozenset(f for f in every if scan_mod._names_a_checkpoint(f))
    assert len(walked.checkpoints) >= 20
    for f in every:  # the prefilter never drops a folder the probes take
        if scan_mod._names_a_checkpoint(f):
            assert scan_mod._may_name_a_checkpoint({n.casefold() for n in os.listdir(f)}), f
    names = [".metadata", "checkpoint", "variables", "model.safetensors.index.json", "pytorch_model.bin.index.json",
             "m.index", "m.data-00000-of-00001", "notes.txt", "model.pt"]
    for k, combo in enumerate(itertools.combinations(names, 2)):
        folder = tmp_path / f"f{k}"
        folder.mkdir()
        for name in combo:
            if name == "variables":
                (folder / name).mkdir()
                (folder / name / "variables.index").write_bytes(b"x")
            elif name == "checkpoint":
                (folder / name).write_text('model_checkpoint_path: "m"\n')
            else:
                (folder / name).write_bytes(b"{}")
    walked = scan_mod.walk_folder(str(tmp_path))
    assert walked.checkpoints == frozenset(f for f in [str(tmp_path), *walked.below] if scan_mod._names_a_checkpoint(f))
    assert walked.checkpoints  # some of them are


def test_the_checkpoint_name_prefilter_ignores_case(tmp_path, monkeypatch):
    """On a case-insensitive file system (macOS, Windows) the probes find ``Checkpoint`` or ``.METADATA`` for the names
    they ask for: a folder holding such a name in any case is probed, one holding none is not (the review's case)."""
    from ckptsurgeon.check import scan as scan_mod

    for k, name in enumerate(("Checkpoint", ".METADATA", "Variables", "M.INDEX", "Model.Safetensors.Index.JSON")):
        (tmp_path / f"f{k}").mkdir()
        (tmp_path / f"f{k}" / name).write_bytes(b"nonsense")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    probed: list[str] = []
    real = scan_mod._names_a_checkpoint
    monkeypatch.setattr(scan_mod, "_names_a_checkpoint", lambda f: probed.append(f) or real(f))
    scan_mod.walk_folder(str(tmp_path))
    assert sorted(Path(f).name for f in probed) == ["f0", "f1", "f2", "f3", "f4"]


def test_a_chunk_a_worker_did_not_finish_is_run_again_here():
    """A worker that dies on a chunk, or fails on it, leaves it to this process, which runs it (and would raise
    what a serial run raises); every chunk's results come back once, in order, and no worker is left behind."""
    import os

    from ckptsurgeon.check.scan_pool import SharedChunks

    parent = os.getpid()

    def run(chunk: int) -> list[int]:
        if os.getpid() != parent:
            if chunk == 3:
                os._exit(9)
            if chunk == 5:
                raise ValueError("a worker's failure")
        time.sleep(0.01)
        return [chunk, chunk]

    shared = SharedChunks(list(range(12)), run, workers=2)
    time.sleep(0.5)  # the workers take every chunk first
    assert shared.results() == [c for c in range(12) for _ in range(2)]

    def fails_here(chunk: int) -> list[int]:
        if os.getpid() == parent:
            raise ValueError("here")
        time.sleep(0.05)  # the worker is still on its first chunks when this process takes one
        return [chunk]

    shared = SharedChunks(list(range(50)), fails_here, workers=1)
    pids = [pid for pid, _ in shared.children]
    with pytest.raises(ValueError, match="here"):
        shared.results()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # stopped and reaped


def test_the_pool_keeps_the_collector_off_shared_objects_only_while_it_runs():
    """While the workers run, the objects made before them are frozen (no collection copies the pages they share);
    after results() or an error, this process's collector has them all again, unless its caller had frozen some."""
    import gc
    import os

    from ckptsurgeon.check.scan_pool import SharedChunks

    parent = os.getpid()
    seen = []

    def run(chunk: int) -> list[int]:
        if os.getpid() == parent:
            seen.append(gc.get_freeze_count())
        else:
            time.sleep(0.05)  # this process takes chunks too
        return [chunk]

    assert gc.get_freeze_count() == 0
    shared = SharedChunks(list(range(6)), run, workers=1)
    assert shared.results() == list(range(6)) and gc.get_freeze_count() == 0
    assert seen and min(seen) > 0

    def fails(chunk: int) -> list[int]:
        raise ValueError("here")

    with pytest.raises(ValueError, match="here"):
        SharedChunks(list(range(6)), fails, workers=1).results()
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller's own freeze (a pre-fork server) is left as it was
    try:
        frozen = gc.get_freeze_count()
        made_since = [[i] for i in range(1000)]  # neither frozen by the pool nor thawed after it
        assert SharedChunks(list(range(6)), run, workers=1).results() == list(range(6)) and made_since
        assert gc.get_freeze_count() == frozen > 0
    finally:
        gc.unfreeze()
