"""CSV data as users have it: the target column by name or index, feature columns by name,
a header the user can force on or off, string class labels mapped to ids whose names reach
model.onnx (and predict), and NaN reported at its CSV line and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import IRIS_CSV as CSV

from dnnspec import api
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text

SPEC = """model m {{
  input x: float32[N, {features}]
  dense(16) -> relu
  dense({width})
}}
train {{
  data file(path = "{path}"{args})
  loss {loss}
  optimizer adam(lr = 0.05)
  batch 16
  epochs 2
}}
"""


def load(tmp_path: Path, args: str, text: str = CSV) -> tuple[np.ndarray, np.ndarray, object]:
    (tmp_path / "d.csv").write_text(text)
    spec = load_spec_text(
        SPEC.format(features=2, width=3, path="d.csv", args=args, loss="cross_entropy"),
        str(tmp_path / "m.dnn"),
    )
    assert spec.train is not None
    data = DATASETS.get("file").load(spec.train.data.args, 0, spec.train.data.span)
    return data.x, data.y, data.labels


def test_target_by_name_with_string_labels_and_features_by_name(tmp_path: Path) -> None:
    x, y, labels = load(tmp_path, ', target = "species", features = ["sepal", "petal"]')
    assert labels == ("setosa", "versicolor", "virginica")
    assert y.tolist() == [0, 0, 2, 2, 1, 1]
    assert x[:, 1].tolist() == [0.5, 0.4, 2.5, 2.4, 1.5, 1.4]


def test_target_by_index_and_the_other_columns_as_features(tmp_path: Path) -> None:
    x, y, labels = load(tmp_path, ", target = 3, features = [0, 1]")
    assert labels is None and y.tolist() == [3, 3.5, 5, 5.5, 4, 4.2]


def test_header_false_reads_the_first_row_as_data(tmp_path: Path) -> None:
    x, y, _ = load(tmp_path, ", header = false", "1,2,0\n3,4,1\n")
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (', target = "specie"', "has no column 'specie'"),
        (", target = 9", "column index 9 is outside 0..3"),
        (', features = ["species"], target = "species"', "also listed among the features"),
    ],
)
def test_bad_column_choices_are_located_errors(tmp_path: Path, args: str, message: str) -> None:
    with pytest.raises(DiagnosticError) as info:
        load(tmp_path, args)
    diagnostic = info.value.diagnostics[0]
    assert message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 7


def test_a_missing_column_name_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError) as info:
        load(tmp_path, ', target = "specie"')
    assert "species" in (info.value.diagnostics[0].help or "")


def test_nan_is_reported_at_its_csv_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError) as info:
        load(tmp_path, "", "a,b,y\n1,2,0\n3,nan,1\n")
    assert "line 3, column 2 (b) holds 'nan'" in info.value.diagnostics[0].message


def test_class_names_reach_model_onnx_and_predict(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(CSV)
    spec = tmp_path / "m.dnn"
    spec.write_text(
        SPEC.format(
            features=2,
            width=3,
            path="d.csv",
            args=', target = "species", features = ["sepal", "petal"], validation = 0',
            loss="cross_entropy",
        )
    )
    api.train(spec, out=tmp_path / "run")
    model = api.load(tmp_path / "run")
    assert model.labels == ["setosa", "versicolor", "virginica"]
    meta = {p.key: p.value for p in model.onnx.metadata_props}
    assert json.loads(meta["dnnspec.class_labels"]) == model.labels
    rows = (tmp_path / "run" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "true \\ predicted,setosa,versicolor,virginica"


def test_check_of_a_csv_file_spec_lists_no_npz_arguments(tmp_path: Path) -> None:
    from dnnspec.check.report import _train_rows

    (tmp_path / "d.csv").write_text(CSV)
    spec = load_spec_text(
        SPEC.format(features=3, width=1, path="d.csv", args="", loss="mse"), str(tmp_path / "m.dnn")
    )
    data_row = dict(_train_rows(api.check_spec(spec)))["data"]
    assert "x = " not in data_row and "y = " not in data_row
    assert "target = -1" in data_row


def test_exclude_leaves_an_id_column_out_of_the_inputs(tmp_path: Path) -> None:
    text = "id,sepal,petal,species\n" + "".join(
        f"{i},{row}\n" for i, row in enumerate(["1.0,0.5,setosa", "3.0,2.5,virginica"])
    )
    x, _, labels = load(tmp_path, ', target = "species", exclude = ["id"]', text)
    np.testing.assert_array_equal(x, [[1.0, 0.5], [3.0, 2.5]])
    assert labels == ("setosa", "virginica")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (', features = ["sepal"], exclude = ["petal"]', "give one of them"),
        (', target = "species", exclude = ["species"]', "exclude lists the target column"),
        (', exclude = ["sepal", 0]', "exclude lists column 'sepal' twice"),
        (', exclude = ["sepl"]', "has no column 'sepl'"),
    ],
)
def test_bad_exclude_choices_are_located_errors(tmp_path: Path, args: str, message: str) -> None:
    with pytest.raises(DiagnosticError) as info:
        load(tmp_path, args)
    diagnostic = info.value.diagnostics[0]
    assert message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 7


def test_a_header_naming_a_column_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    text = "sepal,petal,sepal,species\n1.0,0.5,7,setosa\n3.0,2.5,8,virginica\n"
    with pytest.raises(DiagnosticError) as info:
        load(tmp_path, ', target = "species", features = ["sepal", "petal"]', text)
    assert "two columns named 'sepal' (columns 1 and 3)" in info.value.diagnostics[0].message


def test_a_prediction_header_of_other_names_lists_the_columns_expected_and_found(
    tmp_path: Path,
) -> None:
    (tmp_path / "d.csv").write_text(CSV)
    spec = tmp_path / "m.dnn"
    args = ', target = "species", features = ["sepal", "petal"], validation = 0'
    spec.write_text(SPEC.format(features=2, width=3, path="d.csv", args=args, loss="cross_entropy"))
    api.train(spec, out=tmp_path / "run")
    model = api.load(tmp_path / "run")
    (tmp_path / "p.csv").write_text("sepal_length,petal_length\n1.0,0.5\n")
    with pytest.raises(DiagnosticError) as info:
        model.predict(tmp_path / "p.csv")
    diagnostic = info.value.diagnostics[0]
    assert "names none of the columns the model reads" in diagnostic.message
    assert "reads the columns sepal, petal; the file has sepal_length, petal_length" in (
        diagnostic.help or ""
    )
    (tmp_path / "twice.csv").write_text("sepal,petal,sepal\n1.0,0.5,2\n")
    with pytest.raises(DiagnosticError, match="two columns named 'sepal'"):
        model.predict(tmp_path / "twice.csv")
    (tmp_path / "plain.csv").write_text("1.0,0.5\n")  # no header: read by position
    assert np.asarray(model.predict(tmp_path / "plain.csv")).shape == (1, 3)
