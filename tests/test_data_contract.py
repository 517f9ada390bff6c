"""User data files: every way a file can be wrong is a located error naming the row or
array, and every reasonable file (integral float labels, float64 inputs, a path relative
to the spec) trains."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dnnspec.check.shapes import check_spec
from dnnspec.data.datasets import DATASETS, Dataset, read_inputs
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.runtime import checkpoint
from dnnspec.runtime.data import conform
from dnnspec.runtime.prepare import prepare

SPEC = """model m {{
  input x: float{bits}[N, 2]
  dense(8) -> relu
  dense({width})
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss {loss}
  optimizer sgd(lr = 0.1)
  batch 4
  epochs 1
}}
"""


def spec_for(
    tmp_path: Path, data: str, loss: str = "cross_entropy", width: int = 3, bits: int = 32
) -> Path:
    path = tmp_path / "m.dnn"
    path.write_text(SPEC.format(path=data, loss=loss, width=width, bits=bits))
    return path


def prepared_data(spec: Path) -> tuple[np.ndarray, np.ndarray]:
    prep = prepare(load_spec(spec))
    return prep.train_data.x, prep.train_data.y


def error_of(spec: Path) -> str:
    """The rendered error of preparing `spec`; it must point into the spec's data line."""
    with pytest.raises(DiagnosticError) as info:
        prepare(load_spec(spec))
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.span is not None and diagnostic.span.file == str(spec)
    return info.value.render()


def test_npz_with_integral_float_labels_trains_as_classes(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((8, 2)), y=np.array([0.0, 1.0, 2.0, 1.0] * 2))
    x, y = prepared_data(spec_for(tmp_path, "d.npz"))
    assert y.dtype == np.int64 and set(y.tolist()) <= {0, 1, 2}
    assert x.dtype == np.float32


def test_fractional_labels_for_a_class_loss_name_the_sample(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([0.0, 1.5, 2.0, 1.0]))
    text = error_of(spec_for(tmp_path, "d.npz"))
    assert "label 1.5 of sample 1 is not a whole number" in text
    assert "use loss mse" in text


def test_negative_label_is_named_with_its_sample(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([0, 1, -1, 2]))
    text = error_of(spec_for(tmp_path, "d.npz"))
    assert "label -1 of sample 2 is negative" in text and "class ids run from 0 to 2" in text


def test_float64_inputs_are_cast_to_the_graphs_float32(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((8, 2), np.float64), y=np.zeros(8, np.int64))
    x, _ = prepared_data(spec_for(tmp_path, "d.npz", bits=64))
    assert x.dtype == np.float32


@pytest.mark.parametrize("where", ["x", "y"])
def test_nan_or_inf_in_the_data_names_the_sample(tmp_path: Path, where: str) -> None:
    x, y = np.ones((6, 2)), np.ones(6)
    (x if where == "x" else y)[4, ...] = np.inf if where == "x" else np.nan
    np.savez(tmp_path / "d.npz", x=x, y=y)
    text = error_of(spec_for(tmp_path, "d.npz", loss="mse", width=1))
    what = (
        "inputs contain inf at sample 4, position (0,)" if where == "x" else "targets contain nan"
    )
    assert what in text


