"""One CLI convention (issue 21, item 2): reports, --json, tree, helpful misses, --help, completion, plots."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from ckptsurgeon.cli import COMMANDS, DOCS_URL, cli
from conftest import CORPUS, FIXTURES

MODEL = FIXTURES / "torch" / "model.pt"
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture()
def drift(tmp_path):
    """A lock of model.pt, and a copy of model.pt's tensors with one dropped, one cast and one NaN."""
    import ckptsurgeon

    lock = tmp_path / "model.layout.json"
    assert run("layout", MODEL, "--hash", "-o", lock).exit_code == 0
    index = ckptsurgeon.open(MODEL)
    arrays = {p.replace("/", "."): index[p].numpy().copy() for p in index}
    arrays.pop("embed.weight")
    arrays["head.bias"] = arrays["head.bias"].astype(np.float16)
    arrays["head.weight"][0, 0] = np.nan
    bad = tmp_path / "bad.safetensors"
    save_file(arrays, str(bad))
    return lock, bad


# ---- reports ---------------------------------------------------------------------------------

def test_several_reports_from_one_reading(drift, tmp_path, monkeypatch):
    from ckptsurgeon.cli import hints

    lock, bad = drift
    opened = []
    real_open = hints.api.open
    monkeypatch.setattr(hints.api, "open", lambda path, **kw: opened.append(str(path)) or real_open(path, **kw))
    res = run("validate", MODEL, bad, "--layout", lock, "--check-finite",
              "--report", f"junit={tmp_path / 'r.xml'}", "--report", f"json={tmp_path / 'r.json'}", "--report", "github")
    assert res.exit_code == 1
    assert opened == [str(MODEL), str(bad)]  # each checkpoint read once, whatever the number of reports
    data = json.loads((tmp_path / "r.json").read_text())
    assert [(f["file"], f["ok"]) for f in data["files"]] == [(str(MODEL), True), (str(bad), False)]
    # the lock records hashes: checked with no --hash (the NaN changed head/weight's values)
    assert sorted(f["kind"] for f in data["findings"]) == ["dtype", "hash", "missing", "nonfinite"]
    errors = [line for line in res.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 4 and all(f"file={bad}" in e for e in errors)
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert root.get("failures") == "4"


def test_junit_one_case_per_tensor_and_check_with_skipped(drift, tmp_path):
    lock, bad = drift
    res = run("validate", bad, "--layout", lock, "--report", f"junit={tmp_path / 'r.xml'}")
    assert res.exit_code == 1
    root = ET.parse(tmp_path / "r.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    # 23 tensors in the lock x (present, shape, dtype, hash, nonfinite) + 2 recurrent groups
    assert len(cases) == 23 * 5 + 2 and root.get("tests") == str(23 * 5 + 2)
    assert cases["embed/weight present"].find("failure") is not None
    assert cases["embed/weight shape"].find("skipped") is not None  # not in the checkpoint: never ran
    assert cases["head/bias dtype"].find("failure") is not None
    assert cases["head/bias hash"].find("skipped") is not None  # dtype differs: values not compared
    assert cases["head/weight hash"].find("failure") is not None  # the NaN changed its values
    assert cases["head/weight nonfinite"].find("skipped").get("message").endswith("(pass --check-finite)")
    assert cases["encoder/rnn/weight_hh_l0 hash"].find("failure") is None
    assert cases["encoder/rnn/weight_hh_l0 hash"].find("skipped") is None  # ran and passed


def test_a_lock_with_hashes_is_checked_without_hash_flag(drift, tmp_path):
    lock, _ = drift
    data = json.loads(lock.read_text())
    data["tensors"][1]["sha256"] = "0" * 64
    lock.write_text(json.dumps(data))
    res = run("validate", MODEL, "--layout", lock, "--json")
    assert res.exit_code == 1 and [f["kind"] for f in json.loads(res.stdout)["findings"]] == ["hash"]
    assert run("validate", MODEL, "--layout", lock, "--no-hash").exit_code == 0


def test_unreadable_input_is_an_annotation_and_a_junit_case(drift, tmp_path):
    lock, _ = drift
    pointer = tmp_path / "lfs.pt"
    pointer.write_text(LFS_POINTER)
    xml = tmp_path / "r.xml"
    res = run("validate", pointer, "--layout", lock, "--report", "github", "--report", f"junit={xml}")
    assert res.exit_code == 1
    line = res.stdout.splitlines()[0]
    assert line.startswith(f"::error file={pointer},title=ckptsurgeon unreadable::") and "git lfs pull" in line
    assert "lfs: true" in line
    root = ET.parse(xml).getroot()  # written although the input could not be read
    read = [c for c in root.iter("testcase") if c.get("name") == "read"]
    assert len(read) == 1 and "git lfs pull" in read[0].find("failure").get("message")
    assert int(root.get("skipped")) == 23 * 3  # every check of the lock: not run
    assert "error: " in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_lock_beside_each_file_and_globs(tmp_path):
    for name in ("a", "b"):
        shutil.copy(MODEL, tmp_path / f"{name}.pt")
    assert run("layout", tmp_path / "a.pt", "-o", tmp_path / "a.layout.json").exit_code == 0
    res = run("validate", str(tmp_path / "*.pt"), "--json")
    data = json.loads(res.stdout)
    assert res.exit_code == 1 and [f["ok"] for f in data["files"]] == [True, False]
    assert "no layout lock beside it" in data["files"][1]["error"] and "b.layout.json" in data["files"][1]["error"]
    assert run("validate", str(tmp_path / "*.safetensors")).exit_code == 2  # a pattern matching nothing


def test_json_and_deprecated_format_alias(drift):
    lock, bad = drift
    new = run("validate", bad, "--layout", lock, "--json")
    old = run("validate", bad, "--layout", lock, "--format", "json")
    assert new.exit_code == old.exit_code == 1
    assert json.loads(new.stdout) == json.loads(old.stdout)
    assert old.stderr.strip() == ("note: --format json is deprecated for reports; use --report json "
                                  "(--format will be removed in the next release)")
    assert new.stderr == ""
    assert "--format" not in run("validate", "--help").output  # hidden
    assert "--report" in run("scan", "--help").output and "--format" not in run("scan", "--help").output


@pytest.mark.parametrize("args, message", [
    (["--report", "xml"], "the format is one of"),
    (["--report", "json", "--report", "junit"], "would share stdout"),
    (["--report", "text", "--report", "github", "-o", "x.txt"], "names the path of the one report"),
    (["--report", "json=a.json", "--report", "junit=a.json"], "same path"),
])
def test_report_usage_errors(args, message):
    res = run("scan", MODEL, *args)
    assert res.exit_code == 2 and message in res.output


def test_every_reporting_command_takes_json():
    from ckptsurgeon.cli import LazyGroup

    group = cli
    assert isinstance(group, LazyGroup)
    for name in COMMANDS:
        cmd = group.get_command(None, name)  # type: ignore[arg-type]
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if name != "layout":  # a lock is JSON already
            assert "--json" in opts, name


# ---- scan at scale ---------------------------------------------------------------------------

def test_scan_parallel_equals_serial_and_summary(tmp_path, monkeypatch):
    from ckptsurgeon.check import scan
    from ckptsurgeon.check.scan import PARALLEL_MIN_FILES, scan_file, scan_files

    pools, in_pool = [], scan._in_pool
    monkeypatch.setattr(scan, "_in_pool", lambda tasks, jobs: pools.append((len(tasks), jobs)) or in_pool(tasks, jobs))

    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "torch", tree / "torch")
    if CORPUS.exists():
        shutil.copytree(CORPUS / "data", tree / "corpus")
    (tree / "lfs.pt").write_text(LFS_POINTER)
    for i in range(8):  # enough files for a pool without the corpus (a fresh clone has no ../shared)
        shutil.copy(MODEL, tree / f"copy_{i}.pt")
    n = sum(len(f) for _, _, f in os.walk(tree))
    assert PARALLEL_MIN_FILES > n >= 8  # jobs=None stays in this process; jobs=2 asks for the pool
    serial = [r.as_dict() for r in scan_files([str(tree), str(MODEL)], jobs=1)]
    parallel = [r.as_dict() for r in scan_files([str(tree), str(MODEL)], jobs=2)]
    assert parallel == serial == [scan_file(str(tree)).as_dict(), scan_file(str(MODEL)).as_dict()]
    assert pools == [(n + 1, 2)]  # only jobs=2 used a pool: every file of the tree and the model, one task each
    assert [r.as_dict() for r in scan_files([str(tree)])] == serial[:1] and len(pools) == 1  # under the threshold
    assert len(serial[0]["files"]) == n
    res = run("scan", tree, "--summary", "--jobs", "2")
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"summary: {n} file(s): ")
    assert any(line.split()[:2] == ["unsafe", "1"] and "lfs.pt: is a Git LFS pointer" in line for line in lines)
    data = json.loads(run("scan", tree, "--json").stdout)
    assert data["summary"]["files"] == n and sum(data["summary"][k] for k in ("clean", "code", "unsafe")) == n


