"""`dnnspec check` prepares the data as `train` does: data that `train` would refuse is
reported after the report with `train`'s own diagnostic, and `check` exits 2 (it used to
print "input columns: not computed" and exit 0); a data file that does not exist yet is
not read, so a spec is still checked before its data is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnnspec import api
from dnnspec.cli import main
from dnnspec.errors import DiagnosticError

SPEC = """model m {{
  input x: float32[N, {width}]
  dense(8) -> relu
  dense(2)
}}
train {{
  data file(path = "{path}", target = "label")
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 8
  epochs 1{preprocess}
}}
"""

ROWS = "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(20))


def write(tmp_path: Path, width: int = 2, preprocess: str = "", gap: bool = False) -> Path:
    rows = ROWS.replace("4,1,no", "4,,no") if gap else ROWS
    (tmp_path / "d.csv").write_text("a,b,label\n" + rows)
    spec = tmp_path / "m.dnn"
    extra = f"\n  preprocess {preprocess}" if preprocess else ""
    spec.write_text(SPEC.format(width=width, path="d.csv", preprocess=extra))
    return spec


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_check_exits_2_on_data_train_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "check", str(write(tmp_path, gap=True)))
    assert code == 2
    assert "model m" in out  # the report is printed first
    assert "d.csv' line 6, column 2 (b) is empty" in err
    assert "m.dnn:7:" in err and "impute" in err


def test_check_exits_2_when_the_input_columns_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, width=2, preprocess="impute(add_indicator = true)", gap=True)
    code, out, err = run(capsys, "check", str(spec))
    assert code == 2
    assert "input columns not computed: input 'x' is declared [N, 2]" in " ".join(out.split())
    assert "3 features" in err and "declare `input x: float32[N, 3]`" in err
    code, out, _ = run(capsys, "check", str(spec), "--json")  # one JSON document: the error
    assert code == 2
    (diagnostic,) = json.loads(out)
    assert "input 'x' is declared [N, 2]" in diagnostic["message"]


def test_check_of_data_train_accepts_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, width=3, preprocess="impute(add_indicator = true)", gap=True)
    code, out, err = run(capsys, "check", str(spec))
    assert code == 0, err
    assert "-> 3 features of input x: a, b, missingindicator_b" in " ".join(out.split())


def test_check_before_the_data_exists_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, gap=True)
    (tmp_path / "d.csv").unlink()
    code, out, _ = run(capsys, "check", str(spec))
    assert code == 0 and "model m" in out


def test_check_data_raises_what_train_raises(tmp_path: Path) -> None:
    spec = write(tmp_path, gap=True)
    with pytest.raises(DiagnosticError) as checked:
        api.check_data(spec)
    with pytest.raises(DiagnosticError) as trained:
        api.train(spec, out=tmp_path / "run")
    assert checked.value.diagnostics[0].message == trained.value.diagnostics[0].message
    assert api.check_data(write(tmp_path)) is None  # accepted, no preprocessing
