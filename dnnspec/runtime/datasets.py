"""Built-in and file datasets; each registered with the arguments a spec may pass.

A loader returns one `Dataset` (inputs, targets, optional class count); the split into
training and validation parts is done once, seeded, by `split`.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.errors import Span, error
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
    """Inputs `x` and targets `y` (int64 class ids or float values)."""

    x: np.ndarray
    y: np.ndarray
    classes: int | None = None

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index], self.classes)


Loader = Callable[[dict[str, Any], int, Span | None], Dataset]


@dataclass(frozen=True)
class DatasetDef:
    signature: Signature
    load: Loader
    doc: str = ""


DATASETS: Registry[DatasetDef] = Registry("dataset")


def _digits(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    with (
        resources.files("dnnspec").joinpath("data/digits.npz").open("rb") as f,
        np.load(f, allow_pickle=False) as npz,
    ):
        return Dataset((npz["x"].astype(np.float32) / 16.0), npz["y"].astype(np.int64), 10)


def _spirals(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    n, k, noise = args["samples"], args["classes"], args["noise"]
    labels = np.arange(n) % k
    t = rng.uniform(0.0, 1.0, n)
    radius = 0.15 + 0.85 * t
    angle = 3.5 * np.pi * t + 2 * np.pi * labels / k
    pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    pts += rng.normal(0.0, noise * 0.1, pts.shape)
    return Dataset((pts * 2.0).astype(np.float32), labels.astype(np.int64), k)


def _regression(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    n, d = args["samples"], args["features"]
    x = rng.uniform(-1.5, 1.5, (n, d))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.3 * x[:, 0] * x[:, 2]
    y = y + rng.normal(0.0, args["noise"], n)
    return Dataset(x.astype(np.float32), y[:, None].astype(np.float32), None)


def _file(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    path = Path(args["path"])
    if not path.exists():
        raise error(f"data file '{path}' does not exist", span)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in (args["x"], args["y"]) if k not in npz.files]
                if missing:
                    raise error(
                        f"'{path}' has no array named {missing[0]!r}",
                        span,
                        help=f"arrays in the file: {', '.join(npz.files)}",
                    )
                x, y = npz[args["x"]], npz[args["y"]]
        elif path.suffix == ".csv":
            x, y = _read_csv(path)
        else:
            raise error(f"cannot read '{path}': expected a .npz or .csv file", span)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise error(f"cannot read data file '{path}': {exc}", span) from None
    if len(x) != len(y):
        raise error(f"'{path}': {len(x)} inputs but {len(y)} targets", span)
    if np.issubdtype(y.dtype, np.integer):
        return Dataset(x, y.astype(np.int64), int(y.max()) + 1 if len(y) else 0)
    return Dataset(x, y, None)


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Numeric CSV, optional header row; the last column is the target."""
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]
    table = np.array(rows, dtype=np.float64)
    x, y = table[:, :-1].astype(np.float32), table[:, -1]
    if np.all(y == np.round(y)):
        return x, y.astype(np.int64)
    return x, y[:, None].astype(np.float32)


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
    ),
)
