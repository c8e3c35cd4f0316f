"""The fuzzer in CI: a fixed seed and a fixed number of mutants per format (about a minute), each run
under a memory limit and a timeout; any internal error, timeout, signal, warning, multi-line stderr, unnamed
file or leftover file fails. ``FUZZ_SECONDS=3600`` turns it into a long campaign that shrinks and
saves a reproducer of each new failure under ``tests/fuzz/reproducers/`` (replayed below).

Issue 23's classes run in a second, smaller campaign: recurrent groups whose tensors do not fit their layout and
inf/nan/1e38 weights (each seed of one format per case, through stats, verify and diff against the unmutated
seed), and a few files read over loopback HTTP from an honest and from lying servers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent.parent
CASES_PER_FORMAT = 60
SEED = 20260513
READER_FORMATS = ("safetensors,pytorch,pytorch-legacy,torchscript,pickle,npy,npz,hdf5,keras,tensorflow,onnx,dcp,"
                  "hf-sharded,gguf")
CLASS_CASES = 7  # rnn / nonfinite: the first 7 cases are one seed of each of their 7 formats, as made
REMOTE_CASES = 4  # honest, cut short, silent, oversized (remote.MODES's order)


def _campaign(tmp_path: Path, *args: str, timeout: float, env: dict | None = None) -> dict:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.campaign", "--report", str(report), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert report.exists(), proc.stderr[-3000:]
    result = json.loads(report.read_text())
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=1))
    return result


def test_fuzz_every_format(tmp_path):
    seconds = os.environ.get("FUZZ_SECONDS")
    if seconds:  # a long campaign over every format and class with every command; new failures are saved
        result = _campaign(tmp_path, "--seconds", seconds, "--commands", "all", timeout=float(seconds) * 2 + 1800)
    else:
        result = _campaign(tmp_path, "--seed", str(SEED), "--cases", str(CASES_PER_FORMAT), "--no-save",
                           "--formats", READER_FORMATS, "--max-seconds", "150", timeout=900)
    assert result["total_executions"] > 0
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)


def test_fuzz_flax_paddle_tflite(tmp_path):
    """The readers added for issue 24, files recorded by their frameworks, mutated and read by every command."""
    result = _campaign(tmp_path, "--seed", str(SEED), "--cases", "12", "--no-save", "--formats", "flax,paddle,tflite",
                       "--commands", "all", "--max-seconds", "60", timeout=300)
    assert set(result["mutants"]) == {"flax", "paddle", "tflite"} and result["total_executions"] > 0
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)


NEW_CLASSES = "orbax,paddle-jit,tflite-rnn,keras-stacked"
NEW_COMMANDS = "ls,tree,rnn,stats,diff,scan,graft-flax,cut-flax"


def test_fuzz_orbax_paddle_jit_tflite_rnn_keras_stacked(tmp_path):
    """Issue 24's readers and writers: Orbax folders (metadata, manifests and chunks mutated inside the folder),
    paddle.jit.save pairs, TFLite recurrent ops and Keras RNN(StackedRNNCells), read by every reader command and
    converted to Flax and Paddle files (and grafted into a Flax template)."""
    result = _campaign(tmp_path, "--seed", str(SEED), "--cases", "6", "--no-save", "--formats", NEW_CLASSES,
                       "--commands", NEW_COMMANDS, "--max-seconds", "90", "--atheris-share", "0", timeout=400)
    assert set(result["mutants"]) == set(NEW_CLASSES.split(",")) and result["total_executions"] > 0
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)


def test_fuzz_new_classes_to_flax_and_paddle(tmp_path):
    """``extract --to flax|paddle|paddle-cell`` of issue 24's classes: every refusal must name the file."""
    result = _campaign(tmp_path, "--seed", str(SEED), "--cases", "4", "--no-save", "--formats", NEW_CLASSES,
                       "--commands", "to-flax,to-paddle,to-paddle-cell", "--max-seconds", "60", "--atheris-share", "0",
                       timeout=300)
    assert result["total_executions"] > 0
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)


def test_fuzz_rnn_nonfinite_and_remote_seeds(tmp_path):
    """Issue 23's seeds: a wrong shape or a non-finite weight is a one-line refusal or a finding, never an internal
    error or a numpy warning; a lying server is a one-line error in bounded time."""
    result = _campaign(tmp_path, "--seed", str(SEED), "--cases", str(CLASS_CASES), "--cases-for", f"remote={REMOTE_CASES}",
                       "--no-save", "--formats", "rnn,nonfinite,remote", "--commands", "stats,verify,diff", "--remote-commands", "ls",
                       "--max-seconds", "60", timeout=300,
                       env={"CKPTSURGEON_READ_TIMEOUT": "0.5", "CKPTSURGEON_CONNECT_TIMEOUT": "0.5"})
    assert result["mutants"] == {"rnn": CLASS_CASES, "nonfinite": CLASS_CASES, "remote": REMOTE_CASES}
    assert result["executions_by_command"]["verify"] == 2 * CLASS_CASES
    assert result["remote_modes"]["silent"] == 1 and result["remote_modes"]["oversized"] == 1
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)


def test_saved_reproducers_stay_fixed(tmp_path):
    result = _campaign(tmp_path, "--replay", timeout=900)
    assert result["reproducers"] > 0 and result["total_executions"] >= result["reproducers"]
    assert not result["failures"], json.dumps(result["failures"][:5], indent=1)
