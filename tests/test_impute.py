"""Missing values: `preprocess impute(...)` fitted on the training split as scikit-learn's
`SimpleImputer` (checked against it when it is installed, else against a NumPy statement
of its definition), empty CSV cells read as missing where an impute covers them and
refused at their cell where none does, and the imputation folded into model.onnx, which
takes raw rows with NaN and predicts as `dnnspec predict` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from dnnspec import api
from dnnspec.cli import main
from dnnspec.errors import DiagnosticError
from dnnspec.runtime.prepare import prepare

SPEC = """model m {{
  input x: float32[N, {width}]
  dense(8) -> relu
  dense(2)
}}
train {{
  data file(path = "{path}"{args}, validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.02)
  batch 16
  epochs {epochs}
  metrics accuracy
  preprocess {steps}
}}
"""


def write_spec(
    tmp_path: Path, steps: str, width: int = 3, csv: bool = False, epochs: int = 1
) -> Path:
    """The spec over d.npz, or d.csv without its id column."""
    path, args = ("d.csv", ', exclude = ["id"]') if csv else ("d.npz", "")
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC.format(steps=steps, width=width, path=path, args=args, epochs=epochs))
    return spec


def gappy(rows: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three features with gaps (none in the last), whole numbers in the second so that
    most_frequent has ties to break; the class is the sign of the first two's sum."""
    rng = np.random.default_rng(seed)
    x = np.stack(
        [rng.normal(5, 2, rows), rng.integers(0, 4, rows).astype(float), rng.normal(size=rows)],
        axis=1,
    )
    y = (x[:, 0] - 5 + x[:, 1] - 1.5 > 0).astype(np.int64)
    x[rng.random(rows) < 0.2, 0] = np.nan
    x[rng.random(rows) < 0.3, 1] = np.nan
    return x, y


def simple_imputer(
    train: np.ndarray, x: np.ndarray, strategy: str, fill: float, indicator: bool
) -> np.ndarray:
    """scikit-learn's SimpleImputer fitted on `train`, applied to `x`; without scikit-learn,
    its definition: each column's statistic over its present values (most_frequent: the
    smallest of the most frequent), NaN replaced by it, and with `indicator` a 0/1 column
    per column that had a gap in `train`, appended in column order."""
    try:
        from sklearn.impute import SimpleImputer
    except ImportError:
        pass
    else:
        imputer = SimpleImputer(strategy=strategy, fill_value=fill, add_indicator=indicator)
        out: np.ndarray = imputer.fit(train).transform(x)
        return out
    columns = []
    for c in range(train.shape[1]):
        present = train[~np.isnan(train[:, c]), c]
        if strategy == "mean":
            columns.append(present.mean())
        elif strategy == "median":
            columns.append(np.median(present))
        elif strategy == "most_frequent":
            values, counts = np.unique(present, return_counts=True)
            columns.append(values[counts == counts.max()].min())
        else:
            columns.append(fill)
    filled = np.where(np.isnan(x), np.array(columns), x)
    if not indicator:
        return filled
    gaps = np.isnan(train).any(axis=0)
    return np.concatenate([filled, np.isnan(x[:, gaps]).astype(float)], axis=1)


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
@pytest.mark.parametrize("indicator", [False, True])
def test_impute_matches_simple_imputer_fitted_on_the_training_split(
    tmp_path: Path, strategy: str, indicator: bool
) -> None:
    x, y = gappy()
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    fill = ", fill = -1.5" if strategy == "constant" else ""
    step = f"impute(strategy = {strategy}{fill}, add_indicator = {str(indicator).lower()})"
    prepared = prepare(api.load_spec(write_spec(tmp_path, step, width=5 if indicator else 3)))
    raw = x.astype(np.float32).astype(np.float64)
    train, val = raw[prepared.train_index], raw[prepared.val_index]
    expected = simple_imputer(train, val, strategy, -1.5, indicator)
    np.testing.assert_allclose(prepared.val_data.x, expected, rtol=1e-6)
    assert not np.isnan(prepared.train_data.x).any()


