"""`dnnspec train` on a Parquet table over its memory budget (`file(..., memory = ...)`):
the run streams it, holds out validation rows by a seeded hash of the row index, resumes
bit-identically after kill -9, and refuses what it cannot stream with exit 2."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_kill import finish, kill_soon, records, weights

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.prepare import prepare

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SPEC = """model m {
  input x: float32[N, 4]
  dense(16) -> relu
  dense(3)
}
train {
  data file(path = "d.parquet", target = "label", validation = 0.2, memory = "16 KiB")
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 16
  epochs 6
  metrics accuracy
}
"""
ROWS = 2000


COLUMNS = SPEC.replace("float32[N, 4]", "float32[N, 7]").replace(
    "  batch 16",
    '  preprocess impute(columns = ["f2"], add_indicator = true), one_hot(columns = ["f3"])\n'
    "  batch 16",
)
"""The spec of a table with words and missing cells (`write_table(..., columns=True)`)."""


def write_table(folder: Path, words: bool = False, columns: bool = False) -> Path:
    """Four columns of numbers and a class id; `words`: f3 holds words; `columns`: so
    does f3 (three of them), f2 has missing cells and the label is a class name."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4))
    label = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    table: dict[str, Any] = {f"f{i}": x[:, i] for i in range(4)} | {"label": label}
    if words:
        table["f3"] = np.array(["a", "b"] * (ROWS // 2), object)
    if columns:
        table["f3"] = np.array(["a", "b", "c", "b"] * (ROWS // 4), object)
        table["f2"] = pa.array([None if i % 9 == 4 else v for i, v in enumerate(x[:, 2])])
        table["label"] = np.array(["low", "mid", "high"], object)[label]
    pq.write_table(pa.table(table), folder / "d.parquet", row_group_size=100)
    spec = folder / "m.dnn"
    spec.write_text(COLUMNS if columns else SPEC)
    return spec


def train(spec: Path, run: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "dnnspec", "train", str(spec), "--out", str(run), "--json"]
    argv += ["--checkpoint-every", "1", "--device", "cpu", *extra]
    env = dict(os.environ, DNNSPEC_THREADS="1")
    pipe = subprocess.PIPE
    return subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, env=env)


def test_a_table_over_its_memory_budget_is_streamed_and_split_by_row_hash(
    tmp_path: Path,
) -> None:
    prep = prepare(load_spec(write_table(tmp_path)))
    assert prep.streamed is not None
    stream = prep.streamed.stream
    assert stream.window < ROWS and len(stream) + len(prep.val_data) == ROWS
    assert not set(prep.train_index) & set(prep.val_index)
    assert prep.val_data.x.dtype == np.float32 and prep.val_data.y.dtype == np.int64


def test_training_on_streamed_data_learns_and_writes_a_model(tmp_path: Path) -> None:
    spec = write_table(tmp_path)
    finish(train(spec, tmp_path / "run"))
    epochs = records(tmp_path / "run")
    assert len(epochs) == 6 and epochs[-1]["val_accuracy"] > 0.8
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert (tmp_path / "run" / "model.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("columns", [False, True], ids=["numbers", "words and missing cells"])
def test_a_killed_streamed_run_resumes_to_the_bit(tmp_path: Path, columns: bool) -> None:
    spec = write_table(tmp_path, columns=columns)
    reference = tmp_path / "reference"
    finish(train(spec, reference))
    run, kills, chooser = tmp_path / "run", 0, random.Random(1)
    proc = train(spec, run)
    while kill_soon(proc, run, chooser):
        kills += 1
        resumable = (run / "checkpoint" / "last.npz").exists()
        proc = train(spec, run, "--resume" if resumable else "--overwrite")
        if kills == 3:
            finish(proc)
            break
    assert kills >= 2, "the run finished before it could be killed: make it longer"
    assert records(run) == records(reference)
    expected, got = weights(reference), weights(run)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_a_streamed_column_of_words_is_exit_2_naming_it_and_writes_nothing(
    tmp_path: Path,
) -> None:
    spec = write_table(tmp_path, words=True)
    proc = train(spec, tmp_path / "run")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert "column 'f3' holds words" in out + err and "Traceback" not in out + err
    assert not (tmp_path / "run").exists()


def test_predicting_on_an_npy_whose_header_lies_about_its_size_is_exit_2_naming_it(
    tmp_path: Path,
) -> None:
    spec = write_table(tmp_path)
    finish(train(spec, tmp_path / "run", "--epochs", "1"))
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((50, 4), np.float32))
    bad.write_bytes(bad.read_bytes()[:-160])  # ten rows fewer than its header declares
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [sys.executable, "-m", "dnnspec", "predict", str(tmp_path / "run"), str(bad)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "x.npy' declares shape [50, 4]" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])


def test_standardize_and_min_max_of_streamed_data_are_fitted_in_one_pass_on_training_rows(
    tmp_path: Path,
) -> None:
    spec = write_table(tmp_path)
    spec.write_text(SPEC.replace("  batch 16", "  preprocess standardize, min_max\n  batch 16"))
    prep = prepare(load_spec(spec))
    assert prep.streamed is not None and prep.streamed.preprocessing is not None
    table = pq.read_table(tmp_path / "d.parquet")
    x = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(4)])
    x = x.astype(np.float32).astype(np.float64)[prep.train_index]
    standardize, min_max = prep.streamed.preprocessing.scale
    np.testing.assert_allclose(standardize.shift, x.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(standardize.scale, 1 / x.std(axis=0), rtol=1e-9)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    np.testing.assert_allclose(min_max.shift, z.min(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(min_max.scale, 1 / (z.max(axis=0) - z.min(axis=0)), rtol=1e-9)
    val = prep.val_data.x
    assert val.min() > -0.2 and val.max() < 1.2  # the validation rows are scaled too
    finish(train(spec, tmp_path / "run", "--epochs", "1"))
    assert (tmp_path / "run" / "model.onnx").exists()


def test_a_median_of_streamed_data_is_exact_over_the_training_rows(tmp_path: Path) -> None:
    spec = write_table(tmp_path)
    spec.write_text(
        SPEC.replace(
            "  batch 16", '  preprocess impute(strategy = median, columns = ["f0"])\n  batch 16'
        )
        .replace('"16 KiB"', '"64 KiB"')
        .replace("validation = 0.2", "validation = 0.0")
    )
    prep = prepare(load_spec(spec))
    assert prep.streamed is not None and prep.streamed.preprocessing is not None
    table = pq.read_table(tmp_path / "d.parquet")
    x = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(4)])
    (impute,) = prep.streamed.preprocessing.impute
    np.testing.assert_array_equal(
        impute.fill, np.median(x[:, :1].astype(np.float32).astype(np.float64), axis=0)
    )


def test_a_null_cell_in_a_later_row_group_is_exit_2_naming_its_row_before_any_write(
    tmp_path: Path,
) -> None:
    spec = write_table(tmp_path)
    table = pq.read_table(tmp_path / "d.parquet")
    f2 = table.column("f2").to_pylist()
    f2[1733] = None
    table = table.set_column(2, "f2", pa.array(f2, pa.float64()))
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=100)
    proc = train(spec, tmp_path / "run")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert "d.parquet' row 1734, column 'f2' is empty" in out + err and "impute" in out + err
    assert "Traceback" not in out + err and not (tmp_path / "run").exists()


