"""Streamed Parquet data (`file(..., memory = ...)` below the table's size) takes what data
read whole takes: columns of words (one_hot features, class names as targets), missing
cells with `impute`, column-restricted scaling, several inputs, named outputs and a test
file; its one-pass statistics equal the whole table's, it trains to the in-memory losses
when its shuffle window covers it, and evaluation and `check` read a large table chunk by
chunk, never whole."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dnnspec.data.formats import parquet
from dnnspec.data.stream import Chunked, Streamed
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.columns import transform
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.trainer import Trainer

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = 600
SMALL, LARGE = '"12 KiB"', '"1 GiB"'


def table(folder: Path, name: str = "d.parquet", seed: int = 0, rows: int = ROWS) -> Path:
    """Numbers with missing cells (`a`), a column of words (`color`), a whole-number code
    (`size`), a class name target (`kind`), a value target (`price`) and 0/1 (`ok`)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(3.0, 2.0, rows)
    b = rng.uniform(-1.0, 1.0, rows)
    size = rng.integers(0, 3, rows).astype(np.float64)
    color = rng.choice(["red", "green", "blue", "teal"], rows)
    kind = np.where(a + b > 3.0, "high", np.where(b > 0, "mid", "low"))
    price = 2.0 * a - b + rng.normal(0, 0.1, rows)
    a_cells: list[float | None] = a.tolist()
    size_cells: list[float | None] = size.tolist()
    for i in range(3, rows, 7):
        a_cells[i] = None
    for i in range(5, rows, 11):
        size_cells[i] = None
    columns = {
        "a": pa.array(a_cells, pa.float64()),
        "b": b,
        "size": pa.array(size_cells, pa.float64()),
        "color": color,
        "kind": kind,
        "price": price,
        "ok": (b > 0).astype(np.int64),
    }
    path = folder / name
    pq.write_table(pa.table(columns), path, row_group_size=50)
    return path


WORDS = """model m {
  input x: float32[N, 11]
  dense(16) -> relu
  dense(3)
}
train {
  data file(path = "d.parquet", target = "kind", features = ["a", "b", "size", "color"],
            validation = 0.0, memory = MEMORY)
  loss cross_entropy
  preprocess impute(strategy = most_frequent, columns = ["a", "size"],
                    add_indicator = true), one_hot(columns = ["size", "color"])
  optimizer adam(lr = 0.01)
  batch 32
  epochs 2
  seed 3
}
"""
INPUTS = """model m {
  input left: float32[N, 1]
  input right: float32[N, 1]
  h = concat(left, right) -> dense(8) -> relu
  h -> dense(3)
}
train {
  data file(path = "d.parquet", target = "kind", features = [["b"], ["price"]],
            validation = 0.0, memory = MEMORY)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 32
  epochs 2
}
"""
OUTPUTS = """model m {
  input x: float32[N, 1]
  h = x -> dense(8) -> relu
  return price: h -> dense(1), ok: h -> dense(1)
}
train {
  data file(path = "d.parquet", features = ["b"], validation = 0.0, memory = MEMORY)
  loss price: mse, ok: binary_cross_entropy
  optimizer adam(lr = 0.01)
  batch 32
  epochs 2
}
"""


def prepared(folder: Path, text: str, memory: str) -> Prepared:
    spec = folder / "m.dnn"
    spec.write_text(text.replace("MEMORY", memory))
    return prepare(load_spec(spec))


def metadata(prep: Prepared) -> dict[str, Any]:
    return prep.program.metadata.model_dump(exclude={"spec_hash"})


def losses(prep: Prepared, data: Any) -> list[float]:
    trainer = Trainer(prep.program, "cpu", prep.train.seed, steps_per_call=5)
    found: list[float] = []
    for epoch in range(2):
        trainer.run_epoch(data, prep.spec.model.inputs[0].name, 32, epoch,
                          lambda c, n: found.extend(c.tolist()))  # fmt: skip
    return found


