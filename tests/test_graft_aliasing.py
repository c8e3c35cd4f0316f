"""graft's shared-storage guard: every template tensor that a replacement would change through shared
storage is found (views, transposes, strided views, tied weights; every overlap, not only neighbours),
refused by default, and reported when allowed (issue 10, item 8). Templates are real torch.save files."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import ckptsurgeon
from ckptsurgeon.cli import cli
from ckptsurgeon.formats.patch import aliased, patch_copy

torch = pytest.importorskip("torch")


def _source(tmp_path, **tensors):
    path = tmp_path / "src.safetensors"
    ckptsurgeon.save({k: np.asarray(v, np.float32) for k, v in tensors.items()}, path, force=True)
    return path


def test_whole_row1_row3_replacing_row3_is_refused_naming_whole(tmp_path):
    torch.manual_seed(0)
    t = torch.randn(4, 3)
    template = tmp_path / "tpl.pt"
    torch.save({"whole": t, "row1": t[1], "row3": t[3]}, template)
    new = np.array([7.0, 8.0, 9.0], np.float32)
    src = _source(tmp_path, row3=new)
    with pytest.raises(ckptsurgeon.SelectionError) as err:
        ckptsurgeon.graft(src, template, tmp_path / "out.pt", map=["row3=row3"])
    msg = str(err.value)
    assert "would also change template tensor 'whole'" in msg and "'row1'" not in msg and "\n" not in msg
    assert not (tmp_path / "out.pt").exists()
    res = CliRunner().invoke(cli, ["graft", str(src), "--into", str(template), "--map", "row3=row3", "--dry-run"])
    assert res.exit_code == 1 and "'whole'" in res.output and "--allow-aliased" in res.output

    report = ckptsurgeon.graft(src, template, tmp_path / "out.pt", map=["row3=row3"], allow_aliased=True)
    assert report.aliased == [{"path": "whole", "shares_with": ["row3"]}]
    assert "whole" not in report.untouched and "row1" in report.untouched
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    np.testing.assert_array_equal(got["row3"].numpy(), new)
    np.testing.assert_array_equal(got["whole"][3].numpy(), new)  # what torch really loads: whole changed
    assert torch.equal(got["row1"], t[1]) and torch.equal(got["whole"][:3], t[:3])
    res = CliRunner().invoke(cli, ["graft", str(src), "--into", str(template), "--map", "row3=row3", "--allow-aliased",
                                   "-o", str(tmp_path / "cli.pt")])
    assert res.exit_code == 0 and "aliased whole changes too (shares storage with row3)" in res.output
    assert "1 replaced, 1 changed through shared storage, 1 template tensors untouched" in res.output


def test_transposes_and_strided_views_only_those_whose_bytes_change(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(8)
    m = torch.randn(2, 4)
    template = tmp_path / "tpl.pt"
    # x[2:3] lies inside the span of x[1::2] but shares none of its bytes; x[::2] holds it.
    torch.save({"x": x, "odd": x[1::2], "even": x[::2], "two": x[2:3], "m": m, "mt": m.t(), "cols": m[:, 1::2],
                "other": torch.randn(3)}, template)
    index = ckptsurgeon.open(template)
    assert index["odd"].stride is not None and index["mt"].stride is not None  # real views in the file
    found = {a.path: (a.shares_with, a.changes) for a in aliased(index, {"two": np.array([5.0], np.float32)})}
    assert found == {"x": (("two",), True), "even": (("two",), True), "odd": (("two",), False)}
    with pytest.raises(ckptsurgeon.OutputError) as err:
        patch_copy(index, str(tmp_path / "o.pt"), {"two": np.array([5.0], np.float32)})
    assert "'x'" in str(err.value) and "'even'" in str(err.value) and "'odd'" not in str(err.value)

    src = _source(tmp_path, two=[5.0])
    report = ckptsurgeon.graft(src, template, tmp_path / "o.pt", map=["two=two"], allow_aliased=True)
    assert sorted(a["path"] for a in report.aliased) == ["even", "x"] and "odd" in report.untouched
    got = torch.load(tmp_path / "o.pt", weights_only=True)
    assert got["x"][2] == 5.0 and got["even"][1] == 5.0 and torch.equal(got["odd"], x[1::2])

    new_m = np.arange(8, dtype=np.float32).reshape(2, 4)
    src = _source(tmp_path, m=new_m)
    with pytest.raises(ckptsurgeon.SelectionError) as err:
        ckptsurgeon.graft(src, template, tmp_path / "m.pt", map=["m=m"])
    assert "'mt'" in str(err.value) and "'cols'" in str(err.value) and "'x'" not in str(err.value)
    report = ckptsurgeon.graft(src, template, tmp_path / "m.pt", map=["m=m"], allow_aliased=True)
    assert sorted(a["path"] for a in report.aliased) == ["cols", "mt"]
    got = torch.load(tmp_path / "m.pt", weights_only=True)
    np.testing.assert_array_equal(got["mt"].numpy(), new_m.T)
    np.testing.assert_array_equal(got["cols"].numpy(), new_m[:, 1::2])


def test_tied_weights_and_overlapping_replacements(tmp_path):
    torch.manual_seed(2)
    t = torch.randn(4, 3)
    template = tmp_path / "tpl.pt"
    torch.save({"embed": t, "tied": t, "whole": t, "row1": t[1], "row3": t[3]}, template)
    new = np.full((4, 3), 2.0, np.float32)
    src = _source(tmp_path, embed=new, row3=[1.0, 1.0, 1.0], row3same=new[3])
    with pytest.raises(ckptsurgeon.SelectionError) as err:  # tied weights: every alias named, not only neighbours
        ckptsurgeon.graft(src, template, tmp_path / "o.pt", map=["embed=embed"])
    for name in ("tied", "whole", "row1", "row3"):
        assert f"template tensor {name!r}" in str(err.value)
    # two replacements of one storage that disagree: refused even when aliasing is allowed
    with pytest.raises(ckptsurgeon.OutputError, match="disagree"):
        ckptsurgeon.graft(src, template, tmp_path / "o.pt", map=["embed=embed", "row3=row3"], allow_aliased=True)
    # ... and that agree: fine, the other views are reported
    report = ckptsurgeon.graft(src, template, tmp_path / "o.pt", map=["embed=embed", "row3same=row3"], allow_aliased=True)
    assert sorted(a["path"] for a in report.aliased) == ["row1", "tied", "whole"]
    got = torch.load(tmp_path / "o.pt", weights_only=True)
    assert all(torch.equal(got[k], torch.tensor(new)) for k in ("embed", "tied", "whole"))


def test_unrelated_tensors_are_not_aliases(tmp_path):
    torch.manual_seed(3)
    template = tmp_path / "tpl.pt"
    state = {"a": torch.randn(3), "b": torch.randn(2, 2), "c": torch.randn(5)}
    torch.save(state, template)
    src = _source(tmp_path, b=np.eye(2))
    report = ckptsurgeon.graft(src, template, tmp_path / "o.pt", map=["b=b"])
    assert report.aliased == [] and sorted(report.untouched) == ["a", "c"]
    got = torch.load(tmp_path / "o.pt", weights_only=True)
    assert torch.equal(got["a"], state["a"]) and torch.equal(got["b"], torch.eye(2))