def test_scalar_arrays_in_npz_are_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.float32(1.0), y=np.int64(0))
    assert "array 'x' in" in error_of(spec_for(tmp_path, "d.npz"))
    assert "is a single number" in error_of(spec_for(tmp_path, "d.npz"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "has no data rows"),
        ("a,b,label\n", "has no data rows"),
        ("1,2,0\n3,4\n", "line 2 has 2 columns, but line 1 has 3"),
        ("a,b,label\n1,2,0\n3,x,1\n", "line 3, column 2 (b): 'x' is not a number"),
        ("0\n1\n2\n", "has one column"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "d.csv").write_text(content)
    assert message in error_of(spec_for(tmp_path, "d.csv"))


def test_csv_header_is_skipped_and_last_column_is_the_target(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n" + "0.5,1,2\n1.5,2,0\n" * 4)
    x, y = prepared_data(spec_for(tmp_path, "d.csv"))
    assert x.shape == (6, 2) and y.dtype == np.int64


def test_file_that_is_not_an_npz_does_not_leak_numpy_internals(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_text("x,y\n1,2\n")
    text = error_of(spec_for(tmp_path, "d.npz"))
    assert "is not a valid .npz file" in text and "pickle" not in text


def test_relative_data_path_is_read_next_to_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    np.savez(folder / "d.npz", x=np.ones((8, 2)), y=np.zeros(8, np.int64))
    spec = spec_for(folder, "d.npz")
    monkeypatch.chdir(tmp_path)
    x, _ = prepared_data(Path(os.path.relpath(spec)))
    assert len(x) == 6


def test_missing_relative_data_path_says_where_it_looked(tmp_path: Path) -> None:
    text = error_of(spec_for(tmp_path, "nowhere.npz"))
    assert "data file 'nowhere.npz' does not exist" in text
    assert str(tmp_path / "nowhere.npz") in text


def test_class_loss_on_a_rank_4_output_is_a_check_error_at_the_output_layer() -> None:
    spec = load_spec_text(
        """model m {
  input x: float32[N, 2, 4, 5]
  dense(3)
}
train {
  data spirals
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 4
  epochs 1
}
"""
    )
    with pytest.raises(DiagnosticError) as info:
        check_spec(spec)
    diagnostic = info.value.diagnostics[0]
    assert "needs one row of class scores per sample" in diagnostic.message
    assert "f32[N, 2, 4, 3]" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 3
    assert diagnostic.notes[0].span is not None and diagnostic.notes[0].span.line == 7


def test_sequence_outputs_take_one_label_per_position(tmp_path: Path) -> None:
    """A [N, T, classes] output reads [N, T] labels; [N] labels or out-of-range ones are
    located data errors naming the sample and position."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 2))
    labels = rng.integers(0, 3, (6, 4))
    text = (
        "model m {\n  input x: float32[N, T, 2]\n  dense(3)\n}\n"
        'train {\n  data file(path = "d.npz")\n  loss cross_entropy\n  optimizer sgd\n'
        "  batch 2\n  epochs 1\n}\n"
    )
    (tmp_path / "s.dnn").write_text(text)
    for y, message in [
        (labels, None),
        (labels[:, 0], r"class labels of shape \[N, T\] for the model's output f32\[N, T, 3\]"),
        (labels[:, :3], r"class labels of shape \[N, T\]"),
        (
            np.where(np.arange(4) == 2, 7, labels),
            r"label 7 of sample 0, position \(2,\) is outside",
        ),
    ]:
        np.savez(tmp_path / "d.npz", x=x, y=y)
        spec = load_spec(tmp_path / "s.dnn")
        assert spec.train is not None
        data = DATASETS.get("file").load(spec.train.data.args, 0, spec.train.data.span)
        if message is None:
            conformed, classes = conform(data, check_spec(spec), {"": "class"}, spec.train.data)
            assert classes == {"": 3} and conformed.y.shape == (6, 4)
        else:
            with pytest.raises(DiagnosticError, match=message):
                conform(data, check_spec(spec), {"": "class"}, spec.train.data)


def test_conform_rejects_string_targets(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array(["a", "b", "c", "d"]))
    spec = load_spec(spec_for(tmp_path, "d.npz", loss="mse", width=1))
    assert spec.train is not None
    data = DATASETS.get("file").load(spec.train.data.args, 0, spec.train.data.span)
    with pytest.raises(DiagnosticError, match="targets must be numbers"):
        conform(data, check_spec(spec), {"": "value"}, spec.train.data)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.npy", b"garbage", "is not a valid .npy file"),
        ("x.npz", b"garbage", "is not a valid .npz file"),
        ("x.csv", b"", "has no data rows"),
        ("x.txt", b"1,2", "expected .npy, .npz, .csv, .parquet, .png, .jpg, .jpeg or .wav"),
    ],
)
def test_prediction_inputs_that_cannot_be_read_are_clear_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DiagnosticError, match=message):
        read_inputs(tmp_path / name)


def test_prediction_inputs_from_npz_and_csv(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", features=np.ones((3, 2)))
    assert read_inputs(tmp_path / "one.npz").shape == (3, 2)
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(DiagnosticError, match="has no arrays"):
        read_inputs(tmp_path / "empty.npz")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n3,4\n")
    assert read_inputs(tmp_path / "x.csv").tolist() == [[1, 2], [3, 4]]


def test_garbage_checkpoint_is_reported_corrupt_without_numpy_internals(tmp_path: Path) -> None:
    path = tmp_path / "last.npz"
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DiagnosticError, match="corrupt") as info:
        checkpoint.load(path)
    assert "pickle" not in info.value.render()


def test_named_dims_match_any_size_but_the_same_size_in_inputs_and_targets(
    tmp_path: Path,
) -> None:
    """A sequence model [N, T, 4] -> [N, T, 1]: T takes the data's length, once."""
    spec = load_spec_text(
        "model m {\n  input x: float32[N, T, 4]\n  dense(1)\n}\n"
        'train {\n  data file(path = "d.npz")\n  loss mse\n  optimizer sgd\n'
        "  batch 4\n  epochs 1\n}\n",
        str(tmp_path / "m.dnn"),
    )
    assert spec.train is not None
    typed = check_spec(spec)
    x = np.ones((6, 7, 4), np.float32)
    fitted, _ = conform(Dataset(x, np.ones((6, 7, 1))), typed, {"": "value"}, spec.train.data)
    assert fitted.y.shape == (6, 7, 1) and fitted.y.dtype == np.float32
    with pytest.raises(DiagnosticError, match=r"targets have shape \[N, 5, 1\]"):
        conform(Dataset(x, np.ones((6, 5, 1))), typed, {"": "value"}, spec.train.data)


@pytest.mark.parametrize("width", [3, 4])
def test_labels_from_one_say_that_ids_start_at_0(tmp_path: Path, width: int) -> None:
    """The wine data labels its 3 classes 1..3: an output 3 wide misses label 3, one 4 wide
    would learn a class 0 no sample has; both say that class ids start at 0."""
    (tmp_path / "d.csv").write_text("".join(f"{i},{i % 3},{i % 3 + 1}\n" for i in range(12)))
    message = error_of(spec_for(tmp_path, "d.csv", width=width))
    assert "labels run from 1 to 3" in message
    assert "class ids must start at 0: these labels run from 1 to 3, so subtract 1" in message
    assert "or read them as class names: `labels = names` in the data call" in message
    if width == 4:
        assert "no sample has class 0" in message and "dense layer 3 wide" in message


def test_labels_as_names_map_labels_from_one_to_ids_from_0(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("".join(f"{i},{i % 3},{i % 3 + 1}\n" for i in range(12)))
    spec = spec_for(tmp_path, "d.csv", width=3)
    spec.write_text(spec.read_text().replace("validation = 0.25", "labels = names"))
    prep = prepare(load_spec(spec))
    assert prep.program.metadata.class_labels == ["1", "2", "3"]
    assert sorted(set(prep.train_data.y.tolist())) == [0, 1, 2]