@pytest.mark.parametrize("text", [WORDS, INPUTS, OUTPUTS], ids=["words", "inputs", "outputs"])
def test_streamed_data_formerly_refused_trains_to_the_in_memory_losses(
    tmp_path: Path, text: str
) -> None:
    table(tmp_path)
    whole = prepared(tmp_path, text, LARGE)
    streamed = prepared(tmp_path, text, SMALL)
    assert whole.streamed is None and streamed.streamed is not None
    stream = streamed.streamed.stream
    assert stream.window < ROWS  # the budget's own window; one that covers the data:
    covering = Streamed(stream.source, len(stream.source), stream.keep)
    assert metadata(streamed) == metadata(whole)  # the spec hash holds the memory budget
    assert losses(streamed, covering) == losses(whole, whole.train_data)
    np.testing.assert_array_equal(
        streamed.train_data.x, whole.train_data.x[: len(streamed.train_data)]
    )


def test_streamed_words_impute_and_one_hot_are_fitted_as_in_memory(tmp_path: Path) -> None:
    table(tmp_path)
    whole = prepared(tmp_path, WORDS, LARGE).program.preprocess
    streamed = prepared(tmp_path, WORDS, SMALL).program.preprocess
    assert whole is not None and streamed is not None
    assert streamed.to_json() == whole.to_json()
    assert streamed.features() == whole.features()


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_one_pass_imputation_and_scaling_equal_the_whole_tables(
    tmp_path: Path, strategy: str
) -> None:
    path = table(tmp_path)
    text = WORDS.replace("most_frequent", strategy).replace("[N, 11]", "[N, 9]")
    text = text.replace(
        'one_hot(columns = ["size", "color"])',
        'standardize(columns = ["a", "b"]), min_max(columns = ["a"]), one_hot(columns = ["color"])',
    )
    prep = prepared(tmp_path, text, SMALL)
    assert prep.streamed is not None and prep.program.preprocess is not None
    fitted = prep.program.preprocess
    rows = pq.read_table(path)
    x = np.column_stack([rows.column(c).to_numpy(zero_copy_only=False) for c in ("a", "size")])
    x = x.astype(np.float32).astype(np.float64)
    (impute,) = fitted.impute
    expected = reference_fill(x, strategy)
    np.testing.assert_allclose(impute.fill, expected, rtol=1e-12)
    assert impute.indicated == (0, 2)
    filled = np.where(np.isnan(x), expected, x)
    standardize, min_max = fitted.scale
    b = np.asarray(rows.column("b"), np.float32).astype(np.float64)
    ab = np.column_stack([filled[:, 0], b])
    np.testing.assert_allclose(standardize.shift[:2], ab.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(standardize.scale[:2], 1 / ab.std(axis=0), rtol=1e-9)
    z = (filled[:, 0] - ab[:, 0].mean()) / ab[:, 0].std()
    np.testing.assert_allclose(min_max.shift[0], z.min(), rtol=1e-9)
    np.testing.assert_allclose(min_max.scale[0], 1 / (z.max() - z.min()), rtol=1e-9)


def reference_fill(x: np.ndarray, strategy: str) -> np.ndarray:
    """SimpleImputer's statistics (scikit-learn when installed, else their definition)."""
    try:
        from sklearn.impute import SimpleImputer
    except ImportError:
        present = [col[~np.isnan(col)] for col in x.T]
        if strategy == "constant":
            return np.zeros(x.shape[1])
        if strategy == "mean":
            return np.array([c.mean() for c in present])
        if strategy == "median":
            return np.array([np.median(c) for c in present])
        values = [np.unique(c, return_counts=True) for c in present]
        return np.array([v[np.argmax(n)] for v, n in values])
    imputer = SimpleImputer(strategy=strategy, fill_value=0.0).fit(x)
    return np.asarray(imputer.statistics_, np.float64)


def test_a_median_whose_distinct_values_outgrow_the_budget_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    table(tmp_path, rows=4000)
    text = WORDS.replace("most_frequent", "median")
    with pytest.raises(DiagnosticError, match="distinct values .* take over 40 KiB"):
        prepared(tmp_path, text, '"40 KiB"')


def test_a_test_file_beside_streamed_data_is_read_and_evaluated_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table(tmp_path)
    table(tmp_path, "t.parquet", seed=1)
    text = WORDS.replace("  seed 3", '  seed 3\n  test "t.parquet"')
    whole = prepared(tmp_path, text, LARGE)
    monkeypatch.setattr(parquet, "_load", refuse_whole)
    streamed = prepared(tmp_path, text, SMALL)
    assert isinstance(streamed.test_data, Chunked) and len(streamed.test_data) == ROWS
    assert whole.test_data is not None and not isinstance(whole.test_data, Chunked)
    trainer = Trainer(whole.program, "cpu", 0)
    found = trainer.evaluate_stats(streamed.test_data, "x").result()
    expected = trainer.evaluate_stats(whole.test_data, "x").result()
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(found[key], value, rtol=1e-5, err_msg=key)


def refuse_whole(*args: Any) -> Any:
    raise AssertionError("the table was read whole")


def test_check_of_streamed_data_reads_it_chunk_by_chunk_and_refuses_as_train_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnspec.api import check_data

    table(tmp_path)
    spec = tmp_path / "m.dnn"
    monkeypatch.setattr(parquet, "_load", refuse_whole)
    spec.write_text(WORDS.replace("MEMORY", SMALL))
    assert check_data(spec) is not None
    spec.write_text(WORDS.replace("MEMORY", SMALL).replace(', "color"])', "])"))
    with pytest.raises(DiagnosticError, match="feature column 'color' holds words"):
        check_data(spec.parent / "m.dnn")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.set_column(1, "b", pa.array([f"{v:.3f}" for v in t.column(1).to_pylist()])),
            "row 1, column 'b' holds '.*', a number stored as text",
        ),
        (lambda t: t.set_column(1, "b", pa.array([[1.0]] * t.num_rows)), "column 'b' is of type"),
    ],
    ids=["numbers as words", "a list column"],
)
def test_a_streamed_column_of_the_wrong_type_is_refused_naming_it(
    tmp_path: Path, change: Any, message: str
) -> None:
    path = table(tmp_path)
    pq.write_table(change(pq.read_table(path)), path, row_group_size=50)
    with pytest.raises(DiagnosticError, match=message):
        prepared(tmp_path, INPUTS, SMALL)


