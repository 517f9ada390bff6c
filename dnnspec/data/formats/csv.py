"""CSV tables: training reads the target column (by name or index, default the last) and
the feature columns (default every other one), or for named outputs one column per output
name; `predict` reads the columns the model records (`dnnspec.expects`), by name or as the
training file held them. A column of words is a column of class names (a target) or of
categories (a feature, for `one_hot`); every other cell must be a finite number."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.formats.base import (
    Arrays,
    Batch,
    Feed,
    Format,
    Limits,
    Wanted,
    pick_named,
    recorded_columns,
)
from dnnspec.data.tables import Layout, encoding, find_column, input_columns, pick_columns
from dnnspec.errors import Span, error
from dnnspec.files import read_bytes

Rows = list[tuple[int, list[str]]]
"""A CSV's non-empty rows as (line number, cells)."""


def is_number(text: str) -> bool:
    """Whether a CSV cell reads as a number (what `float` accepts)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_cells(
    path: Path, limit: int, span: Span | None = None, header: str = "auto"
) -> tuple[list[str] | None, Rows]:
    """A CSV's header (None without one) and its non-empty rows as (line, cells). With
    header = auto, a first row with any non-number cell is the header."""
    data = read_bytes(path, "data file", limit, span)
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
        _unique(f"'{path}'", names, span)
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


def _unique(what: str, names: list[str], span: Span | None) -> None:
    """Refuse a header naming two columns alike: a column is found by its name, so the
    second would never be read."""
    seen: dict[str, int] = {}
    for column, name in enumerate(names):
        if name and name in seen:
            raise error(
                f"{what} has two columns named '{name}' (columns {seen[name] + 1} and "
                f"{column + 1})",
                span,
                help="rename one of them: columns are found by their header name",
            )
        seen[name] = column


def read_csv(path: Path, limit: int, span: Span | None = None) -> np.ndarray:
    """A numeric CSV with an optional header row as a float64 [rows, columns] table."""
    header, rows = read_csv_cells(path, limit, span)
    return _numbers(path, rows, list(range(len(rows[0][1]))), header, span)


@dataclass(frozen=True)
class _Table:
    """A CSV as read for training: its path, header (None without one) and rows."""

    path: Path
    header: list[str] | None
    rows: Rows

    @property
    def width(self) -> int:
        return len(self.rows[0][1])


def _table(path: Path, args: dict[str, Any], limits: Limits, span: Span | None) -> _Table:
    choice = args["header"]
    if choice not in (True, False, "auto"):
        raise error(f"header must be true, false or auto, got {choice!r}", span)
    header, rows = read_csv_cells(
        path, limits.text, span, {True: "true", False: "false"}.get(choice, "auto")
    )
    return _Table(path, header, rows)


def _read(
    path: Path, args: dict[str, Any], wanted: Wanted, limits: Limits, span: Span | None
) -> Arrays:
    """Inputs and target from a CSV: the target column by name or index (default the last),
    the feature columns by name (default every other column; for a model of several
    inputs, `features` lists each one's); a target column of words is a class label
    column, mapped to ids in sorted order, and a feature column of words is a column of
    categories (see `Arrays.words`)."""
    if wanted.named:
        return _read_named(path, args, wanted, limits, span)
    table = _table(path, args, limits, span)
    header, width = table.header, table.width
    if width < 2:
        raise error(
            f"'{path}' has one column; a training CSV needs input columns and a target column",
            span,
        )
    target = find_column(path, header, args["target"], width, span)
    chosen = input_columns(path, header, width, args, [target], wanted.inputs, span)
    found, output = _inputs(table, chosen, span), wanted.outputs[0]
    y, labels = _target(table, target, span)
    classes = {output: labels} if labels is not None else {}
    layout = None
    if len(chosen) == 1:
        (columns,) = chosen.values()
        layout = Layout(width, target, tuple(columns), tuple(header) if header else None)
    return replace(found, targets={output: y}, labels=classes, layout=layout)


def _inputs(table: _Table, chosen: dict[str, list[int]], span: Span | None) -> Arrays:
    """Each input's columns read (see `_features`); the targets are the caller's."""
    header = table.header
    inputs: dict[str, np.ndarray] = {}
    words: dict[str, dict[int, tuple[str, ...]]] = {}
    missing: dict[str, dict[int, str]] = {}
    for name, columns in chosen.items():
        inputs[name], words[name], missing[name] = _features(table, columns, span)
    names = {n: tuple(header[c] for c in cs) for n, cs in chosen.items()} if header else {}
    return Arrays(inputs, {}, {}, names, words, None, missing)


def _read_named(
    path: Path, args: dict[str, Any], wanted: Wanted, limits: Limits, span: Span | None
) -> Arrays:
    """A CSV's targets for named outputs: the columns named like the outputs (by header
    name); the inputs are the other columns, or those `features` lists."""
    names = wanted.outputs
    table = _table(path, args, limits, span)
    header = table.header
    if header is None:
        raise error(
            f"'{path}' has no header row, so the target columns of outputs "
            f"{', '.join(names)} cannot be found",
            span,
            help="give the file a header naming a column after each output",
        )
    width = len(header)
    picked = [find_column(path, header, output, width, span) for output in names]
    chosen = input_columns(path, header, width, args, picked, wanted.inputs, span)
    found = _inputs(table, chosen, span)
    targets: dict[str, np.ndarray] = {}
    labels: dict[str, tuple[str, ...]] = {}
    for output, column in zip(names, picked, strict=True):
        targets[output], classes = _target(table, column, span)
        if classes is not None:
            labels[output] = classes
    return replace(found, targets=targets, labels=labels)


def _target(
    table: _Table, column: int, span: Span | None
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """A target column: numbers, or words as class ids in sorted order (and the words)."""
    cells = [r[column].strip() for _, r in table.rows]
    if all(is_number(w) for w in cells):
        return _numbers(table.path, table.rows, [column], table.header, span)[:, 0], None
    classes = sorted(set(cells))
    index = {word: i for i, word in enumerate(classes)}
    return np.array([index[w] for w in cells], np.int64), tuple(classes)


def _features(
    table: _Table, columns: list[int], span: Span | None
) -> tuple[np.ndarray, dict[int, tuple[str, ...]], dict[int, str]]:
    """The feature columns as numbers, a column of words as each cell's index in its
    sorted words (by feature index); an empty cell of numbers as NaN, with where the first
    one of each column is (`impute` fills them; the runtime refuses those it does not)."""
    path, rows, header = table.path, table.rows, table.header
    words = {i: _words(rows, c) for i, c in enumerate(columns) if _is_words(rows, c)}
    numeric = [c for i, c in enumerate(columns) if i not in words]
    positions = [i for i in range(len(columns)) if i not in words]
    gaps: dict[int, str] = {}
    x = np.empty((len(rows), len(columns)), np.float64)
    x[:, positions] = _numbers(path, rows, numeric, header, span, gaps)
    for i, vocabulary in words.items():
        x[:, i] = _codes(path, rows, columns[i], vocabulary, header, span)
    return x, words, {positions[c]: where for c, where in gaps.items()}


def _is_words(rows: Rows, column: int) -> bool:
    """A column is one of words (categories) when most of its cells are not numbers; a
    column of numbers with a stray word is a column of numbers with a mistake in it."""
    cells = [cell for _, r in rows if (cell := r[column].strip())]  # empty: missing
    texts = sum(not is_number(cell) for cell in cells)
    return texts * 2 > len(cells)


def _words(rows: Rows, column: int) -> tuple[str, ...]:
    return tuple(sorted({r[column].strip() for _, r in rows}))


def _where(path: Path, line: int, column: int, header: list[str] | None) -> str:
    """`'data.csv' line 4, column 2 (age)`: a cell, for messages."""
    return f"'{path}' line {line}, column {column + 1}" + (f" ({header[column]})" if header else "")


def _codes(
    path: Path,
    rows: Rows,
    column: int,
    vocabulary: tuple[str, ...],
    header: list[str] | None,
    span: Span | None,
) -> np.ndarray:
    """Each cell's index in the column's words; an empty cell is a missing value."""
    index = {word: i for i, word in enumerate(vocabulary)}
    for line, row in rows:
        if not row[column].strip():
            raise error(
                f"{_where(path, line, column, header)} is empty",
                span,
                help="remove or impute missing values before training",
            )
    return np.array([index[r[column].strip()] for _, r in rows], np.float64)


def _numbers(
    path: Path,
    rows: Rows,
    columns: list[int],
    header: list[str] | None,
    span: Span | None,
    gaps: dict[int, str] | None = None,
) -> np.ndarray:
    """The chosen columns as float64; a word, NaN or infinity is reported at its cell. With
    `gaps`, an empty cell reads as NaN and `gaps` records where each column's first is."""
    out = np.empty((len(rows), len(columns)), np.float64)
    for r, (line, row) in enumerate(rows):
        for c, column in enumerate(columns):
            cell = row[column].strip()
            if not cell and gaps is not None:
                gaps.setdefault(c, _where(path, line, column, header))
                out[r, c] = math.nan
                continue
            if not is_number(cell):
                raise error(f"{_where(path, line, column, header)}: {cell!r} is not a number", span)
            value = float(cell)
            if not math.isfinite(value):
                raise error(
                    f"{_where(path, line, column, header)} holds {cell!r}",
                    span,
                    help="remove or impute missing and non-finite values before training",
                )
            out[r, c] = value
    return out


