"""Built-in datasets are deterministic and shaped as documented; user files load or fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dnnspec.data.datasets import DATASETS, Dataset, split
from dnnspec.errors import DiagnosticError, Span

SPAN = Span(file="s.dnn", line=3, col=3, end_line=3, end_col=10)


def load(name: str, **args: object) -> Dataset:
    d = DATASETS.get(name)
    bound = d.signature.bind(name, [], [(k, v, SPAN) for k, v in args.items()], SPAN)
    return d.load(bound, 0, SPAN)


def test_digits_ships_1797_scaled_images_with_ten_classes() -> None:
    data = load("digits")
    assert data.x.shape == (1797, 64) and data.x.dtype == np.float32
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0
    assert sorted(set(data.y.tolist())) == list(range(10))


def test_synthetic_sets_are_seeded() -> None:
    a, b = load("spirals", samples=100), load("spirals", samples=100)
    np.testing.assert_array_equal(a.x, b.x)
    r = load("regression", samples=50)
    assert r.x.shape == (50, 3) and r.y.shape == (50, 1)


def test_split_is_disjoint_and_seeded() -> None:
    data = load("digits")
    train, val = split(data, 0.2, seed=0)
    assert len(train) + len(val) == 1797 and len(val) == 359
    again, _ = split(data, 0.2, seed=0)
    np.testing.assert_array_equal(train.x, again.x)


def test_user_csv_with_header_loads_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n0.1,0.2,1\n0.3,0.4,0\n")
    data = load("file", path=str(path))
    assert data.x.shape == (2, 2) and data.y.tolist() == [1, 0]


def test_missing_or_corrupt_user_file_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="does not exist") as info:
        load("file", path=str(tmp_path / "nope.npz"))
    assert info.value.diagnostics[0].span == SPAN
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DiagnosticError, match="not a valid .npz file"):
        load("file", path=str(bad))
    np.savez(tmp_path / "other.npz", inputs=np.zeros(3))
    with pytest.raises(DiagnosticError, match="no array named 'x'"):
        load("file", path=str(tmp_path / "other.npz"))
