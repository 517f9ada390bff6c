"""Every data format reads what was written in it, by name, through the one interface.

`FORMAT_CASES` holds one case per registered format (`FORMATS`; a completeness test fails
otherwise): how to write inputs and targets in that format. Every format feeds `predict`
the inputs by the model's input name; a format that reads training data also returns the
one target and the targets of named outputs by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dnnspec.data.datasets import DATASETS, read_batch
from dnnspec.data.formats import FORMATS, Feed, Limits, Wanted, suffixes
from dnnspec.errors import DiagnosticError, Span

SPAN = Span(file="s.dnn", line=3, col=3, end_line=3, end_col=10)
LIMITS = Limits(1 << 20, 1 << 20)
X = np.arange(24, dtype=np.float64).reshape(6, 4) / 4
TARGETS = {"y": np.arange(6) % 3, "digit": np.arange(6) % 2, "ink": np.linspace(0, 1, 6)}

Writer = Callable[[Path, np.ndarray, dict[str, np.ndarray]], Path]
"""Writes the inputs and the targets (by name) into a folder; returns the file."""


def write_npy(folder: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> Path:
    np.save(folder / "d.npy", x)
    return folder / "d.npy"


def write_npz(folder: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> Path:
    arrays: dict[str, Any] = {"x": x, **targets}
    np.savez(folder / "d.npz", **arrays)
    return folder / "d.npz"


def write_csv(folder: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> Path:
    header = [f"f{i}" for i in range(x.shape[1])] + list(targets)
    rows = [[f"{v!r}" for v in row] for row in x.tolist()]
    for values in targets.values():
        for row, value in zip(rows, values.tolist(), strict=True):
            row.append(repr(value))
    path = folder / "d.csv"
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def write_parquet(folder: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {f"f{i}": x[:, i] for i in range(x.shape[1])} | targets
    pq.write_table(pa.table(columns), folder / "d.parquet")
    return folder / "d.parquet"


PIXELS = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(1, 4, 6, 3) * 3
"""An image format holds decoded pixels, uint8 [1, height, width, channels]."""


def write_png(folder: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> Path:
    image = pytest.importorskip("PIL.Image")
    image.fromarray(PIXELS[0], "RGB").save(folder / "d.png")
    return folder / "d.png"


CLIP = np.array([[0.0, 0.25, -0.5, 0.75, -1.0]], np.float32)
"""A WAV file holds one clip, float32 [1, samples]."""


def write_wav(folder: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> Path:
    sf = pytest.importorskip("soundfile")
    sf.write(folder / "d.wav", CLIP[0], 16000, "FLOAT")
    return folder / "d.wav"


@dataclass(frozen=True)
class FormatCase:
    """`write` puts inputs and targets in a file of the format; `args` are the `file(...)`
    arguments that read target `y` as the one target; `trains`: the format reads training
    data (else it only feeds predictions)."""

    write: Writer
    args: dict[str, Any]
    trains: bool = True
    holds: np.ndarray | None = None
    """The inputs the file holds when not the ones written (an image: its pixels)."""


FORMAT_CASES: dict[str, FormatCase] = {
    "npy": FormatCase(write_npy, {}, trains=False),
    "npz": FormatCase(write_npz, {}),
    "csv": FormatCase(write_csv, {"target": "y", "features": ["f0", "f1", "f2", "f3"]}),
    "parquet": FormatCase(write_parquet, {"target": "y"}),
    "image": FormatCase(write_png, {}, trains=False, holds=PIXELS),
    "wav": FormatCase(write_wav, {}, trains=False, holds=CLIP),
}


def test_every_format_has_a_case() -> None:
    assert set(FORMATS) == set(FORMAT_CASES)


def file_args(path: Path, **args: Any) -> dict[str, Any]:
    given = [(k, v, SPAN) for k, v in {"path": str(path), **args}.items()]
    return DATASETS.get("file").signature.bind("file", [], given, SPAN)


@pytest.mark.parametrize("name", FORMAT_CASES)
def test_a_format_feeds_predict_the_inputs_by_the_model_input_name(
    name: str, tmp_path: Path
) -> None:
    case = FORMAT_CASES[name]
    path = case.write(tmp_path, X, {"y": TARGETS["y"]})
    batch = read_batch(path, Feed({"pixels": None}))
    assert list(batch.arrays) == ["pixels"]
    inputs = batch.arrays["pixels"]
    if name in ("csv", "parquet"):  # a table of rows holds the target column too
        inputs = inputs[:, :-1]
    np.testing.assert_array_equal(inputs, X if case.holds is None else case.holds)


@pytest.mark.parametrize("name", [n for n, c in FORMAT_CASES.items() if c.trains])
def test_a_training_format_returns_the_input_and_the_one_target_by_name(
    name: str, tmp_path: Path
) -> None:
    case = FORMAT_CASES[name]
    form = FORMATS.get(name)
    assert form.read is not None
    path = case.write(tmp_path, X, {"y": TARGETS["y"]})
    wanted = Wanted(inputs=("pixels",), outputs=("",))
    arrays = form.read(path, file_args(path, **case.args), wanted, LIMITS, SPAN)
    assert (list(arrays.inputs), list(arrays.targets)) == (["pixels"], [""])
    np.testing.assert_array_equal(arrays.inputs["pixels"], X)
    np.testing.assert_array_equal(arrays.targets[""], TARGETS["y"])


@pytest.mark.parametrize("name", [n for n, c in FORMAT_CASES.items() if c.trains])
def test_a_training_format_returns_the_targets_of_named_outputs_by_name(
    name: str, tmp_path: Path
) -> None:
    form = FORMATS.get(name)
    assert form.read is not None
    targets = {"digit": TARGETS["digit"], "ink": TARGETS["ink"]}
    path = FORMAT_CASES[name].write(tmp_path, X, targets)
    wanted = Wanted(inputs=("pixels",), outputs=("ink", "digit"))
    arrays = form.read(path, file_args(path), wanted, LIMITS, SPAN)
    assert list(arrays.targets) == ["ink", "digit"]
    np.testing.assert_array_equal(arrays.inputs["pixels"], X)
    for output, values in targets.items():
        np.testing.assert_array_equal(arrays.targets[output], values)


def test_messages_list_the_suffixes_of_the_registered_formats(tmp_path: Path) -> None:
    assert suffixes(training=False) == ".npy, .npz, .csv, .parquet, .png, .jpg, .jpeg or .wav"
    assert suffixes(training=True) == ".npz, .csv or .parquet"
    path = write_npy(tmp_path, X, {})
    data = DATASETS.get("file")
    with pytest.raises(DiagnosticError, match="expected a .npz, .csv or .parquet file"):
        data.load(file_args(path), 0, SPAN)
    with pytest.raises(DiagnosticError, match="expected .npy, .npz, .csv, .parquet, .png, .jpg"):
        read_batch(tmp_path / "d.feather", Feed({"x": None}))


def test_a_call_shows_only_its_own_format_arguments() -> None:
    shown = DATASETS.get("file").shown
    assert set(shown(file_args(Path("d.csv")))) == {
        "path",
        "validation",
        "target",
        "features",
        "exclude",
        "header",
        "labels",
    }
    assert set(shown(file_args(Path("d.npz")))) == {"path", "validation", "x", "y", "labels"}
    assert set(shown(file_args(Path("d.parquet")))) == {
        "path",
        "validation",
        "target",
        "features",
        "exclude",
        "labels",
        "memory",
    }
