"""Streamed training data: read chunk by chunk by a background reader within a memory
budget, it trains exactly as the in-memory data when its shuffle window covers it, its
epoch order is a function of (seed, epoch) so a resumed run repeats it, its reader stays in
budget, and a file that lies about its size is refused by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dnnspec.data.dataset import Dataset
from dnnspec.data.formats.base import Wanted
from dnnspec.data.formats.parquet import streamable
from dnnspec.data.stream import (
    Moments,
    Streamed,
    budget_rows,
    epoch_order,
    hash_split,
    npy_source,
    plan,
)
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.trainer import Diverged, Trainer

SPECS = Path(__file__).resolve().parent.parent / "specs"
BATCH = 16


@pytest.fixture(scope="module")
def digits() -> Prepared:
    return prepare(load_spec(SPECS / "digits_mlp.dnn", {"hidden": "32"}), epochs=2)


def write_npy(prep: Prepared, folder: Path) -> dict[str, Path]:
    paths = {"x": folder / "x.npy", "y": folder / "y.npy"}
    np.save(paths["x"], prep.train_data.x)
    np.save(paths["y"], prep.train_data.y)
    return paths


def epoch_losses(
    prep: Prepared, data: Dataset | Streamed, epochs: range, trainer: Trainer | None = None
) -> list[float]:
    trainer = trainer or Trainer(prep.program, "cpu", prep.train.seed, steps_per_call=7)
    losses: list[float] = []
    for epoch in epochs:
        trainer.run_epoch(data, "x", BATCH, epoch, lambda c, n: losses.extend(c.tolist()))
    return losses


@pytest.mark.parametrize("host", [False, True], ids=["train loop", "host loop"])
def test_streamed_data_whose_window_covers_it_trains_to_the_in_memory_losses(
    digits: Prepared, tmp_path: Path, host: bool
) -> None:
    source = npy_source(write_npy(digits, tmp_path), chunk_rows=100)
    assert len(source.sizes) > 1
    streamed = Streamed(source, window=len(source))
    expected = epoch_losses(digits, digits.train_data, range(2))
    trainer = Trainer(digits.program, "cpu", digits.train.seed, steps_per_call=7)
    trainer.host_loop = host
    assert epoch_losses(digits, streamed, range(2), trainer) == expected


def test_a_window_that_covers_the_data_visits_it_in_the_in_memory_order() -> None:
    sizes = (40, 40, 23)
    order = np.concatenate([w.rows[w.perm] for w in plan(sizes, 103, 5, 3)])
    assert np.array_equal(order, epoch_order(103, 5, 3))


def test_a_small_window_visits_every_row_once_in_an_order_set_by_seed_and_epoch() -> None:
    sizes = (30,) * 10
    order = np.concatenate([w.rows[w.perm] for w in plan(sizes, 70, 1, 0)])
    assert sorted(order.tolist()) == list(range(300))
    again = np.concatenate([w.rows[w.perm] for w in plan(sizes, 70, 1, 0)])
    other = np.concatenate([w.rows[w.perm] for w in plan(sizes, 70, 1, 1)])
    assert np.array_equal(order, again) and not np.array_equal(order, other)
    assert all(len(w.rows) <= 70 for w in plan(sizes, 70, 1, 0))


def test_a_resumed_epoch_of_streamed_data_repeats_the_uninterrupted_run_to_the_bit(
    digits: Prepared, tmp_path: Path
) -> None:
    source = npy_source(write_npy(digits, tmp_path), chunk_rows=64)
    streamed = Streamed(source, window=200)
    straight = epoch_losses(digits, streamed, range(2))
    first = Trainer(digits.program, "cpu", digits.train.seed, steps_per_call=7)
    epoch_losses(digits, streamed, range(1), first)
    resumed = Trainer(digits.program, "cpu", digits.train.seed, steps_per_call=5)
    resumed.load_values(first.values())
    resumed.step = first.step
    assert epoch_losses(digits, streamed, range(1, 2), resumed) == straight[-len(straight) // 2 :]


def test_the_reader_holds_at_most_its_memory_budget(digits: Prepared, tmp_path: Path) -> None:
    source = npy_source(write_npy(digits, tmp_path), chunk_rows=50)
    budget = 200 * source.row_bytes * 4
    streamed = Streamed(source, window=budget_rows(source, budget))
    feed = streamed.feed(0, 0)
    order = streamed.order(0, 0)
    for start in range(0, len(order), 48):
        block = feed.gather(order[start : start + 48])
        assert np.array_equal(block["y"], digits.train_data.y[order[start : start + 48]])
    assert 0 < feed.reader.peak <= budget
    feed.close()
    assert feed.reader.held == 0


def test_a_chunk_larger_than_the_budget_allows_is_refused(digits: Prepared, tmp_path: Path) -> None:
    source = npy_source(write_npy(digits, tmp_path), chunk_rows=500)
    with pytest.raises(DiagnosticError, match="does not fit the memory budget"):
        budget_rows(source, 100 * source.row_bytes)


def test_an_npy_whose_header_declares_more_rows_than_it_holds_is_refused_by_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((100, 4), np.float32))
    path.write_bytes(path.read_bytes()[: -4 * 4 * 10])  # ten rows fewer than the header says
    with pytest.raises(DiagnosticError, match=r"x\.npy' declares shape \[100, 4\]"):
        npy_source({"x": path}, chunk_rows=10)


def test_the_hash_split_keeps_a_row_in_one_part_whatever_the_chunking() -> None:
    held = hash_split(10_000, 0.2, seed=3)
    assert 0.18 < held.mean() < 0.22
    assert np.array_equal(held[:5000], hash_split(5000, 0.2, seed=3))
    assert not np.array_equal(held, hash_split(10_000, 0.2, seed=4))
    order = np.concatenate([w.rows[w.perm] for w in plan((1000,) * 10, 3000, 0, 0, keep=~held)])
    assert not np.isin(order, np.flatnonzero(held)).any()
    assert len(order) == int((~held).sum())


def test_streamed_statistics_in_one_pass_equal_those_of_the_whole_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1e4, 3.0, 5000), rng.uniform(-2, 7, 5000)
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"a": a, "b": b, "label": np.arange(5000) % 3}), path, row_group_size=700
    )
    table = streamable(path, {"target": "label", "features": [], "exclude": []}, Wanted(), None)
    assert table.sizes == (700,) * 7 + (100,)
    x = np.column_stack([a, b]).astype(np.float32).astype(np.float64)
    keep = ~hash_split(5000, 0.25, 0)
    found, kept, start = Moments(), Moments(), 0
    for i, size in enumerate(table.sizes):
        rows = table.read(i).inputs[""].astype(np.float32)
        found.add(rows)
        kept.add(rows[keep[start : start + size]])
        start += size
    np.testing.assert_allclose(found.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(found.std, x.std(axis=0), rtol=1e-9)
    assert np.array_equal(found.low, x.min(axis=0)) and np.array_equal(found.high, x.max(axis=0))
    np.testing.assert_allclose(kept.mean, x[keep].mean(axis=0), rtol=1e-12)


def test_one_pass_statistics_of_float32_rows_widen_them_by_column_blocks_to_the_same_bits() -> None:
    import tracemalloc

    rng = np.random.default_rng(1)
    rows = rng.normal(3.0, 2.0, (3000, 401)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.05] = np.nan
    wide, narrow = Moments(), Moments()
    wide.add(rows[:10].astype(np.float64))  # one chunk in float64, as statistics were fitted
    wide.add(rows[10:].astype(np.float64))
    narrow.add(rows[:10])
    narrow.add(np.zeros((0, 401), np.float32))  # a row group whose rows are all held out
    tracemalloc.start()
    narrow.add(rows[10:])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < rows.nbytes  # never the whole chunk in float64 (twice its float32 bytes)
    for name in ("count", "mean", "m2", "low", "high", "missing"):
        assert np.array_equal(getattr(narrow, name), getattr(wide, name)), name


def test_a_streamed_row_group_of_float32_features_is_read_as_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    columns = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.arange(300) % 2}
    pq.write_table(pa.table(columns), tmp_path / "t.parquet", row_group_size=100)
    args = {"target": "label", "features": [], "exclude": []}
    read = streamable(tmp_path / "t.parquet", args, Wanted(), None).read(1)
    assert read.inputs[""].dtype == np.float32  # not widened to float64 on its way
    assert np.array_equal(read.inputs[""], x[100:200])


def test_a_non_finite_loss_in_streamed_data_keeps_what_in_memory_data_keeps(
    digits: Prepared, tmp_path: Path
) -> None:
    order = epoch_order(len(digits.train_data), digits.train.seed, 0)
    x = digits.train_data.x.copy()
    x[order[16 * 20 : 16 * 21]] = 1e38  # the loss overflows at step 20, inside a call of 7
    data = replace(digits.train_data, x=x)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", data.y)
    streamed = Streamed(npy_source({"x": tmp_path / "x.npy", "y": tmp_path / "y.npy"}, 100), 10**6)
    kept = []
    for given in (data, streamed):
        trainer = Trainer(digits.program, "cpu", digits.train.seed, steps_per_call=7)
        with pytest.raises(Diverged) as caught:
            trainer.run_epoch(given, "x", BATCH, 0)
        kept.append((caught.value.step, trainer.params()))
    (step, memory), (streamed_step, streamed_params) = kept
    assert step == streamed_step == 20
    for name, value in memory.items():
        np.testing.assert_array_equal(streamed_params[name], value, err_msg=name)


def test_a_row_group_without_missing_cells_is_checked_as_it_is_not_copied() -> None:
    """The pass checks a row group with its missing cells as 0 (`np.nan_to_num`), which
    copied every group; one without is handed on as it is."""
    from dnnspec.runtime.streamed import _zeroed

    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert _zeroed(rows) is rows
    gaps = rows.copy()
    gaps[2, 1], gaps[3, 0] = np.nan, np.inf
    assert np.array_equal(_zeroed(gaps), np.nan_to_num(gaps, nan=0.0))
    assert np.isnan(gaps[2, 1])  # the group itself is left as read