def test_validation_rows_over_the_budget_are_refused_as_they_are_read(tmp_path: Path) -> None:
    spec = write_table(tmp_path)
    spec.write_text(SPEC.replace("validation = 0.2", "validation = 0.9"))
    with pytest.raises(DiagnosticError, match="validation and test rows .* take over 16 KiB"):
        prepare(load_spec(spec))


def test_a_folder_of_parquet_files_streams_as_one_table(tmp_path: Path) -> None:
    spec = write_table(tmp_path)
    table = pq.read_table(tmp_path / "d.parquet")
    (tmp_path / "shards").mkdir()
    pq.write_table(table.slice(0, 1200), tmp_path / "shards" / "a.parquet", row_group_size=100)
    pq.write_table(table.slice(1200), tmp_path / "shards" / "b.parquet", row_group_size=100)
    spec.write_text(SPEC.replace('"d.parquet"', '"shards"'))
    prep = prepare(load_spec(spec))
    assert prep.streamed is not None
    assert prep.streamed.stream.source.sizes == (100,) * 20
    whole = prepare(load_spec(write_table(tmp_path)))
    assert whole.streamed is not None and prep.data_sha256 == whole.data_sha256


def float32_table(folder: Path, gaps: bool) -> None:
    """`write_table`'s numbers as float32 columns; `gaps`: f2 has missing cells."""
    x = np.random.default_rng(0).normal(size=(ROWS, 4)).astype(np.float32)
    label = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    table: dict[str, Any] = {f"f{i}": x[:, i] for i in range(4)} | {"label": label}
    if gaps:
        cells = [None if i % 9 == 4 else v for i, v in enumerate(x[:, 2])]
        table["f2"] = pa.array(cells, pa.float32())
    pq.write_table(pa.table(table), folder / "d.parquet", row_group_size=100)


