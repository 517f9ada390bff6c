"""`one_hot` of a CSV's categorical columns: categories fitted on the training split only,
applied to every split, folded into model.onnx (which takes the raw columns, words as their
index in the categories the metadata lists), beside standardize on the other columns; an
unseen category encodes as all zeros; and each mistake is a located error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT
from onnx.reference import ReferenceEvaluator

from dnnspec import api
from dnnspec.cli import main
from dnnspec.data.dataset import Dataset
from dnnspec.errors import DiagnosticError
from dnnspec.runtime.prepare import prepare
from dnnspec.training.preprocess import OneHot, Preprocessing

sys.path.insert(0, str(ROOT / "tools"))
import portability  # noqa: E402

SPEC = """model m {{
  input x: float32[N, {width}]
  dense(16) -> relu
  dense(2)
}}
train {{
  data file(path = "d.csv", target = "label", validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.03)
  batch 32
  epochs {epochs}
  metrics accuracy
  preprocess {steps}
}}
"""

STEPS = 'standardize, one_hot(columns = ["color", "size"])'
"""a, b standardized; color (3 words) and size (codes 1..3) one-hot: 2 + 3 + 3 = 8 wide."""


RARE_ROW = 0
"""A row the seeded split holds out for validation."""


def write_csv(tmp_path: Path, rows: int = 240, rare: str | None = None) -> Path:
    """`a,color,size,b,label`: the label depends on the color, the size and a; `a` is in
    the tens and `b` tiny, so the numeric columns need scaling. `rare` puts one extra
    color on row RARE_ROW only."""
    rng = np.random.default_rng(0)
    colors = rng.choice(["red", "green", "blue"], rows)
    sizes = rng.integers(1, 4, rows)
    a, b = rng.normal(50, 10, rows), rng.normal(0, 0.01, rows)
    score = (colors == "red") * 1.0 + (sizes == 2) * 1.0 + (a > 50) * 1.0
    labels = np.where(score >= 2, "yes", "no")
    if rare is not None:
        colors[RARE_ROW] = rare
    lines = ["a,color,size,b,label"] + [
        f"{a[i]:.3f},{colors[i]},{sizes[i]},{b[i]:.5f},{labels[i]}" for i in range(rows)
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "d.csv"


def write_spec(tmp_path: Path, steps: str = STEPS, width: int = 8, epochs: int = 1) -> Path:
    path = tmp_path / "m.dnn"
    path.write_text(SPEC.format(steps=steps, width=width, epochs=epochs))
    return path


def test_one_hot_expands_each_category_where_its_column_stands() -> None:
    prep = Preprocessing(
        3,
        ("a", "color", "b"),
        one_hot=(OneHot(1, np.array([0.0, 1.0, 2.0]), ("blue", "green", "red"), True),),
    )
    x = np.array([[5.0, 2.0, 7.0], [6.0, 0.0, 8.0], [7.0, -1.0, 9.0], [8.0, np.nan, 1.0]])
    # -1 (an unseen word) and NaN match no category: all zeros
    expected = [[5, 0, 0, 1, 7], [6, 1, 0, 0, 8], [7, 0, 0, 0, 9], [8, 0, 0, 0, 1]]
    np.testing.assert_array_equal(prep.apply(x), expected)
    assert prep.features() == ["a", "color=blue", "color=green", "color=red", "b"]


def test_categories_are_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    write_csv(tmp_path, rare="purple")
    prep = prepare(api.load_spec(write_spec(tmp_path)))
    steps = prep.program.preprocess
    assert steps is not None
    color, size = steps.one_hot
    assert RARE_ROW in prep.val_index  # the one purple row is held out by the split
    assert color.categories == ("blue", "green", "red") and color.words
    assert size.categories == ("1", "2", "3") and not size.words
    assert prep.train_data.x.shape[1] == prep.val_data.x.shape[1] == 8
    np.testing.assert_allclose(prep.train_data.x[:, 0].mean(), 0, atol=1e-5)
    # every training row has exactly one color and one size; the purple one has no color
    np.testing.assert_array_equal(prep.train_data.x[:, 1:4].sum(1), 1)
    np.testing.assert_array_equal(prep.train_data.x[:, 4:7].sum(1), 1)
    purple = int(np.flatnonzero(prep.val_index == RARE_ROW)[0])
    np.testing.assert_array_equal(prep.val_data.x[purple, 1:4], 0)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


@pytest.mark.slow
def test_a_raw_csv_row_through_model_onnx_predicts_as_dnnspec_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path)
    spec = write_spec(tmp_path, epochs=25)
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    model = onnx.load(tmp_path / "run" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    expects = json.loads(meta["dnnspec.expects"])
    assert [c["name"] for c in expects["columns"]] == ["a", "color", "size", "b"]
    assert expects["features"] == [
        "a", "color=blue", "color=green", "color=red", "size=1", "size=2", "size=3", "b",
    ]  # fmt: skip
    assert expects["classes"] == ["no", "yes"]
    assert expects["csv"]["target_name"] == "label"
    a_steps = expects["columns"][0]["steps"]
    assert a_steps[0]["step"] == "standardize" and 40 < a_steps[0]["mean"] < 60
    color = expects["columns"][1]["steps"][0]
    assert color["categories"] == ["blue", "green", "red"] and color["encoded"] == "index"
    assert json.loads(meta["dnnspec.inputs"])[0]["shape"] == ["N", 4]

    # the CSV's own rows, target column included, read by name
    lines = (tmp_path / "d.csv").read_text().splitlines()
    (tmp_path / "some.csv").write_text("\n".join(lines[:41]) + "\n")
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "some.csv"), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)

    # the same rows, encoded by hand from the metadata alone, through onnxruntime
    raw = []
    for line in lines[1:41]:
        a, word, size, b, _ = line.split(",")
        raw.append([float(a), color["categories"].index(word), float(size), float(b)])
    x = np.array(raw, np.float32)
    ours = _ort(model, x)
    np.testing.assert_allclose(predicted["predictions"], ours, rtol=1e-6)
    reference: Any = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(reference[0], ours, rtol=1e-4, atol=1e-5)
    truth = [line.split(",")[-1] for line in lines[1:41]]
    assert np.mean(np.array(predicted["labels"]) == np.array(truth)) >= 0.9

    # a color training never saw is all zeros: the same as an index outside the categories
    x[0, 1] = -1.0
    unseen = tmp_path / "unseen.csv"
    unseen.write_text(lines[0] + "\n" + ",".join(["50", "purple", *lines[1].split(",")[2:]]))
    assert main(["predict", str(tmp_path / "run"), str(unseen), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    x[0, 0] = 50.0
    np.testing.assert_allclose(row, _ort(model, x[:1])[0], rtol=1e-6)

    # eval of a data file reads its words with the fitted categories
    evaluated = api.load(tmp_path / "run").evaluate(tmp_path / "some.csv")
    assert evaluated["accuracy"] >= 0.9

    # every other installed runtime agrees, unseen categories and NaN included
    x[1, 1], x[2, 2] = np.nan, 7.0
    np.save(tmp_path / "run" / "x.npy", x)
    others = [r for r in portability.installed() if r != "onnxruntime"]
    done = subprocess.run(
        [sys.executable, "-c", OTHER_RUNTIMES, str(ROOT / "tools"), str(tmp_path / "run"), *others],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = json.loads(done.stdout)
    assert set(outputs) == set(others)
    for runtime, output in outputs.items():
        np.testing.assert_allclose(output, _ort(model, x), rtol=1e-4, atol=1e-5, err_msg=runtime)


OTHER_RUNTIMES = """
import json, sys
import numpy as np, onnx
sys.path.insert(0, sys.argv[1])
import portability
model, x = onnx.load(sys.argv[2] + "/model.onnx"), np.load(sys.argv[2] + "/x.npy")
outputs = {}
for name in sys.argv[3:]:
    (output,) = portability.RUNTIMES[name][1].open(model).run(["output"], {"x": x})
    outputs[name] = output.tolist()