def test_an_unencoded_word_column_of_streamed_data_names_its_words_as_in_memory(
    tmp_path: Path,
) -> None:
    table(tmp_path)
    text = WORDS.replace(', "color"])', "])")
    with pytest.raises(DiagnosticError) as whole:
        prepared(tmp_path, text, LARGE)
    with pytest.raises(DiagnosticError) as streamed:
        prepared(tmp_path, text, SMALL)
    assert str(streamed.value) == str(whole.value)
    assert "color" in str(whole.value)


def test_a_missing_cell_of_streamed_data_without_impute_is_named_as_in_memory(
    tmp_path: Path,
) -> None:
    table(tmp_path)
    text = WORDS.replace('columns = ["a", "size"]', 'columns = ["size"]')
    with pytest.raises(DiagnosticError) as whole:
        prepared(tmp_path, text, LARGE)
    with pytest.raises(DiagnosticError) as streamed:
        prepared(tmp_path, text, SMALL)
    assert str(streamed.value) == str(whole.value)
    assert "row 4, column 'a' is empty" in str(whole.value)


def test_eval_of_a_table_over_its_budget_reads_it_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_kill import finish
    from test_streaming_runs import train

    from dnnspec.api import load
    from dnnspec.runtime import streamed

    table(tmp_path)
    held_out = table(tmp_path, "t.parquet", seed=1)
    spec = tmp_path / "m.dnn"
    spec.write_text(WORDS.replace("MEMORY", SMALL))
    finish(train(spec, tmp_path / "run", "--epochs", "1"))
    with monkeypatch.context() as patched:
        patched.setattr(parquet, "_load", refuse_whole)
        found = load(tmp_path / "run", "cpu").evaluate(held_out)
    monkeypatch.setattr(streamed, "memory_budget", lambda value, span: 1 << 40)
    expected = load(tmp_path / "run", "cpu").evaluate(held_out)
    assert found.keys() == expected.keys() and "confusion" in found
    for key, value in expected.items():
        np.testing.assert_allclose(found[key], value, rtol=1e-5, err_msg=key)


def test_a_truncated_table_over_its_budget_is_refused_naming_it(tmp_path: Path) -> None:
    path = table(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DiagnosticError, match="d.parquet': it is not a valid Parquet file"):
        prepared(tmp_path, INPUTS, SMALL)