@pytest.mark.parametrize(
    ("gaps", "memory", "digest"),
    [
        (False, "16 KiB", "e391bfb4f0261ac90734ab6eba158e6c9675d6c53f1b5ef5853c6af4c6b39235"),
        (False, "1 GiB", "89baea14ea7e2dd4699d1b824815021c2ef52f44e54fc8facb908d633bc8e16b"),
        (True, "16 KiB", "c343d3f04022b5fa3a4a6d81b0867647206bfe3b1dc57836c9949df7e15fbc2c"),
        (True, "1 GiB", "48e5fa3be80c04daa50a0865b63490cb0206f6466a5a7926348929351afbb33a"),
    ],
)
def test_a_float32_table_keeps_the_data_digest_its_runs_resume_by(
    tmp_path: Path, gaps: bool, memory: str, digest: str
) -> None:
    """Streamed or read whole, with missing cells or without: the digests of runs written
    before float32 columns were read as stored (a resumed run must find the same)."""
    float32_table(tmp_path, gaps)
    text = SPEC.replace("16 KiB", memory)
    if gaps:
        text = text.replace("  batch 16", '  preprocess impute(columns = ["f2"])\n  batch 16')
    (tmp_path / "m.dnn").write_text(text)
    prep = prepare(load_spec(tmp_path / "m.dnn"))
    assert (prep.streamed is not None) == (memory == "16 KiB")
    assert prep.data_sha256 == digest


def test_a_row_group_is_read_by_the_footer_read_before_unless_the_file_was_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnspec.data.formats.base import Wanted
    from dnnspec.data.formats.parquet import streamable

    float32_table(tmp_path, gaps=False)
    args = {"target": "label", "features": [], "exclude": []}
    table = streamable(tmp_path / "d.parquet", args, Wanted(), None)
    opened: list[bool] = []
    parquet_file = pq.ParquetFile

    def counted(source: Any, **options: Any) -> Any:
        opened.append(options.get("metadata") is None)
        return parquet_file(source, **options)

    rows = pq.read_table(tmp_path / "d.parquet")
    later = rows.slice(100, 100).select([f"f{i}" for i in range(4)])
    monkeypatch.setattr(pq, "ParquetFile", counted)
    first = table.read(0).inputs[""]
    assert opened == [False] and first.dtype == np.float32  # by the footer `streamable` read
    pq.write_table(rows.slice(100), tmp_path / "d.parquet", row_group_size=100)
    again = table.read(0).inputs[""]
    assert opened == [False, True]  # written again: its own footer
    assert np.array_equal(again, np.column_stack([c.to_numpy() for c in later.columns]))
