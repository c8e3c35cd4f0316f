"""PaddlePaddle `paddle.jit.save` pairs (PREFIX.json program + PREFIX.pdiparams combined parameters), written by the
real paddle 3 (fixtures/paddle/jit, recorded by make_paddle_jit_fixtures.py): read as paddle reads them back, lazily
(record headers only), each tensor a byte range of the parameter file; pairs that do not match are refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.errors import FormatError, UnsafeCheckpointError
from ckptsurgeon.formats import detect
from conftest import FIXTURES

JIT = FIXTURES / "paddle" / "jit"


def _expected() -> tuple[list[str], dict[str, np.ndarray]]:
    names = json.loads((JIT / "model.expected.json").read_text())["names"]
    with np.load(JIT / "model.expected.npz") as z:
        return names, {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", ["model.pdiparams", "model.json"])
def test_reads_what_paddle_reads_back(name):
    path = JIT / name
    assert detect(str(path)) == "paddle-inference"
    index = ckptsurgeon.open(path)
    names, arrays = _expected()
    assert [r.key for r in index.values()] == names and len(names) == 25  # paddle's order: sorted names
    assert list(index.files) == [str(JIT / "model.pdiparams"), str(JIT / "model.json")]
    dtypes = set()
    for ref in index.values():
        got, want = ref.numpy(), arrays[ref.key]
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), ref.key
        dtypes.add(got.dtype.name)
    assert dtypes == {"float32", "float16", "int64"}
    assert index["batch_norm1d_0/w_1"].numpy().tolist() == [0.25, -0.5]  # the running mean the model was given


def test_each_tensor_is_a_byte_range_of_the_parameter_file():
    data = (JIT / "model.pdiparams").read_bytes()
    _, arrays = _expected()
    index = ckptsurgeon.open(JIT / "model.pdiparams")
    for ref in index.values():
        assert ref.loader is None and data[ref.offset:ref.offset + ref.nbytes] == arrays[ref.key].tobytes()
    last = max(index.values(), key=lambda r: r.offset)
    assert last.offset + last.nbytes == len(data)


def _pair(tmp_path: Path, params: bytes | None = None, program: str | None = None) -> Path:
    (tmp_path / "model.pdiparams").write_bytes((JIT / "model.pdiparams").read_bytes() if params is None else params)
    (tmp_path / "model.json").write_text((JIT / "model.json").read_text() if program is None else program)
    return tmp_path / "model.pdiparams"


def test_a_pair_that_does_not_match_is_refused(tmp_path):
    data = (JIT / "model.pdiparams").read_bytes()
    with pytest.raises(FormatError, match="record 24's data at byte 3,438 declares 256 bytes, 251 are left"):
        ckptsurgeon.open(_pair(tmp_path, params=data[:-5]))
    with pytest.raises(UnsafeCheckpointError, match="bytes follow"):
        ckptsurgeon.open(_pair(tmp_path, params=data + b"\0" * 8))
    program = (JIT / "model.json").read_text()
    op = program.index('"linear_0.w_0"]')  # its parameter op declares [8,2]: say [2,8]
    dims = program.index("[8,2]", op)
    with pytest.raises(FormatError, match=r"'linear_0.w_0' is float32 \[8, 2\] in the parameters, but the program"):
        ckptsurgeon.open(_pair(tmp_path, program=program[:dims] + "[2,8]" + program[dims + 5:]))


def test_the_program_is_required_and_named(tmp_path):
    shutil.copy(JIT / "model.pdiparams", tmp_path / "model.pdiparams")
    with pytest.raises(FormatError, match=r"its names are in its program .*model\.json, which is missing"):
        ckptsurgeon.open(tmp_path / "model.pdiparams")
    (tmp_path / "model.pdmodel").write_bytes(b"\n\x02\x08\x00")  # paddle 2's protobuf program
    with pytest.raises(FormatError, match="paddle 2's protobuf program"):
        ckptsurgeon.open(tmp_path / "model.pdiparams")
    shutil.copy(JIT / "model.json", tmp_path / "alone.json")
    with pytest.raises(FormatError, match="alone.pdiparams are missing"):
        ckptsurgeon.open(tmp_path / "alone.json")


def test_cli_ls_extract_scan(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["ls", str(JIT / "model.json")])
    assert res.exit_code == 0 and "lstm_cell_3/w_0" in res.output and "(paddle-inference)" in res.output
    out = tmp_path / "cell.safetensors"
    res = runner.invoke(cli, ["extract", str(JIT / "model.pdiparams"), "-s", "lstm_cell_0/*", "-o", str(out)])
    assert res.exit_code == 0, res.output
    from safetensors.numpy import load_file

    _, arrays = _expected()
    got = load_file(str(out))
    assert sorted(got) == ["lstm_cell_0.b_0", "lstm_cell_0.b_1", "lstm_cell_0.w_0", "lstm_cell_0.w_1"]
    assert all(v.tobytes() == arrays[k].tobytes() for k, v in got.items())
    res = runner.invoke(cli, ["scan", str(JIT / "model.pdiparams")])
    assert res.exit_code == 0 and "clean" in res.output


def test_a_record_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    """A header whose dims say 2**40 floats (and a program that agrees): refused from the header, nothing allocated."""
    import struct

    desc = b"\x08\x05\x10\x80\x80\x80\x80\x80\x20"  # data type 5 (float32), dims [2**40]
    record = struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + b"\0" * 64
    program = (JIT / "model.json").read_text()
    op = program.index('"batch_norm1d_0.b_0"]')  # the first name in sorted order: declare it [2**40] too
    dims = program.index("[2]", op)
    path = _pair(tmp_path, params=record, program=program[:dims] + f"[{2**40}]" + program[dims + 3:])
    assert detect(str(path)) == "paddle-inference"
    with pytest.raises(FormatError, match="record 0's data at byte 29 declares 4,398,046,511,104 bytes, 64 are left"):
        ckptsurgeon.open(path)
