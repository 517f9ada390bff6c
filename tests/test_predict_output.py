"""`dnnspec predict` as people use it: class names and probabilities on request (`--proba`,
a CSV `class,p_<name>...` with a header), a CSV that still holds the target column (read by
the column names the run records, or `--drop-target` for rows without a header), and an
error that names the target column when the width is off by it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import IRIS_CSV as CSV

from dnnspec.cli import main
from dnnspec.training.losses import LOSSES, sigmoid, softmax

SPEC = """model m {{
  input x: float32[N, 2]
  dense(16) -> relu
  dense({width})
}}
train {{
  data file(path = "d.csv", target = "{target}", features = ["sepal", "petal"], validation = 0)
  loss {loss}
  optimizer adam(lr = 0.05)
  batch 6
  epochs 30
}}
"""


def train(tmp_path: Path, target: str, loss: str, width: int) -> Path:
    (tmp_path / "d.csv").write_text(CSV)
    spec = tmp_path / f"{target}.dnn"
    spec.write_text(SPEC.format(target=target, loss=loss, width=width))
    run = tmp_path / f"run-{target}"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    return run


@pytest.fixture
def classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    run = train(tmp_path, "species", "cross_entropy", 3)
    capsys.readouterr()
    return run


def predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_proba_writes_class_names_and_probabilities_with_a_header(
    classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "d.csv", tmp_path / "p.csv"
    code, _, _ = predict(capsys, str(classes), str(data), "--proba", "--out", str(out))
    assert code == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "class,p_setosa,p_versicolor,p_virginica"
    cells = [row.split(",") for row in rows[1:]]
    proba = np.array([[float(p) for p in row[1:]] for row in cells])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert [row[0] for row in cells] == [["setosa", "versicolor", "virginica"][i] for i in
                                         proba.argmax(1)]  # fmt: skip
    assert [row[0] for row in cells] == ["setosa"] * 2 + ["virginica"] * 2 + ["versicolor"] * 2

    code, text, _ = predict(capsys, str(classes), str(data), "--proba", "--json")
    payload = json.loads(text)
    logits = np.array(payload["predictions"])
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(payload["probabilities"], softmax, rtol=1e-6)
    np.testing.assert_allclose(payload["probabilities"], proba, rtol=1e-6)
    assert payload["class_names"] == ["setosa", "versicolor", "virginica"]


def test_a_csv_with_the_target_column_is_read_by_its_names(
    classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    features = tmp_path / "features.csv"
    features.write_text("\n".join(line.split(",", 2)[0] + "," + line.split(",")[1]
                                  for line in CSV.splitlines()) + "\n")  # fmt: skip
    _, whole, _ = predict(capsys, str(classes), str(tmp_path / "d.csv"), "--json")
    _, only, _ = predict(capsys, str(classes), str(features), "--json")
    assert json.loads(whole) == json.loads(only)
    # the columns are found by name in any order
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("\n".join(",".join(reversed(line.split(","))) for line in
                                 CSV.splitlines()) + "\n")  # fmt: skip
    _, reordered, _ = predict(capsys, str(classes), str(swapped), "--json")
    assert json.loads(reordered) == json.loads(whole)


def test_a_width_off_by_the_target_column_suggests_drop_target(
    classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(CSV.splitlines()[1:]) + "\n")  # the training layout, no header
    code, _, err = predict(capsys, str(classes), str(rows))
    assert code == 2
    assert "has 4 columns, but the model reads 2" in err
    assert "does it still hold the target column?" in err
    assert "if the file still holds the target column ('species'), pass --drop-target" in err
    code, text, _ = predict(capsys, str(classes), str(rows), "--drop-target", "--json")
    assert code == 0
    _, expected, _ = predict(capsys, str(classes), str(tmp_path / "d.csv"), "--json")
    assert json.loads(text) == json.loads(expected)


def test_values_have_no_probabilities_and_arrays_drop_the_target_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train(tmp_path, "weight", "mse", 1)
    capsys.readouterr()
    numbers = np.array([[1.0, 0.5, 0.0, 3.0], [3.0, 2.5, 1.0, 5.0]], np.float32)
    np.save(tmp_path / "rows.npy", numbers)
    code, _, err = predict(capsys, str(run), str(tmp_path / "rows.npy"))
    assert code == 2 and "does it still hold the target column?" in err
    assert "--drop-target" in err
    code, text, _ = predict(capsys, str(run), str(tmp_path / "rows.npy"), "--drop-target")
    assert code == 0
    np.save(tmp_path / "x.npy", numbers[:, :2])
    _, expected, _ = predict(capsys, str(run), str(tmp_path / "x.npy"))
    assert json.loads(text) == json.loads(expected)
    code, _, err = predict(capsys, str(run), str(tmp_path / "x.npy"), "--proba")
    assert code == 2 and "predicts values (loss mse), not classes" in err


def test_every_class_loss_says_how_its_outputs_become_probabilities() -> None:
    for name in LOSSES:
        definition = LOSSES.get(name)
        assert (definition.probabilities is None) == (definition.target == "value"), name
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    np.testing.assert_allclose(softmax(logits)[0], [1, 0, 0])
    np.testing.assert_allclose(softmax(logits)[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    np.testing.assert_allclose(sigmoid(logits[0]), [1, 0.5, 0])
    np.testing.assert_allclose(sigmoid(np.array([0.3])), 1 / (1 + np.exp(-0.3)))


def test_a_multi_label_model_writes_one_probability_per_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"{i % 3},{i % 2},{int(i % 3 > 0)}\n" for i in range(12))
    (tmp_path / "d.csv").write_text(rows)
    spec = tmp_path / "b.dnn"
    spec.write_text(
        SPEC.format(target="x", loss="binary_cross_entropy", width=1).replace(
            'target = "x", features = ["sepal", "petal"], ', ""
        )
    )
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    out = tmp_path / "p.csv"
    code, _, _ = predict(capsys, str(tmp_path / "run"), str(tmp_path / "d.csv"), "--proba",
                         "--out", str(out), "--drop-target")  # fmt: skip
    assert code == 0
    lines = out.read_text().splitlines()
    # one unit: the predicted class and the probability of class 1, so headed
    assert lines[0] == "class,p_1" and len(lines) == 13
    predicted = [line.split(",") for line in lines[1:]]
    assert all(0 < float(p) < 1 and c == str(int(float(p) > 0.5)) for c, p in predicted)


def test_malformed_column_metadata_is_refused(classes: Path) -> None:
    import onnx

    from dnnspec import api
    from dnnspec.errors import DiagnosticError

    path = classes / "model.onnx"
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == "dnnspec.expects":
            expects = json.loads(prop.value)
            expects["csv"]["features"] = [0, 99]
            prop.value = json.dumps(expects)
    onnx.save(model, path)
    with pytest.raises(DiagnosticError, match="'dnnspec.expects' is malformed"):
        api.load(classes)


def test_eval_of_a_data_file_reads_it_as_the_specs_data_call(classes: Path, tmp_path: Path) -> None:
    """The target is not the last column and two columns are left out: eval reads the file
    with the spec's target and features, and maps class names to the model's ids even when
    the file lacks a class."""
    from dnnspec import api

    model = api.load(classes)
    whole = np.array(model.evaluate(tmp_path / "d.csv")["confusion"])
    assert np.trace(whole) == whole.sum() == 6
    lines = CSV.splitlines()
    (tmp_path / "two.csv").write_text("\n".join([lines[0], *lines[3:5]]) + "\n")
    two = np.array(model.evaluate(tmp_path / "two.csv")["confusion"])
    assert two[2, 2] == two.sum() == 2  # both are virginica, class 2 of the model


def test_a_symbolic_width_reads_every_column() -> None:
    from dnnspec.runtime.columns import pick_columns

    assert pick_columns(12, None, None, -1, False, "'t.csv'") == list(range(12))


def test_model_predict_casts_float64_and_refuses_only_values_beyond_float32(
    classes: Path,
) -> None:
    import dnnspec
    from dnnspec.errors import DiagnosticError

    model = dnnspec.load(classes)
    x = np.array([[1.0, 0.5], [3.0, 2.5]])
    np.testing.assert_array_equal(model.predict(x), model.predict(x.astype(np.float32)))
    np.testing.assert_array_equal(model.predict(np.array([[1, 0], [3, 2]])), model.predict(
        np.array([[1, 0], [3, 2]], np.float32)))  # fmt: skip
    with pytest.raises(DiagnosticError, match=r"row 2: 1e\+39 is beyond float32's range"):
        model.predict(np.array([[1.0, 0.5], [1e39, 0.0]]))


def test_model_predict_reads_a_pandas_frame_by_its_column_names(classes: Path) -> None:
    """Columns by the names the model records (others, such as the target, ignored); a
    Series is one column."""
    pandas = pytest.importorskip("pandas")
    import dnnspec
    from dnnspec.errors import DiagnosticError

    model = dnnspec.load(classes)
    rows = np.array([[1.0, 0.5], [3.0, 2.5]])
    frame = pandas.DataFrame({"species": ["a", "b"], "petal": rows[:, 1], "sepal": rows[:, 0]})
    np.testing.assert_array_equal(model.predict(frame), model.predict(rows))
    with pytest.raises(DiagnosticError, match=r"expects shape \[N, 2\], got \[2, 1\]"):
        model.predict(pandas.Series([1.0, 3.0], name="sepal"))


SEQUENCE_SPEC = """model m {
  input tokens: int64[N, 6]
  embedding(5, 4)
  dense(5)
}
train {
  data file(path = "d.npz")
  loss cross_entropy
  optimizer adam
  batch 8
  epochs 1
}
"""


def test_an_output_of_a_class_per_position_predicts_a_list_of_ids_per_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, (32, 6))
    np.savez(tmp_path / "d.npz", x=tokens, y=tokens)
    (tmp_path / "m.dnn").write_text(SEQUENCE_SPEC)
    assert main(["train", str(tmp_path / "m.dnn"), "--out", str(tmp_path / "run")]) == 0
    np.save(tmp_path / "t.npy", tokens[:3])
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "t.npy"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert np.array(shown["classes"]).shape == (3, 6)
    assert shown["classes"] == np.array(shown["predictions"]).argmax(axis=-1).tolist()