def test_impute_comes_before_scaling_and_names_its_indicators(tmp_path: Path) -> None:
    x, y = gappy()
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    steps = "standardize, impute(strategy = median, columns = [0], add_indicator = true)"
    with pytest.raises(DiagnosticError) as info:  # column 1 has gaps no impute fills
        prepare(api.load_spec(write_spec(tmp_path, steps, width=4)))
    assert "sample" in info.value.diagnostics[0].message
    steps = "standardize, impute(strategy = median, add_indicator = true)"
    prepared = prepare(api.load_spec(write_spec(tmp_path, steps, width=5)))
    scaled = prepared.train_data.x[:, :3]
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-5)  # fitted on the imputed values
    expects = prepared.program.metadata.expects
    assert expects is not None
    assert expects.features == ["0", "1", "2", "missingindicator_0", "missingindicator_1"]
    assert [s.step for s in expects.columns[0].steps] == ["impute", "standardize"]


def test_a_wrong_width_counts_the_missing_indicators(tmp_path: Path) -> None:
    x, y = gappy()
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(write_spec(tmp_path, "impute(add_indicator = true)")))
    message = info.value.diagnostics[0].message
    assert "after impute(add_indicator = true) the 3 raw columns are 5 features" in message
    assert "2 missing indicators" in message


def write_csv(tmp_path: Path, rows: int = 160) -> Path:
    """A CSV with an id column, empty cells in two numeric columns and a class word."""
    rng = np.random.default_rng(1)
    lines = ["id,weight,height,label"]
    for i in range(rows):
        weight, height = rng.normal(70, 10), rng.normal(170, 8)
        label = "yes" if (weight - 70) / 10 + (height - 170) / 8 > 0 else "no"
        cells = [f"{weight:.1f}", f"{height:.1f}"]
        if rng.random() < 0.2:
            cells[0] = ""
        if rng.random() < 0.1:
            cells[1] = ""
        lines.append(",".join([str(i), *cells, label]))
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_empty_cell_without_impute_names_the_cell_and_suggests_impute(tmp_path: Path) -> None:
    write_csv(tmp_path)
    spec = write_spec(tmp_path, "standardize", width=2, csv=True)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(spec))
    diagnostic = info.value.diagnostics[0]
    assert (
        "d.csv' line" in diagnostic.message and "column 2 (weight) is empty" in diagnostic.message
    )
    assert 'preprocess impute(columns = ["weight"])' in (diagnostic.help or "")
    assert diagnostic.span is not None and diagnostic.span.line == 7
    # an impute of the other column only still names the first gap it leaves
    spec = write_spec(tmp_path, 'impute(columns = ["height"])', width=2, csv=True)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(spec))
    assert "(weight) is empty" in info.value.diagnostics[0].message


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("impute(columns = [0, 0])", "column '0' is listed twice"),
        ("impute(strategy = average)", "average"),
        ("impute(columns = [7])", "column 7 is outside the 3 features"),
        ("impute(strategy = mean, fill = 5)", "`fill` is used only by strategy = constant"),
    ],
)
def test_bad_impute_steps_are_located_errors(tmp_path: Path, steps: str, message: str) -> None:
    x, y = gappy()
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(write_spec(tmp_path, steps)))
    assert message in info.value.diagnostics[0].message


def test_a_column_without_values_in_training_cannot_be_imputed(tmp_path: Path) -> None:
    x, y = gappy()
    x[:, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(write_spec(tmp_path, "impute(strategy = median)")))
    assert "column 2 has no values on the training split" in info.value.diagnostics[0].message
    prepare(api.load_spec(write_spec(tmp_path, "impute(strategy = constant)")))


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