def _cell_number(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise error(f"{where}: {cell!r} is not a number") from None
    if not np.isfinite(value):
        raise error(f"{where} holds {cell!r}", help="remove or impute non-finite values")
    return value


def encode_cells(
    rows: Rows,
    columns: list[int],
    header: list[str] | None,
    expected: dict[str, Any] | None,
    what: str,
) -> np.ndarray:
    """The chosen cells as the model's raw input: numbers as numbers, the words of a
    one-hot column as their index in its categories (-1, all zeros, when unseen), an empty
    cell of an imputed column as NaN (model.onnx fills it)."""
    known = encoding(expected)
    lookup, imputed = known.categories, known.imputed
    out = np.empty((len(rows), len(columns)), np.float64)
    for r, (line, row) in enumerate(rows):
        for j, column in enumerate(columns):
            cell = row[column].strip()
            if j in imputed and not cell:
                out[r, j] = math.nan
                continue
            if j in lookup:
                out[r, j] = lookup[j].get(cell, -1.0)
                continue
            where = f"{what} line {line}, column {column + 1}" + (
                f" ({header[column]})" if header else ""
            )
            out[r, j] = _cell_number(cell, where)
    return out


def _is_foreign_header(first: list[str], expected: dict[str, Any] | None) -> bool:
    """Whether a first row is a header of other names: every cell a word, one at least
    neither a category of a column of words nor a class name (a row of data holds numbers,
    or only categories and a target's class)."""
    known = {str(word) for word in (expected or {}).get("classes") or []}
    known |= {
        str(word)
        for column in (expected or {}).get("columns", [])
        for step in column["steps"]
        for word in step.get("categories") or []
    }
    words = [c for c in first if c and not is_number(c)]
    return len(words) == len(first) and any(w not in known for w in words)


def read_prediction_csv(
    path: Path, expected: dict[str, Any] | None, raw_width: int, drop_target: bool, limit: int
) -> np.ndarray:
    """A CSV of raw rows for `dnnspec predict`, as float64 model input. When the model
    records its column names, the first row is a header if it holds any of them; else (as
    for training data) if it holds a word."""
    what = f"'{path}'"
    _, rows = read_csv_cells(path, limit, None, "false")
    names = [c["name"] for c in expected["columns"]] if expected else []
    first = [c.strip() for c in rows[0][1]]
    if names and all(isinstance(n, str) for n in names):
        is_header = any(n in first for n in names)
        if not is_header and _is_foreign_header(first, expected):
            raise error(
                f"{what} has a header row, but it names none of the columns the model reads",
                help=f"the model reads the columns {', '.join(names)}; the file has "
                f"{', '.join(first)} (rename them, or remove the header to read the columns "
                "by position)",
            )
    else:
        is_header = not all(is_number(c) for c in first)
    header = None
    if is_header:
        header, rows = first, rows[1:]
        _unique(what, header, None)
        if not rows:
            raise error(f"{what} has no data rows")
    columns = pick_columns(len(first), header, expected, raw_width, drop_target, what)
    return encode_cells(rows, columns, header, expected, what)


def _feed_inputs(path: Path, feed: Feed, limits: Limits) -> Batch:
    """Each input of a model of several: the columns it was trained on, by name."""
    what = f"'{path}'"
    wanted = recorded_columns(feed, what)
    header, rows = read_csv_cells(path, limits.text)
    arrays = {
        name: encode_cells(rows, pick_named(header, columns, name, what), header, None, what)
        for name, columns in wanted.items()
    }
    return Batch(arrays, text=True, picked=True)


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    """Rows of features [N, F] by the columns the model records; any other input the
    file's numbers as they are; several inputs each by its own columns."""
    if len(feed.inputs) > 1:
        return _feed_inputs(path, feed, limits)
    ((name, shape),) = feed.inputs.items()
    if shape is not None and len(shape) == 2:
        width = shape[1] if isinstance(shape[1], int) else -1
        table = read_prediction_csv(path, feed.expects, width, feed.drop_target, limits.text)
        return Batch({name: table}, text=True, picked=True)
    return Batch({name: read_csv(path, limits.text)}, text=True)


FORMAT = Format((".csv",), _feed, _read, ("target", "features", "exclude", "header"))