def test_scan_verdict_does_not_depend_on_the_starting_folder():
    """A DCP folder inside the folder scanned is read as a DCP (its .metadata with DCP's own admitted globals),
    as scanning it directly does: the same file, the same verdict."""
    top = json.loads(run("scan", FIXTURES / "dcp", "--json").stdout)["files"][0]["files"]
    levels = {v["file"]: v["level"] for v in top}
    assert any(f.endswith(".metadata") for f in levels)
    for folder in sorted({os.path.dirname(f) for f in levels}):
        own = json.loads(run("scan", folder, "--json").stdout)["files"][0]
        for v in own.get("files", []):
            assert levels[v["file"]] == v["level"], v
    assert set(levels.values()) == {"clean"}


def test_scan_globs(tmp_path):
    res = run("scan", str(FIXTURES / "torch" / "*.pt"), "--json")
    assert [f["file"] for f in json.loads(res.stdout)["files"]] == sorted(str(p) for p in (FIXTURES / "torch").glob("*.pt"))


# ---- tree ------------------------------------------------------------------------------------

@pytest.fixture()
def layered(tmp_path):
    arrays = {f"layers.{i}.attn.weight": np.zeros((4, 4), np.float32) for i in range(24)}
    arrays |= {f"layers.{i}.mlp.bias": np.zeros(4, np.float32) for i in range(24)}
    arrays["layers.24.attn.weight"] = np.zeros((4, 5), np.float32)  # a different last layer: not folded in
    arrays["layers.24.mlp.bias"] = np.zeros(4, np.float32)
    arrays |= {"block_2.w": np.zeros(2, np.float32), "block_10.w": np.zeros(3, np.float32)}
    path = tmp_path / "layered.safetensors"
    save_file(arrays, str(path))
    return path


