"""Built-in and file datasets; each registered with the arguments a spec may pass.

A loader returns one `Dataset` (inputs and targets as found); `data.conform` checks them
against the model and the loss, and `split` divides them once, seeded, into training and
validation parts. The file readers here are shared with `dnnspec predict`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec import npz
from dnnspec.errors import Note, Span, did_you_mean, error
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
class Layout:
    """Where a CSV's inputs and target were: `dnnspec predict` picks the same columns out of
    a file of the training layout (by name with a header, by position without)."""

    width: int
    target: int
    features: tuple[int, ...]
    header: tuple[str, ...] | None = None

    def name(self, column: int) -> str:
        """`species` with a header, else `column 5` (counting from 1, as a spreadsheet)."""
        return self.header[column] if self.header else f"column {column + 1}"


@dataclass(frozen=True)
class Dataset:
    """Inputs `x` and targets `y` (class ids or float values); `labels` names the classes
    when the data gave them as words (a CSV's string labels, id i named labels[i]); `vocab`:
    for token data, the text of each id (written into model.onnx, read by `dnnspec generate`).
    A CSV's feature columns of words (categories for `one_hot`) hold in `x` the index of
    each cell's word in `words[column]`; `columns` names the feature columns."""

    x: np.ndarray
    y: np.ndarray
    vocab: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    words: dict[int, tuple[str, ...]] = field(default_factory=dict)
    layout: Layout | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    """For a model with named outputs: each output's targets by its name (`y` is then
    the first output's, which a stratified split reads)."""
    target_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Class names of the named targets given as words (a CSV column of labels)."""

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Dataset:
        targets = {k: v[index] for k, v in self.targets.items()}
        return replace(self, x=self.x[index], y=self.y[index], targets=targets)


Loader = Callable[[dict[str, Any], int, Span | None], Dataset]
TargetsLoader = Callable[[dict[str, Any], tuple[str, ...], int, Span | None], Dataset]
"""Loads the targets of named outputs (in `Dataset.targets`, by output name)."""


def _all_args(args: dict[str, Any]) -> dict[str, Any]:
    return args


@dataclass(frozen=True)
class DatasetDef:
    signature: Signature
    load: Loader
    doc: str = ""
    shown: Callable[[dict[str, Any]], dict[str, Any]] = _all_args
    """The arguments that apply to this call (a CSV file has no array names), for reports."""
    paths: tuple[str, ...] = ()
    """Arguments that name files: spec.lock.json records them as absolute paths."""
    targets: TargetsLoader | None = None
    """How a model with named outputs gets one target array each (None: it cannot)."""


DATASETS: Registry[DatasetDef] = Registry("dataset")


def _digits(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    with (
        resources.files("dnnspec").joinpath("data/digits.npz").open("rb") as f,
        np.load(f, allow_pickle=False) as npz,
    ):
        return Dataset((npz["x"].astype(np.float32) / 16.0), npz["y"].astype(np.int64))


def _digits_targets(
    args: dict[str, Any], names: tuple[str, ...], seed: int, span: Span | None
) -> Dataset:
    """The digits with two targets: `digit`, the class, and `ink`, the image's mean pixel
    value standardised over the dataset (mean 0, std 1): an auxiliary regression beside
    the classification."""
    data = _digits(args, seed, span)
    ink = data.x.astype(np.float64).mean(axis=1, keepdims=True)
    ink = (ink - ink.mean()) / ink.std()
    offered = {"digit": data.y, "ink": ink.astype(np.float32)}
    return _named(data.x, offered, names, "digits", span)


def _named(
    x: np.ndarray,
    offered: dict[str, np.ndarray],
    names: tuple[str, ...],
    what: str,
    span: Span | None,
    labels: dict[str, tuple[str, ...]] | None = None,
) -> Dataset:
    """A dataset holding the targets `names` of those `offered` (an unknown one is an
    error that lists them)."""
    for name in names:
        if name not in offered:
            raise error(
                f"{what} has no target named '{name}' for the model's output '{name}'",
                span,
                help=did_you_mean(name, list(offered))
                or f"name the outputs after its targets: {', '.join(offered) or 'none'}",
            )
    targets = {name: offered[name] for name in names}
    return Dataset(x, targets[names[0]], targets=targets, target_labels=labels or {})


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


CSV_ONLY = ("target", "features", "header")
NPZ_ONLY = ("x", "y")


def _file_args(args: dict[str, Any]) -> dict[str, Any]:
    """A CSV's call shows no array names, an .npz's no column choices."""
    drop = NPZ_ONLY if str(args.get("path", "")).endswith(".csv") else CSV_ONLY
    return {k: v for k, v in args.items() if k not in drop}


def _file(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    data = _file_data(args, span)
    return _as_names(data, span) if args["labels"] == "names" else data


def _as_names(data: Dataset, span: Span | None) -> Dataset:
    """`labels = names`: each distinct target value is a class name, ids in sorted order
    (numerically for numbers), so labels 1..C become ids 0..C-1 named "1".."C"."""
    if data.labels is not None:
        return data
    y = np.asarray(data.y)
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        raise error(
            f"labels = names reads one number per sample as its class name, but the targets "
            f"have shape {list(y.shape)}",
            span,
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise error("labels = names: the targets hold NaN or infinity", span)
    values, ids = np.unique(y, return_inverse=True)
    names = tuple(f"{v:g}" for v in values.tolist())
    return replace(data, y=ids.astype(np.int64), labels=names)


def _file_data(args: dict[str, Any], span: Span | None) -> Dataset:
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
        return _csv_dataset(path, args, span)
    else:
        raise error(f"cannot read '{path}': expected a .npz or .csv file", span)
    if len(x) != len(y):
        raise error(f"'{path}': {len(x)} inputs but {len(y)} targets", span)
    return Dataset(x, y)


def _file_targets(
    args: dict[str, Any], names: tuple[str, ...], seed: int, span: Span | None
) -> Dataset:
    """A file's targets for named outputs: the .npz arrays, or the CSV columns (by header
    name), named like the outputs; the inputs are array `x`, or the other columns."""
    defaults = (("target", -1), ("y", "y"), ("labels", "ids"))
    chosen_target = [k for k, default in defaults if args[k] != default]
    if chosen_target:
        raise error(
            f"'{chosen_target[0]}' applies to the one target of a model without named outputs; "
            f"the targets of outputs {', '.join(names)} are the arrays or columns named "
            "after them",
            span,
            help=f"drop {chosen_target[0]} = ..., and name the arrays or columns "
            f"{', '.join(names)}",
        )
    path = locate_file(args["path"], span)
    if path.suffix == ".npz":
        arrays = read_npz(path, span)
        if args["x"] not in arrays:
            raise error(
                f"'{path}' has no array named {args['x']!r}",
                span,
                help=f"arrays in the file: {', '.join(arrays) or 'none'}",
            )
        x = arrays[args["x"]]
        offered = {k: v for k, v in arrays.items() if k != args["x"]}
        for key, array in ((args["x"], x), *((n, offered[n]) for n in names if n in offered)):
            if array.ndim == 0:
                raise error(
                    f"array {key!r} in '{path}' is a single number, not one row per sample",
                    span,
                )
            if len(array) != len(x):
                raise error(f"'{path}': {len(x)} inputs but {len(array)} rows in {key!r}", span)
        return _named(x, offered, names, f"'{path}'", span)
    if path.suffix != ".csv":
        raise error(f"cannot read '{path}': expected a .npz or .csv file", span)
    choice = args["header"]
    if choice not in (True, False, "auto"):
        raise error(f"header must be true, false or auto, got {choice!r}", span)
    header, rows = read_csv_cells(path, span, {True: "true", False: "false"}.get(choice, "auto"))
    if header is None:
        raise error(
            f"'{path}' has no header row, so the target columns of outputs "
            f"{', '.join(names)} cannot be found",
            span,
            help="give the file a header naming a column after each output",
        )
    width = len(header)
    chosen = [_column(path, header, name, width, span) for name in names]
    features = args["features"]
    if features:
        listed = features if isinstance(features, list) else [features]
        columns = [_column(path, header, f, width, span) for f in listed]
        both = [header[c] for c in columns if c in chosen]
        if both:
            raise error(
                f"'{path}': target column '{both[0]}' is also listed among the features", span
            )
    else:
        columns = [c for c in range(width) if c not in chosen]
    x, words = _features(path, rows, columns, header, span)
    read: dict[str, np.ndarray] = {}
    labels: dict[str, tuple[str, ...]] = {}
    for name, column in zip(names, chosen, strict=True):
        cells = [r[column].strip() for _, r in rows]
        if all(is_number(w) for w in cells):
            read[name] = _numbers(path, rows, [column], header, span)[:, 0]
        else:
            classes = sorted(set(cells))
            index = {word: i for i, word in enumerate(classes)}
            read[name] = np.array([index[w] for w in cells], np.int64)
            labels[name] = tuple(classes)
    named = _named(x, read, names, f"'{path}'", span, labels)
    return replace(named, columns=tuple(header[c] for c in columns), words=words)


def _column(
    path: Path, header: list[str] | None, chosen: Any, width: int, span: Span | None
) -> int:
    """A column picked by name (needs a header) or by 0-based index (negative from the end)."""
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        if not -width <= chosen < width:
            raise error(
                f"'{path}' has {width} columns; column index {chosen} is outside 0..{width - 1}",
                span,
            )
        return chosen % width
    name = str(chosen)
    if header is None:
        raise error(
            f"'{path}' has no header row, so column '{name}' cannot be found by name",
            span,
            help="pick it by index (target = 0), or give the file a header (header = true)",
        )
    if name not in header:
        raise error(
            f"'{path}' has no column '{name}'",
            span,
            help=did_you_mean(name, header) or f"columns: {', '.join(header)}",
        )
    return header.index(name)


def _csv_dataset(path: Path, args: dict[str, Any], span: Span | None) -> Dataset:
    """Inputs and target from a CSV: the target column by name or index (default the last),
    the feature columns by name (default every other column); a target column of words
    is a class label column, mapped to ids in sorted order, and a feature column of words
    is a column of categories (see `Dataset`)."""
    choice = args["header"]
    if choice not in (True, False, "auto"):
        raise error(f"header must be true, false or auto, got {choice!r}", span)
    header, rows = read_csv_cells(path, span, {True: "true", False: "false"}.get(choice, "auto"))
    width = len(rows[0][1])
    if width < 2:
        raise error(
            f"'{path}' has one column; a training CSV needs input columns and a target column",
            span,
        )
    target = _column(path, header, args["target"], width, span)
    features = args["features"]
    if features:
        chosen = features if isinstance(features, list) else [features]
        columns = [_column(path, header, f, width, span) for f in chosen]
        if target in columns:
            raise error(f"'{path}': the target column is also listed among the features", span)
    else:
        columns = [c for c in range(width) if c != target]
    x, words = _features(path, rows, columns, header, span)
    layout = Layout(width, target, tuple(columns), tuple(header) if header else None)
    names = tuple(header[c] for c in columns) if header else None
    cells = [r[target].strip() for _, r in rows]
    if all(is_number(w) for w in cells):
        y = _numbers(path, rows, [target], header, span)[:, 0]
        return Dataset(x, y, columns=names, words=words, layout=layout)
    labels = sorted(set(cells))
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[w] for w in cells], np.int64)
    return Dataset(x, y, labels=tuple(labels), columns=names, words=words, layout=layout)


def _features(
    path: Path,
    rows: list[tuple[int, list[str]]],
    columns: list[int],
    header: list[str] | None,
    span: Span | None,
) -> tuple[np.ndarray, dict[int, tuple[str, ...]]]:
    """The feature columns as numbers, a column of words as each cell's index in its
    sorted words (`Dataset.words`, by feature index)."""
    words = {i: _words(rows, c) for i, c in enumerate(columns) if _is_words(rows, c)}
    numeric = [c for i, c in enumerate(columns) if i not in words]
    x = np.empty((len(rows), len(columns)), np.float64)
    x[:, [i for i in range(len(columns)) if i not in words]] = _numbers(
        path, rows, numeric, header, span
    )
    for i, vocabulary in words.items():
        x[:, i] = _codes(path, rows, columns[i], vocabulary, header, span)
    return x, words


def _is_words(rows: list[tuple[int, list[str]]], column: int) -> bool:
    """A column is one of words (categories) when most of its cells are not numbers; a
    column of numbers with a stray word is a column of numbers with a mistake in it."""
    texts = sum(not is_number(r[column].strip()) for _, r in rows)
    return texts * 2 > len(rows)


def _words(rows: list[tuple[int, list[str]]], column: int) -> tuple[str, ...]:
    return tuple(sorted({r[column].strip() for _, r in rows}))


def _codes(
    path: Path,
    rows: list[tuple[int, list[str]]],
    column: int,
    vocabulary: tuple[str, ...],
    header: list[str] | None,
    span: Span | None,
) -> np.ndarray:
    """Each cell's index in the column's words; an empty cell is a missing value."""
    index = {word: i for i, word in enumerate(vocabulary)}
    for line, row in rows:
        if not row[column].strip():
            where = f"'{path}' line {line}, column {column + 1}" + (
                f" ({header[column]})" if header else ""
            )
            raise error(
                f"{where} is empty",
                span,
                help="remove or impute missing values before training",
            )
    return np.array([index[r[column].strip()] for _, r in rows], np.float64)


def _numbers(
    path: Path,
    rows: list[tuple[int, list[str]]],
    columns: list[int],
    header: list[str] | None,
    span: Span | None,
) -> np.ndarray:
    """The chosen columns as float64; a word, NaN or infinity is reported at its cell."""
    out = np.empty((len(rows), len(columns)), np.float64)
    for r, (line, row) in enumerate(rows):
        for c, column in enumerate(columns):
            cell = row[column].strip()
            where = f"'{path}' line {line}, column {column + 1}" + (
                f" ({header[column]})" if header else ""
            )
            if not is_number(cell):
                raise error(f"{where}: {cell!r} is not a number", span)
            value = float(cell)
            if not math.isfinite(value):
                raise error(
                    f"{where} holds {cell!r}",
                    span,
                    help="remove or impute missing and non-finite values before training",
                )
            out[r, c] = value
    return out


def read_npz(path: Path, span: Span | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz file; anything but a valid, pickle-free one is a clear error."""
    with open_regular(path, "data file", MAX_DATA_BYTES, span) as f:
        return npz.read_npz(f, f"'{path}'", MAX_DATA_BYTES, span)