def test_scale_target_of_streamed_named_outputs_is_fitted_in_the_pass(tmp_path: Path) -> None:
    path = table(tmp_path)
    text = OUTPUTS.replace(
        "  batch 32", "  preprocess scale_target(method = standardize)\n  batch 32"
    )
    prep = prepared(tmp_path, text, SMALL)
    assert prep.streamed is not None and prep.program.preprocess is not None
    price = np.asarray(pq.read_table(path).column("price"), np.float32).astype(np.float64)
    fitted = prep.program.preprocess.targets["price"]
    np.testing.assert_allclose(fitted.shift, [price.mean()], rtol=1e-12)
    np.testing.assert_allclose(fitted.scale, [1 / price.std()], rtol=1e-9)


def test_a_test_table_over_the_budget_beside_data_held_whole_is_read_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table(tmp_path, rows=300)
    table(tmp_path, "t.parquet", seed=1, rows=2000)
    text = WORDS.replace("  seed 3", '  seed 3\n  test "t.parquet"')
    expected = prepared(tmp_path, text, LARGE)
    reads: list[Path] = []
    whole_read = parquet._load

    def counted(*args: Any) -> Any:
        reads.append(args[0].path)
        return whole_read(*args)

    monkeypatch.setattr(parquet, "_load", counted)
    prep = prepared(tmp_path, text, '"32 KiB"')
    assert prep.streamed is None and [p.name for p in reads] == ["d.parquet"]
    assert isinstance(prep.test_data, Chunked) and len(prep.test_data) == 2000
    assert expected.test_data is not None and not isinstance(expected.test_data, Chunked)
    trainer = Trainer(expected.program, "cpu", 0)
    found = trainer.evaluate_stats(prep.test_data, "x").result()
    for key, value in trainer.evaluate_stats(expected.test_data, "x").result().items():
        np.testing.assert_allclose(found[key], value, rtol=1e-5, err_msg=key)


def test_a_word_the_pass_did_not_see_is_refused_naming_the_changed_file(tmp_path: Path) -> None:
    path = table(tmp_path)
    prep = prepared(tmp_path, WORDS, SMALL)
    assert prep.streamed is not None
    rows = pq.read_table(path)
    pq.write_table(rows.set_column(3, "color", pa.array(["mauve"] * ROWS)), path, row_group_size=50)
    with pytest.raises(DiagnosticError, match="changed while it was read: .* 'mauve'"):
        prep.streamed.stream.source.read(0)


def test_held_out_words_of_row_groups_with_different_words_are_those_of_their_rows(
    tmp_path: Path,
) -> None:
    """Each row group indexes its own words until the pass is over: a validation row of a
    later group keeps its own word and class name, not the first group's at that index."""
    path = table(tmp_path)
    pq.write_table(pq.read_table(path).sort_by([("color", "ascending")]), path, row_group_size=50)
    text = WORDS.replace("validation = 0.0", "validation = 0.3")
    streamed = prepared(tmp_path, text, SMALL)
    whole = prepared(tmp_path, WORDS, LARGE)  # every row, in the table's order
    assert streamed.streamed is not None and whole.streamed is None
    held = streamed.streamed.held
    np.testing.assert_array_equal(streamed.val_data.x, whole.train_data.x[held])
    np.testing.assert_array_equal(streamed.val_data.y, whole.train_data.y[held])


def test_preprocessing_rows_takes_them_block_by_block_to_the_whole_arrays_bits(
    tmp_path: Path,
) -> None:
    """Held-out rows of streamed data are imputed, one-hot encoded and scaled a block of
    rows at a time (never widened to float64 whole), to the values of the whole array."""
    table(tmp_path)
    streamed = prepared(tmp_path, WORDS, SMALL)
    prep = streamed.program.preprocess
    assert prep is not None and streamed.streamed is not None
    loaded = streamed.streamed.loaded  # a row group as loaded and checked, words and gaps
    data = replace(loaded, x=np.tile(loaded.x, (8000, 1)), y=np.tile(loaded.y, 8000))
    expected = prep.apply(prep.encode(data.x, data.words)).astype(np.float32)
    tracemalloc.start()
    got = transform(data, prep).x
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(got, expected)
    assert peak < 2 * expected.nbytes  # the float64 whole array alone is 2 x its bytes