print(json.dumps(outputs))
"""
"""In a child process: OpenVINO takes over SIGINT in the process that loads it."""


def test_check_shows_the_raw_columns_and_the_models_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path)
    assert main(["check", str(write_spec(tmp_path)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["shape"] == ["N", 8]
    assert report["input_columns"]["width"] == 4
    assert len(report["input_columns"]["features"]) == 8
    assert main(["check", str(write_spec(tmp_path))]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "4 raw columns (a, color, size, b) -> 8 features of input x" in text


def _error(tmp_path: Path, **kwargs: Any) -> Any:
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(write_spec(tmp_path, **kwargs)))
    return info.value.diagnostics[0]


def test_a_wrong_declared_width_says_how_the_columns_add_up(tmp_path: Path) -> None:
    write_csv(tmp_path)
    diagnostic = _error(tmp_path, width=4)
    assert "after one_hot the 4 raw columns are 8 features" in diagnostic.message
    assert "color (3 categories)" in diagnostic.message
    assert "input x: float32[N, 8]" in (diagnostic.help or "")
    assert diagnostic.span is not None and diagnostic.span.line == 2


@pytest.mark.parametrize(
    ("steps", "message", "line"),
    [
        ("standardize", "feature column 'color' holds words (blue, green, red)", 7),
        ('one_hot(columns = ["colour"])', "the data has no feature column 'colour'", 13),
        (
            'one_hot(columns = ["color", "a"])',
            "column 'a' holds 20.64, which is not a category",
            13,
        ),
        (
            'one_hot(columns = ["color", "size"], max_categories = 2)',
            "column 'color' has 3 categories on the training split, more than max_categories = 2",
            13,
        ),
        (
            'standardize(columns = ["color"]), one_hot(columns = ["color", "size"])',
            "standardize: column 'color' is one-hot encoded",
            13,
        ),
        ("one_hot(columns = [])", "one_hot needs the columns of categories", 13),
        ('one_hot(columns = ["color", "color"])', "listed twice", 13),
    ],
)
def test_bad_preprocessing_is_a_located_error(
    tmp_path: Path, steps: str, message: str, line: int
) -> None:
    write_csv(tmp_path)
    diagnostic = _error(tmp_path, steps=steps)
    assert message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == line


def test_a_word_column_without_one_hot_suggests_it(tmp_path: Path) -> None:
    write_csv(tmp_path)
    diagnostic = _error(tmp_path, steps="standardize")
    assert 'one_hot(columns = ["color"])' in (diagnostic.help or "")


def test_a_missing_column_name_suggests_the_close_one(tmp_path: Path) -> None:
    write_csv(tmp_path)
    diagnostic = _error(tmp_path, steps='one_hot(columns = ["colour", "size"])')
    assert "color" in (diagnostic.help or "")


def test_a_constant_column_under_standardize_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path)
    lines = path.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    path.write_text(
        "\n".join([lines[0], *(",".join([r[0], r[1], r[2], "7", r[4]]) for r in rows)]) + "\n"
    )
    diagnostic = _error(tmp_path)
    assert "feature column 3 (b) is constant on the training split" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 13


def test_a_test_file_is_encoded_with_the_training_categories(tmp_path: Path) -> None:
    write_csv(tmp_path)
    lines = (tmp_path / "d.csv").read_text().splitlines()
    first = lines[1].split(",")
    (tmp_path / "t.csv").write_text(
        "\n".join([lines[0], lines[2], ",".join([first[0], "purple", *first[2:]])]) + "\n"
    )
    spec = write_spec(tmp_path)
    spec.write_text(
        spec.read_text().replace("  metrics accuracy", '  metrics accuracy\n  test "t.csv"')
    )
    test = prepare(api.load_spec(spec)).test_data
    assert isinstance(test, Dataset) and test.x.shape == (2, 8)
    np.testing.assert_array_equal(test.x[0, 1:4].sum(), 1)
    np.testing.assert_array_equal(test.x[1, 1:4], 0)  # purple: never in training


def test_an_npz_column_of_codes_is_one_hot_by_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, 40)
    x = np.stack([codes, rng.normal(size=40)], axis=1).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(codes == 1).astype(np.int64))
    spec = write_spec(tmp_path, steps="one_hot(columns = [0])", width=4)
    spec.write_text(spec.read_text().replace('"d.csv", target = "label"', '"d.npz"'))
    prep = prepare(api.load_spec(spec))
    steps = prep.program.preprocess
    assert steps is not None and steps.features() == ["0=0", "0=1", "0=2", "1"]
    np.testing.assert_array_equal(prep.train_data.x[:, :3].sum(1), 1)
    spec.write_text(spec.read_text().replace("columns = [0]", 'columns = ["code"]'))
    with pytest.raises(DiagnosticError, match="the data has no column names"):
        prepare(api.load_spec(spec))


def test_an_empty_cell_in_a_column_of_words_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    lines[5] = ",".join([cells[0], "", *cells[2:]])
    path.write_text("\n".join(lines) + "\n")
    diagnostic = _error(tmp_path)
    assert "line 6, column 2 (color) is empty" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 7