def read_csv_cells(
    path: Path, span: Span | None = None, header: str = "auto"
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """A CSV's header (None without one) and its non-empty rows as (line, cells). With
    header = auto, a first row with any non-number cell is the header."""
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
    names = None
    has_header = header == "true" or (
        header == "auto" and bool(rows) and not all(is_number(c) for c in rows[0][1])
    )
    if has_header and rows:
        names = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise error(f"'{path}' has no data rows", span)
    width = len(names) if names is not None else len(rows[0][1])
    first = rows[0][0] - 1 if names is not None else rows[0][0]
    for line, row in rows:
        if len(row) != width:
            raise error(
                f"'{path}' line {line} has {len(row)} columns, but line {first} has {width}",
                span,
            )
    return names, rows


def read_csv(path: Path, span: Span | None = None) -> np.ndarray:
    """A numeric CSV with an optional header row as a float64 [rows, columns] table."""
    header, rows = read_csv_cells(path, span)
    return _numbers(path, rows, list(range(len(rows[0][1]))), header, span)


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


def is_number(text: str) -> bool:
    """Whether a CSV cell reads as a number (what `float` accepts)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_indices(
    data: Dataset, validation: float, seed: int, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted sample indices of the training and validation parts: a seeded shuffle, or
    with `stratify` (class labels [N]) the same fraction of every class, so a rare class
    is in both parts in proportion."""
    rng = np.random.default_rng(seed + 7919)
    if not stratify or data.y.ndim != 1 or data.y.dtype.kind not in "iu":
        order = rng.permutation(len(data))
        n_val = int(round(len(data) * validation))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    held: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for label in np.unique(data.y):
        members = rng.permutation(np.flatnonzero(data.y == label))
        n_val = int(round(len(members) * validation))
        held.append(members[:n_val])
        kept.append(members[n_val:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def split(
    data: Dataset, validation: float, seed: int, stratify: bool = False
) -> tuple[Dataset, Dataset]:
    """The training and validation parts (see `split_indices`)."""
    kept, held = split_indices(data, validation, seed, stratify)
    return data.take(kept), data.take(held)


DATASETS.add(
    "digits",
    DatasetDef(
        Signature(args=(VALIDATION,)),
        _digits,
        "scikit-learn's 1,797 8x8 handwritten digits, 10 classes; pixels (0..16) are "
        "divided by 16, so inputs lie in [0, 1]; for named outputs, targets `digit` (the "
        "class) and `ink` (the image's mean pixel, standardised over the dataset, [N, 1])",
        targets=_digits_targets,
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
                ArgSpec(
                    name="target",
                    type="any",
                    default=-1,
                    doc="CSV: the target column, by name or 0-based index (-1: the last)",
                ),
                ArgSpec(
                    name="features",
                    type="any",
                    default=[],
                    doc="CSV: the input columns by name or index (default: all but the target)",
                ),
                ArgSpec(
                    name="header",
                    type="any",
                    default="auto",
                    doc="CSV: true or false, whether the first row names the columns "
                    "(auto: when it holds a word)",
                ),
                ArgSpec(
                    name="labels",
                    type="str",
                    default="ids",
                    choices=("ids", "names"),
                    doc="class targets: ids (numbers are class ids from 0) or names (each "
                    "distinct value names a class, ids in sorted order; words always do)",
                ),
            )
        ),
        _file,
        "a user .npz (arrays x, y) or .csv (target column by name or index, default the "
        "last; string labels become class ids); for named outputs, one .npz array or CSV "
        "column named after each output",
        shown=_file_args,
        paths=("path",),
        targets=_file_targets,
    ),
)