def test_tree_sorts_naturally_and_folds(layered):
    text = run("tree", layered).stdout
    names = [line.split("── ")[1].split()[0] for line in text.splitlines()[1:]]
    assert names.index("block_2/") < names.index("block_10/")
    assert "0..23/" in names and "24/" in names and "1/" not in names
    row = next(line for line in text.splitlines() if "0..23/" in line)
    assert "(24x, same shapes)" in row and "48 tensors" in row  # the run's totals
    expanded = run("tree", layered, "--expand").stdout
    numbered = [n for n in (line.split("── ")[1].split()[0] for line in expanded.splitlines()[1:]) if n[:-1].isdigit()]
    assert numbered == [f"{i}/" for i in range(25)]  # natural order: 2 before 10
    assert "same shapes" not in expanded


def test_tree_colour_only_on_a_terminal_without_no_color(layered, monkeypatch):
    from ckptsurgeon.cli import tree

    assert "\x1b[" in run("tree", layered, "--color").stdout
    assert "\x1b[" not in run("tree", layered).stdout  # CliRunner is no terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert tree.use_colour(None) is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert tree.use_colour(None) is False and tree.use_colour(True) is True


# ---- helpful misses --------------------------------------------------------------------------

def test_ls_meta_names_the_prefix(tmp_path):
    src = FIXTURES / "tensorflow" / "tf1_lstmcell"
    for f in src.glob("model.ckpt.*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "model.ckpt.meta").write_bytes(b"\x0a\x02\x08\x01 a MetaGraphDef")
    res = run("ls", tmp_path / "model.ckpt.meta")
    assert res.exit_code == 1
    assert res.output.strip() == (f"error: {tmp_path / 'model.ckpt.meta'}: is a TensorFlow MetaGraph (the graph, no "
                                  f"weights); pass the checkpoint prefix {str(tmp_path / 'model.ckpt')!r} (its .index "
                                  "and .data-* files hold the weights)")
    assert run("ls", tmp_path / "model.ckpt").exit_code == 0  # the fix works


def test_ls_folder_lists_checkpoints_below(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    shutil.copy(MODEL, tmp_path / "runs" / "a" / "model.pt")
    shutil.copytree(FIXTURES / "tensorflow" / "tf1_lstmcell", tmp_path / "runs" / "tf")
    (tmp_path / "runs" / "notes.txt").write_text("not a checkpoint")
    res = run("ls", tmp_path / "runs")
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "checkpoints found below it: " in res.output
    assert f"{tmp_path / 'runs' / 'a' / 'model.pt'} (pytorch)" in res.output
    assert f"{tmp_path / 'runs' / 'tf'}{os.sep} (tensorflow)" in res.output and "notes.txt" not in res.output


def test_ls_lfs_pointer_names_the_fix(tmp_path):
    (tmp_path / "model.pt").write_text(LFS_POINTER)
    res = run("ls", tmp_path / "model.pt")
    assert res.exit_code == 1 and "is a Git LFS pointer" in res.output and "git lfs pull" in res.output


# ---- --help and completion -------------------------------------------------------------------

def test_help_ends_with_docs_link():
    assert run("--help").output.rstrip().endswith(f"Documentation: {DOCS_URL}")


def test_completion_script_completes_in_bash(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    res = run("--show-completion", "bash")
    assert res.exit_code == 0 and "_CKPTSURGEON_COMPLETE=bash_complete" in res.output
    script = tmp_path / "complete.bash"
    script.write_text(res.output)
    venv = os.path.dirname(sys.executable)
    probe = (f". {script}; COMP_WORDS=(ckptsurgeon sca); COMP_CWORD=1; _ckptsurgeon_completion ckptsurgeon; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run([bash, "-c", probe], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PATH=f"{venv}:{os.environ['PATH']}"))
    assert out.stdout.split() == ["scan"], out.stderr
    home = tmp_path / "home"
    home.mkdir()
    res = run("--install-completion", "bash", env={"HOME": str(home)})
    assert res.exit_code == 0
    rc = (home / ".bashrc").read_text()
    assert rc.count(".ckptsurgeon-complete.bash") == 1
    run("--install-completion", "bash", env={"HOME": str(home)})
    assert (home / ".bashrc").read_text() == rc  # installed once


# ---- stats --plot ----------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 12])
def test_plot_titles_never_overlap(tmp_path, groups):
    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    import itertools

    import ckptsurgeon
    from ckptsurgeon.check.plot import figure_gates
    from ckptsurgeon.check.stats import checkpoint_stats

    torch.manual_seed(0)
    sd = {f"a_rather_long_encoder_scope_name_{i}.lstm.{k}": v
          for i in range(groups) for k, v in torch.nn.LSTM(8, 6, num_layers=2).state_dict().items()}
    torch.save(sd, tmp_path / "m.pt")
    index = ckptsurgeon.open(tmp_path / "m.pt")
    fig = figure_gates(index, checkpoint_stats(index, None))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] + [t for ax in fig.axes if ax.axison for t in (ax.title, ax.yaxis.label)]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t is not None and t.get_text()]
    assert len(boxes) >= 1 + groups * 3 * 4
    clash = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    outside = [t for t, b in boxes if b.x0 < 0 or b.y0 < 0 or b.x1 > fig.bbox.width or b.y1 > fig.bbox.height]
    assert not clash and not outside