def test_model_onnx_imputes_raw_rows_with_nan_as_dnnspec_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path)
    steps = "impute(strategy = median, add_indicator = true), standardize"
    spec = write_spec(tmp_path, steps, width=4, csv=True, epochs=20)
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    model = onnx.load(tmp_path / "run" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    expects = json.loads(meta["dnnspec.expects"])
    assert expects["features"] == [
        "weight", "height", "missingindicator_weight", "missingindicator_height",
    ]  # fmt: skip
    assert expects["columns"][0]["steps"][0]["strategy"] == "median"
    assert json.loads(meta["dnnspec.inputs"])[0]["shape"] == ["N", 2]

    assert main(["predict", str(tmp_path / "run"), str(csv), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    lines = csv.read_text().splitlines()[1:]
    raw = np.array(
        [[float(c) if c else np.nan for c in line.split(",")[1:3]] for line in lines], np.float32
    )
    assert np.isnan(raw).any(axis=0).all()
    ours = _ort(model, raw)
    np.testing.assert_allclose(predicted["predictions"], ours, rtol=1e-6)
    reference: Any = ReferenceEvaluator(model).run(None, {"x": raw})
    np.testing.assert_allclose(reference[0], ours, rtol=1e-4, atol=1e-5)
    truth = [line.split(",")[-1] for line in lines]
    assert np.mean(np.array(predicted["labels"]) == np.array(truth)) >= 0.8
    # Model.predict on the raw rows agrees, and a row of gaps alone is imputed, not NaN
    again = api.load(tmp_path / "run").predict(raw)
    assert isinstance(again, np.ndarray)
    np.testing.assert_allclose(again, ours, rtol=1e-6)
    assert np.isfinite(_ort(model, np.full((1, 2), np.nan, np.float32))).all()
    # eval of a file with gaps imputes them as training did
    assert api.load(tmp_path / "run").evaluate(csv)["accuracy"] >= 0.8


def write_colors(tmp_path: Path) -> None:
    """A column of words, a column of codes with gaps, and a value column with gaps."""
    rng = np.random.default_rng(2)
    lines = ["color,size,b,label"]
    for i in range(80):
        size = "" if i % 7 == 0 else str(1 + i % 3)
        b = "" if i % 5 == 0 else f"{rng.normal():.3f}"
        lines.append(f"{['red', 'blue'][i % 2]},{size},{b},{'yes' if i % 3 else 'no'}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")


def test_imputed_codes_are_one_hot_encoded_and_words_are_not_imputed(tmp_path: Path) -> None:
    write_colors(tmp_path)
    steps = 'impute(strategy = most_frequent), one_hot(columns = ["color", "size"])'
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC.format(steps=steps, width=6, path="d.csv", args="", epochs=1))
    prepared = prepare(api.load_spec(spec))
    preprocessing = prepared.program.preprocess
    assert preprocessing is not None
    (fill,) = preprocessing.impute
    assert fill.columns == (1, 2)  # the column of words is left to one_hot
    assert [s.categories for s in preprocessing.one_hot] == [("blue", "red"), ("1", "2", "3")]
    assert not np.isnan(prepared.train_data.x).any()
    np.testing.assert_array_equal(prepared.train_data.x[:, 2:5].sum(1), 1)  # a size each
    steps = 'impute(columns = ["color"]), one_hot(columns = ["color"])'
    spec.write_text(SPEC.format(steps=steps, width=4, path="d.csv", args="", epochs=1))
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(spec))
    assert "column 'color' holds words; impute fills columns of numbers" in (
        info.value.diagnostics[0].message
    )


def test_nan_in_an_npz_without_impute_suggests_it(tmp_path: Path) -> None:
    x, y = gappy()
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(write_spec(tmp_path, "standardize")))
    diagnostic = info.value.diagnostics[0]
    assert "the inputs contain nan at sample" in diagnostic.message
    assert "preprocess impute" in (diagnostic.help or "")
