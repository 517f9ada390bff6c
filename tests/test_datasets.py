"""Built-in datasets are deterministic and shaped as documented; user files load or fail clearly.

`DATASET_CASES` holds at least one case per registered dataset (a completeness test fails
otherwise): the shapes and dtypes it loads, its classes, and whether the seed matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dnnspec.data.datasets import DATASETS, Dataset, split
from dnnspec.errors import DiagnosticError, Span

SPAN = Span(file="s.dnn", line=3, col=3, end_line=3, end_col=10)


def load(name: str, **args: object) -> Dataset:
    d = DATASETS.get(name)
    bound = d.signature.bind(name, [], [(k, v, SPAN) for k, v in args.items()], SPAN)
    return d.load(bound, 0, SPAN)


def write_npz(folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x=rng.normal(size=(12, 5)), y=rng.integers(0, 4, 12))


def write_images(folder: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    for label in ("a", "b", "c"):
        (folder / "photos" / label).mkdir(parents=True)
        for i in range(2):
            pixels = np.full((5, 7, 3), 40 * i + ord(label), np.uint8)
            image.fromarray(pixels, "RGB").save(folder / "photos" / label / f"{i}.png")


def write_clips(folder: Path) -> None:
    """Two classes of 8 kHz WAV clips, three each: of 0.1 s (800 samples), shorter, longer."""
    sf = pytest.importorskip("soundfile")
    for label, hz in (("high", 880.0), ("low", 220.0)):
        (folder / "clips" / label).mkdir(parents=True)
        for i, samples in enumerate((800, 500, 1200)):
            wave = 0.5 * np.sin(2 * np.pi * hz * np.arange(samples) / 8000)
            sf.write(folder / "clips" / label / f"{i}.wav", wave, 8000, "PCM_16")


def write_reviews(folder: Path) -> None:
    """Two classes of .txt files, three texts each."""
    pytest.importorskip("tokenizers")
    for label, word in (("neg", "dull"), ("pos", "lovely")):
        (folder / "reviews" / label).mkdir(parents=True)
        for i, thing in enumerate(("film", "book", "meal")):
            (folder / "reviews" / label / f"{i}.txt").write_text(f"a {word} {thing}")


def write_text(folder: Path) -> None:
    (folder / "t.txt").write_text("abracadabra, abracadabra!")


@dataclass(frozen=True)
class DatasetCase:
    """`dataset(args)` loads inputs of shape `x` and targets of shape `y` with these
    dtypes; class targets (`classes`) cover every id from 0; `seeded`: another seed gives
    other data. `write` creates the files it reads in a temporary folder, which `{dir}`
    in a string argument names."""

    dataset: str
    x: tuple[tuple[int, ...], str]
    y: tuple[tuple[int, ...], str]
    args: dict[str, Any] = field(default_factory=dict)
    classes: int | None = None
    seeded: bool = True
    write: Callable[[Path], None] | None = None


DATASET_CASES: list[DatasetCase] = [
    DatasetCase("digits", ((1797, 64), "float32"), ((1797,), "int64"), classes=10, seeded=False),
    DatasetCase(
        "spirals", ((90, 2), "float32"), ((90,), "int64"), {"samples": 90, "classes": 3}, 3
    ),
    DatasetCase(
        "regression", ((50, 4), "float32"), ((50, 1), "float32"), {"samples": 50, "features": 4}
    ),
    *(
        DatasetCase(
            "sequences",
            ((60, 7), "int64"),
            ((60,), "int64"),
            {"task": task, "samples": 60, "length": 7, "symbols": symbols},
            classes,
        )
        for task, symbols, classes in (("query", 5, 2), ("recall", 5, 5), ("parity", 3, 2))
    ),
    DatasetCase(
        "text", ((3750, 32), "int64"), ((3750, 32), "int64"), {"context": 32}, seeded=False
    ),
    DatasetCase(
        "text",
        ((4, 5), "int64"),
        ((4, 5), "int64"),
        {"context": 5, "path": "{dir}/t.txt"},
        seeded=False,
        write=write_text,
    ),
    *(
        DatasetCase(
            "digit_strings",
            ((50, 6), "int64"),
            ((50, 6), "int64"),
            {"task": task, "length": 6, "samples": 50},
        )
        for task in ("reverse", "sort")
    ),
    DatasetCase(
        "image_folder",
        ((6, 3, 4, 6), "float32"),
        ((6,), "int64"),
        {"path": "{dir}/photos", "size": [4, 6]},
        classes=3,
        seeded=False,
        write=write_images,
    ),
    DatasetCase(
        "audio_folder",
        ((6, 800), "float32"),
        ((6,), "int64"),
        {"path": "{dir}/clips", "sample_rate": 8000, "seconds": 0.1},
        classes=2,
        seeded=False,
        write=write_clips,
    ),
    DatasetCase(
        "text_folder",
        ((6, 8), "int64"),
        ((6,), "int64"),
        {"path": "{dir}/reviews", "vocab": 40, "length": 8},
        classes=2,  # seeded: the tokenizer is learned from the seeded training part
        write=write_reviews,
    ),
    DatasetCase(
        "file",
        ((12, 5), "float64"),
        ((12,), "int64"),
        {"path": "{dir}/d.npz"},
        seeded=False,
        write=write_npz,
    ),
]


def test_every_dataset_has_a_case() -> None:
    assert set(DATASETS) <= {DATASETS.canonical(c.dataset) for c in DATASET_CASES}


@pytest.mark.parametrize("case", DATASET_CASES, ids=lambda c: c.dataset)
def test_dataset_case_loads_its_shapes_deterministically(case: DatasetCase, tmp_path: Path) -> None:
    if case.write is not None:
        case.write(tmp_path)
    args = {k: v.format(dir=tmp_path) if isinstance(v, str) else v for k, v in case.args.items()}
    definition = DATASETS.get(case.dataset)
    bound = definition.signature.bind(
        case.dataset, [], [(k, v, SPAN) for k, v in args.items()], SPAN
    )
    data = definition.load(bound, 0, SPAN)
    assert (data.x.shape, data.x.dtype.name) == case.x
    assert (data.y.shape, data.y.dtype.name) == case.y
    assert np.isfinite(data.x).all()
    if case.classes is not None:
        assert sorted(set(data.y.tolist())) == list(range(case.classes))
    again, other = definition.load(bound, 0, SPAN), definition.load(bound, 1, SPAN)
    np.testing.assert_array_equal(again.x, data.x)
    np.testing.assert_array_equal(again.y, data.y)
    assert np.array_equal(other.x, data.x) != case.seeded


def test_text_windows_predict_the_next_character_with_the_sorted_vocabulary(
    tmp_path: Path,
) -> None:
    (tmp_path / "t.txt").write_text("hello world, hello you", encoding="utf-8")
    data = load("text", context=4, path=str(tmp_path / "t.txt"))
    assert data.vocab == tuple(sorted(set("hello world, hello you")))
    decode = "".join
    assert decode(data.vocab[i] for i in data.x[0]) == "hell"
    assert decode(data.vocab[i] for i in data.y[0]) == "ello"
    assert decode(data.vocab[i] for i in data.x[1]) == "o wo"
    assert len(load("text").vocab) == 29  # the bundled corpus
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(DiagnosticError, match="too short for two windows of 4 \\+ 1"):
        load("text", context=4, path=str(tmp_path / "short.txt"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfeab")
    with pytest.raises(DiagnosticError, match="is not UTF-8 text"):
        load("text", context=1, path=str(tmp_path / "bin.txt"))


def test_digit_strings_targets_are_the_strings_reversed_or_sorted() -> None:
    reverse, ordered = load("digit_strings", length=5), load("digit_strings", task="sort")
    np.testing.assert_array_equal(reverse.y, reverse.x[:, ::-1])
    np.testing.assert_array_equal(ordered.y, np.sort(ordered.x, axis=1))
    assert reverse.x.min() == 0 and reverse.x.max() == 9 and ordered.x.shape == (4000, 8)


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


def test_sequence_labels_are_what_each_task_asks_about_the_tokens() -> None:
    query = load("sequences", task="query", samples=300, length=6, symbols=4)
    assert np.array_equal(query.y, [row[-1] in row[:-1] for row in query.x])
    assert 0.4 < query.y.mean() < 0.6  # balanced: chance is one half
    recall = load("sequences", task="recall", samples=50, length=6, symbols=4)
    assert np.array_equal(recall.y, recall.x[:, 0])
    parity = load("sequences", task="parity", samples=50, length=6, symbols=3)
    assert np.array_equal(parity.y, (parity.x == 1).sum(axis=1) % 2)
    assert set(np.unique(parity.x)) <= {0, 1, 2}
