"""Built-in and file datasets; each registered with the arguments a spec may pass.

A loader returns one `Dataset` (inputs and targets as found); `data.conform` checks them
against the model and the loss, and `split` divides them once, seeded, into training and
validation parts. The file readers here are shared with `dnnspec predict`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec import npz
from dnnspec.errors import Note, Span, error
from dnnspec.files import GiB, MiB, open_regular, read_bytes
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

VALIDATION = ArgSpec(
    name="validation",
    type="float",
    default=0.2,
    min=0.0,
    max=0.9,
    doc="fraction held out for validation",
)


@dataclass(frozen=True)
class Dataset:
    """Inputs `x` and targets `y` (class ids or float values). `vocab`: for token data,
    the text of each id (written into model.onnx, read by `dnnspec generate`)."""

    x: np.ndarray
    y: np.ndarray
    vocab: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index], self.vocab)


Loader = Callable[[dict[str, Any], int, Span | None], Dataset]


@dataclass(frozen=True)
class DatasetDef:
    signature: Signature
    load: Loader
    doc: str = ""
    paths: tuple[str, ...] = ()
    """Arguments that name files: spec.lock.json records them as absolute paths."""


DATASETS: Registry[DatasetDef] = Registry("dataset")


def _digits(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    with (
        resources.files("dnnspec").joinpath("data/digits.npz").open("rb") as f,
        np.load(f, allow_pickle=False) as npz,
    ):
        return Dataset((npz["x"].astype(np.float32) / 16.0), npz["y"].astype(np.int64))


def _spirals(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    n, k, noise = args["samples"], args["classes"], args["noise"]
    labels = np.arange(n) % k
    t = rng.uniform(0.0, 1.0, n)
    radius = 0.15 + 0.85 * t
    angle = 3.5 * np.pi * t + 2 * np.pi * labels / k
    pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    pts += rng.normal(0.0, noise * 0.1, pts.shape)
    return Dataset((pts * 2.0).astype(np.float32), labels.astype(np.int64))


def _regression(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    n, d = args["samples"], args["features"]
    x = rng.uniform(-1.5, 1.5, (n, d))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.3 * x[:, 0] * x[:, 2]
    y = y + rng.normal(0.0, args["noise"], n)
    return Dataset(x.astype(np.float32), y[:, None].astype(np.float32))


def _sequences(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    """Token sequences [N, length] whose label needs memory of earlier steps."""
    rng = np.random.default_rng(seed)
    n, length, symbols, task = args["samples"], args["length"], args["symbols"], args["task"]
    x = rng.integers(0, symbols, (n, length))
    if task == "parity":
        return Dataset(x.astype(np.int64), ((x == 1).sum(axis=1) % 2).astype(np.int64))
    if task == "recall":
        return Dataset(x.astype(np.int64), x[:, 0].astype(np.int64))
    # query: the last token is a symbol; label 1 when it occurs among the earlier ones
    labels = rng.integers(0, 2, n)
    for row, label in zip(x, labels, strict=True):
        if label:
            row[-1] = row[rng.integers(0, length - 1)]
        else:
            row[-1] = rng.integers(0, symbols)
            seen = row[:-1] == row[-1]
            others = (row[-1] + rng.integers(1, symbols, int(seen.sum()))) % symbols
            row[:-1][seen] = others
    return Dataset(x.astype(np.int64), labels.astype(np.int64))


MAX_DATA_BYTES = 2 * GiB
"""Largest array data one .npz/.npy file may declare (all its arrays together)."""

MAX_CSV_BYTES = 256 * MiB
"""Largest CSV file read (its cells become Python strings before they become numbers)."""


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:  # e.g. a name too long to look up: opening it reports why
        return False


def find(path: Path, span: Span | None) -> Path:
    """A relative path is looked up next to the spec first, then in the working directory."""
    if path.is_absolute():
        candidates = [path]
    else:
        spec_dir = Path(span.file).parent if span is not None else None
        candidates = [spec_dir / path] if spec_dir is not None else []
        candidates.append(path)
    for candidate in candidates:
        if _exists(candidate):
            return candidate
    if any(len(str(c)) > 1024 or len(c.name) > 255 for c in candidates):
        raise error(f"data file path '{str(path)[:80]}...' is too long", span)
    looked = " and ".join(f"'{c}'" for c in dict.fromkeys(candidates))
    raise error(
        f"data file '{path}' does not exist",
        span,
        notes=[Note(message=f"looked for {looked}")],
        help="a relative path is read from the spec's folder, then the current directory",
    )


def locate_file(text: str, span: Span | None) -> Path:
    """The absolute path of a data file named in a spec, as the run will read it."""
    if not text:
        raise error("the data file path is empty", span)
    return Path(os.path.abspath(find(Path(text), span)))


def _file(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    path = locate_file(args["path"], span)
    if path.suffix == ".npz":
        arrays = read_npz(path, span)
        missing = [k for k in (args["x"], args["y"]) if k not in arrays]
        if missing:
            raise error(
                f"'{path}' has no array named {missing[0]!r}",
                span,
                help=f"arrays in the file: {', '.join(arrays) or 'none'}",
            )
        x, y = arrays[args["x"]], arrays[args["y"]]
        for key, array in ((args["x"], x), (args["y"], y)):
            if array.ndim == 0:
                raise error(
                    f"array {key!r} in '{path}' is a single number, not one row per sample",
                    span,
                )
    elif path.suffix == ".csv":
        table = read_csv(path, span)
        if table.shape[1] < 2:
            raise error(
                f"'{path}' has one column; a training CSV needs input columns "
                "followed by a target column",
                span,
            )
        x, y = table[:, :-1], table[:, -1]
    else:
        raise error(f"cannot read '{path}': expected a .npz or .csv file", span)
    if len(x) != len(y):
        raise error(f"'{path}': {len(x)} inputs but {len(y)} targets", span)
    return Dataset(x, y)


def read_npz(path: Path, span: Span | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz file; anything but a valid, pickle-free one is a clear error."""
    with open_regular(path, "data file", MAX_DATA_BYTES, span) as f:
        return npz.read_npz(f, f"'{path}'", MAX_DATA_BYTES, span)


