"""Parquet data through pyarrow: a file, or a folder of them, trains as the same table in a
CSV does (the same column choices, the same losses), `predict` reads it by the model's
column names, and a bad file (a column of a type a model cannot read, a truncated file, a
foreign file in a data folder) is an exit-2 message naming the file, with no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dnnspec import api
from dnnspec.cli import main
from dnnspec.data.datasets import DATASETS, Dataset
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SPEC = """model m {{
  input x: float32[N, 2]
  dense(8) -> relu
  dense(3)
}}
train {{
  data file(path = "{path}", target = "species", exclude = ["id"])
  loss cross_entropy
  optimizer adam(lr = 0.05)
  batch 4
  epochs 2
}}
"""

SPECIES = ["setosa", "virginica", "versicolor"]
ROWS = 12


def columns() -> dict[str, Any]:
    """An iris-like table: an id to exclude, two measurements, the class as words."""
    rng = np.random.default_rng(0)
    return {
        "id": np.arange(ROWS),
        "sepal": rng.normal(size=ROWS).round(3),
        "species": [SPECIES[i % 3] for i in range(ROWS)],
        "petal": rng.normal(size=ROWS).round(3),
    }


def write_csv(path: Path, table: dict[str, Any]) -> Path:
    names = list(table)
    lines = [",".join(names)]
    lines += [",".join(str(table[n][r]) for n in names) for r in range(ROWS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, table: dict[str, Any], rows: slice = slice(None)) -> Path:
    pq.write_table(pa.table({n: pa.array(v)[rows] for n, v in table.items()}), path)
    return path


def load(tmp_path: Path, path: Path) -> Dataset:
    spec = load_spec_text(SPEC.format(path=path), str(tmp_path / "m.dnn"))
    assert spec.train is not None
    return DATASETS.get("file").load(spec.train.data.args, 0, spec.train.data.span)


def losses(run: Path) -> list[tuple[float, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss"], r["val_loss"]) for r in records]


def train_cli(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC.format(path=data))
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    return code, capsys.readouterr().err


def test_a_parquet_file_trains_to_the_losses_of_the_same_table_in_a_csv(tmp_path: Path) -> None:
    table = columns()
    for name, write in (("d.csv", write_csv), ("d.parquet", write_parquet)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write(tmp_path / name, table)
        spec = tmp_path / f"{name}.dnn"
        spec.write_text(SPEC.format(path=name))
        api.train(spec, out=tmp_path / f"run-{name}", plot=False)
    parquet, csv = losses(tmp_path / "run-d.parquet"), losses(tmp_path / "run-d.csv")
    assert len(parquet) == 2 and parquet == csv
    assert api.load(tmp_path / "run-d.parquet").labels == sorted(SPECIES)


def test_a_folder_of_parquet_files_reads_as_their_concatenation_in_name_order(
    tmp_path: Path,
) -> None:
    table = columns()
    whole = load(tmp_path, write_parquet(tmp_path / "whole.parquet", table))
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "b.parquet", table, slice(5, None))
    write_parquet(folder / "a.parquet", table, slice(0, 5))
    (folder / "_SUCCESS").write_text("")  # as Spark leaves it: skipped
    parts = load(tmp_path, folder)
    np.testing.assert_array_equal(parts.x, whole.x)
    np.testing.assert_array_equal(parts.y, whole.y)
    assert (
        (parts.labels, parts.columns)
        == (whole.labels, whole.columns)
        == (
            tuple(sorted(SPECIES)),
            ("sepal", "petal"),
        )
    )


def test_predict_reads_a_parquet_file_by_the_model_column_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = columns()
    write_parquet(tmp_path / "d.parquet", table)
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC.format(path="d.parquet"))
    api.train(spec, out=tmp_path / "run", plot=False)
    model = api.load(tmp_path / "run")
    # the model's two columns, reversed, among others: read by name
    shuffled = {"petal": table["petal"], "note": ["n"] * ROWS, "sepal": table["sepal"]}
    write_parquet(tmp_path / "p.parquet", shuffled)
    x = np.stack([table["sepal"], table["petal"]], axis=1).astype(np.float32)
    from_file = np.asarray(model.predict(tmp_path / "p.parquet"))
    np.testing.assert_allclose(from_file, np.asarray(model.predict(x)))
    (tmp_path / "parts").mkdir()
    write_parquet(tmp_path / "parts" / "0.parquet", shuffled, slice(0, 7))
    write_parquet(tmp_path / "parts" / "1.parquet", shuffled, slice(7, None))
    np.testing.assert_array_equal(np.asarray(model.predict(tmp_path / "parts")), from_file)
    code = main(["predict", str(tmp_path / "run"), str(tmp_path / "p.parquet"), "--json"])
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == ROWS


def _numbers_as_text(tmp_path: Path) -> Path:
    table = columns() | {"sepal": [str(v) for v in columns()["sepal"]]}
    return write_parquet(tmp_path / "d.parquet", table)


def _timestamps(tmp_path: Path) -> Path:
    stamps = pa.array(np.arange(ROWS), pa.timestamp("s"))
    return write_parquet(tmp_path / "d.parquet", columns() | {"petal": stamps})


def _truncated(tmp_path: Path) -> Path:
    path = write_parquet(tmp_path / "d.parquet", columns())
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _foreign_file(tmp_path: Path) -> Path:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "a.parquet", columns())
    (folder / "notes.txt").write_text("rows from the lab\n")
    return folder


def _null_target(tmp_path: Path) -> Path:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "a.parquet", columns(), slice(0, 6))
    species: list[str | None] = list(columns()["species"])
    species[6] = None
    write_parquet(folder / "b.parquet", columns() | {"species": species}, slice(6, None))
    return folder


def _other_columns(tmp_path: Path) -> Path:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "a.parquet", columns())
    renamed = {("sepal_length" if k == "sepal" else k): v for k, v in columns().items()}
    write_parquet(folder / "b.parquet", renamed)
    return folder


@pytest.mark.parametrize(
    ("make", "file", "message"),
    [
        (_numbers_as_text, "d.parquet", "a number stored as text: the column is of type string"),
        (_timestamps, "d.parquet", "column 'petal' is of type timestamp[ms], which a model cannot"),
        (_truncated, "d.parquet", "it is not a valid Parquet file"),
        (_foreign_file, "parts", "holds 'notes.txt', which is not a .parquet file"),
        (_null_target, "parts/b.parquet", "row 1, column 'species' is empty (null)"),
        (_other_columns, "parts/b.parquet", "has columns id, sepal_length, species, petal, but"),
    ],
)
def test_a_bad_parquet_input_is_an_exit_2_message_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, file: str, message: str
) -> None:
    code, err = train_cli(tmp_path, make(tmp_path), capsys)
    assert code == 2
    assert f"'{tmp_path / file}'" in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_parquet_column_of_words_is_a_column_of_categories_and_nulls_are_missing(
    tmp_path: Path,
) -> None:
    table = columns() | {"sepal": ["a", "b", "a", *["c"] * 9], "petal": [None, *[1.0] * 11]}
    data = load(tmp_path, write_parquet(tmp_path / "d.parquet", table))
    assert data.words == {0: ("a", "b", "c")}
    assert data.x[:3, 0].tolist() == [0, 1, 0]
    assert np.isnan(data.x[0, 1]) and data.missing == {
        1: f"'{tmp_path / 'd.parquet'}' row 1, column 'petal'"
    }


def float32_table(path: Path, rows: int) -> np.ndarray:
    """`rows` of two float32 columns, sepal and petal, in row groups of 7, beside the id and
    the species (`columns`)."""
    x = np.random.default_rng(1).normal(size=(rows, 2)).astype(np.float32)
    species = [SPECIES[i % 3] for i in range(rows)]
    table = {"id": np.arange(rows), "sepal": x[:, 0], "species": species, "petal": x[:, 1]}
    pq.write_table(pa.table(table), path, row_group_size=7)
    return x


def test_float32_feature_columns_are_read_whole_as_float32_to_their_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnspec.data.formats import parquet

    monkeypatch.setattr(parquet, "MATRIX_ROWS", 5)  # row groups of 7 laid out 5 rows at a time
    monkeypatch.setattr(parquet, "MATRIX_COLUMNS", 1)  # and a column at a time
    x = float32_table(tmp_path / "d.parquet", 40)
    data = load(tmp_path, tmp_path / "d.parquet")
    assert data.x.dtype == np.float32 and data.x.flags.c_contiguous  # not widened to float64
    assert np.array_equal(data.x.view(np.uint32), x.view(np.uint32))


def test_a_non_finite_float32_cell_is_named_as_when_columns_are_read_one_by_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.parquet"
    x = float32_table(path, 40)
    x[23, 1] = np.inf
    table = pq.read_table(path).set_column(3, "petal", pa.array(x[:, 1]))
    pq.write_table(table, path, row_group_size=7)
    with pytest.raises(DiagnosticError, match=f"'{path}' row 24, column 'petal' holds inf"):
        load(tmp_path, path)


def test_a_parquet_file_over_the_data_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnspec.data import datasets

    rows = 200_000  # 3 MiB as float64, a few KiB compressed
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"sepal": np.zeros(rows), "species": ["setosa"] * rows}), path)
    monkeypatch.setattr(datasets, "MAX_DATA_BYTES", 1 << 20)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DiagnosticError, match="holds 3.1 MiB of data, over the limit of 1 MiB"):
        load(tmp_path, path)


def test_without_pyarrow_a_parquet_file_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_parquet(tmp_path / "d.parquet", columns())
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DiagnosticError) as info:
        load(tmp_path, path)
    diagnostic = info.value.diagnostics[0]
    assert "needs pyarrow, which is not installed" in diagnostic.message
    assert "pip install -e '.[parquet]'" in (diagnostic.help or "")
