"""Issue 23's recurrent seeds, each as made, through the commands that compute with recurrent groups.

``tests/fuzz/seeds/rnn/``: LSTM/GRU groups whose tensors do not fit their layout (a weight_ih_l0 one row short, a
bias one too long, rank-3 kernels, Keras .h5/.keras and TensorFlow bundle groups with mismatched shapes). Either
recognition does not claim the tensors (``stats`` lists them as plain tensors, ``verify`` finds no group), or the
group is refused in one ``error:`` line naming the shape expected; nothing is an internal error.

``tests/fuzz/seeds/nonfinite/``: groups holding inf, nan, 1e38 and 3.4e38. ``stats``, ``verify``, ``diff`` and
``validate --check-finite`` answer without a single RuntimeWarning (numpy's, on stderr), and ``validate
--check-finite`` reports the non-finite values as findings.

The seeds are made by ``tests/fuzz/make_rnn_seeds.py``; the fuzzer mutates them too (``tests/fuzz/campaign.py``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from ckptsurgeon.cli import cli

from fuzz.seeds import class_seeds

SEEDS = [s for s in class_seeds() if s.fmt in ("rnn", "nonfinite")]


def _write(seed, folder: Path) -> str:
    for name, data in seed.files.items():
        (folder / name).write_bytes(data)
    return str(folder / seed.target) if seed.target else str(folder)


def _run(*args: str):
    """The CLI in process; every warning recorded (not shown once per place, as by default)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exc_info
    stray = [f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in caught
             if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]  # hidden from users
    assert not stray, (args, stray)
    assert "internal error" not in result.stderr, (args, result.stderr)
    return result


@pytest.mark.parametrize("seed", [s for s in SEEDS if s.fmt == "rnn"], ids=lambda s: f"{s.kind}-{s.name}")
def test_a_group_that_does_not_fit_its_layout_is_refused_in_one_line(seed, tmp_path):
    path = _write(seed, tmp_path)
    assert _run("rnn", path).exit_code in (0, 1)  # listing the group is fine; so is refusing it
    for args in (("stats", path), ("verify", path, path)):
        result = _run(*args)
        lines = result.stderr.strip().splitlines()
        if result.exit_code == 0 and args[0] == "stats":  # not claimed as a group: plain tensors
            assert not lines, result.stderr
            continue
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert any(w in lines[0] for w in ("expected", "does not", "no recurrent group")), (args, lines[0])
    assert _run("diff", path, path).exit_code in (0, 1)


@pytest.mark.parametrize("seed", [s for s in SEEDS if s.fmt == "nonfinite"], ids=lambda s: f"{s.kind}-{s.name}")
def test_non_finite_weights_are_findings_never_warnings(seed, tmp_path):
    path = _write(seed, tmp_path)
    for args in (("stats", "--json", path), ("verify", path, path), ("diff", path, path)):
        result = _run(*args)
        assert result.exit_code in (0, 1) and not result.stderr.strip(), (args, result.stderr)
    result = _run("validate", path, "--like", path, "--check-finite")
    if "1e38" in seed.name:  # huge but finite
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1 and "nonfinite" in result.output, result.output


ISSUE23 = Path(__file__).resolve().parent / "reproducers" / "issue23"


@pytest.mark.parametrize("name", sorted(p.name for p in ISSUE23.iterdir()))
def test_issue23_reproducers(name):
    """``tests/reproducers/issue23/`` (see its README): each command answers in one line or a report, no warning."""
    path = str(ISSUE23 / name)
    for args in (("stats", path), ("verify", path, path), ("diff", path, path),
                 ("validate", path, "--like", path, "--check-finite")):
        result = _run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code in (0, 1) and len(lines) <= 1, (args, result.stderr)
        assert not lines or lines[0].startswith("error: "), (args, result.stderr)
    if name == "keras2-gru-bias-3-rows.h5":  # not a reset-after bias with a row to spare
        assert _run("verify", path, path).exit_code == 1