def read_csv(path: Path, span: Span | None = None) -> np.ndarray:
    """A numeric CSV with an optional header row as a float64 [rows, columns] table."""
    data = read_bytes(path, "data file", MAX_CSV_BYTES, span)
    try:
        text = data.decode("utf-8-sig")
        rows = [
            (i, r)
            for i, r in enumerate(csv.reader(io.StringIO(text, newline="")), start=1)
            if any(c.strip() for c in r)
        ]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise error(f"cannot read '{path}': {exc}", span) from None
    if rows and not all(_is_number(c) for c in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise error(f"'{path}' has no data rows", span)
    width = len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise error(
                f"'{path}' line {line} has {len(row)} columns, but line {rows[0][0]} has {width}",
                span,
            )
        for column, cell in enumerate(row, start=1):
            if not _is_number(cell):
                raise error(
                    f"'{path}' line {line}, column {column}: {cell.strip()!r} is not a number",
                    span,
                )
    return np.array([r for _, r in rows], dtype=np.float64)


def read_inputs(path: Path) -> np.ndarray:
    """Prediction inputs: an .npy, an .npz (array `x`, or its only array) or a CSV."""
    if path.suffix == ".npy":
        with open_regular(path, "input file", MAX_DATA_BYTES) as f:
            size = os.fstat(f.fileno()).st_size
            return npz.read_npy(f, size, f"'{path}'", MAX_DATA_BYTES)
    if path.suffix == ".npz":
        arrays = read_npz(path)
        if "x" in arrays:
            return arrays["x"]
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        raise error(
            f"'{path}' has no arrays"
            if not arrays
            else f"'{path}' has several arrays and none is named 'x'",
            help=f"arrays: {', '.join(arrays)}" if arrays else None,
        )
    if path.suffix == ".csv":
        return read_csv(path)
    if not str(path):
        raise error("the input file path is empty")
    raise error(f"cannot read '{path}': expected .npy, .npz or .csv")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split(data: Dataset, validation: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded shuffle into training and validation parts."""
    order = np.random.default_rng(seed + 7919).permutation(len(data))
    n_val = int(round(len(data) * validation))
    return data.take(np.sort(order[n_val:])), data.take(np.sort(order[:n_val]))


DATASETS.add(
    "digits",
    DatasetDef(
        Signature(args=(VALIDATION,)),
        _digits,
        "scikit-learn's 1,797 8x8 handwritten digits, 10 classes",
    ),
)
DATASETS.add(
    "spirals",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="samples", type="int", default=2000, min=10),
                ArgSpec(name="classes", type="int", default=2, min=2),
                ArgSpec(name="noise", type="float", default=0.1, min=0.0),
                VALIDATION,
            )
        ),
        _spirals,
        "interleaved 2-D spirals, one arm per class",
    ),
)
DATASETS.add(
    "regression",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="samples", type="int", default=2000, min=10),
                ArgSpec(name="features", type="int", default=3, min=3),
                ArgSpec(name="noise", type="float", default=0.05, min=0.0),
                VALIDATION,
            )
        ),
        _regression,
        "y = sin(2 x0) + 0.5 x1^2 - 0.3 x0 x2 + noise",
    ),
)
DATASETS.add(
    "sequences",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(
                    name="task",
                    type="str",
                    default="query",
                    choices=("query", "recall", "parity"),
                    doc="query: did the last token occur earlier (2 classes); recall: the "
                    "first token (symbols classes); parity: is the count of 1s odd (2 classes)",
                ),
                ArgSpec(name="samples", type="int", default=2000, min=10),
                ArgSpec(name="length", type="int", default=12, min=2, doc="tokens per sample"),
                ArgSpec(name="symbols", type="int", default=8, min=2, doc="token ids 0..symbols-1"),
                VALIDATION,
            )
        ),
        _sequences,
        "int64 token sequences [N, length] whose label needs memory (seeded)",
    ),
)
DATASETS.add(
    "file",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="path", type="str"),
                VALIDATION,
                ArgSpec(
                    name="x", type="str", default="x", doc="array name of the inputs in an .npz"
                ),
                ArgSpec(
                    name="y", type="str", default="y", doc="array name of the targets in an .npz"
                ),
            )
        ),
        _file,
        "a user .npz (arrays x, y) or .csv (last column is the target)",
        paths=("path",),
    ),
)
