"""Parquet files, through pyarrow (an optional package, imported when a file is read): one
file, or a folder of them read as one table (files in name order, the same columns in
each). Training chooses the columns as a CSV's (`target`, `features`, `exclude`, by name or
index: `data/tables.py`); `predict` reads the columns the model records, by name.

A column's type says what it holds: integers, floats, decimals and booleans are numbers;
strings (dictionary-encoded too) are class names (a target) or categories (a feature, for
`one_hot`). Any other type, and strings that hold numbers, are refused, naming the file and
the column. A null in a feature column of numbers is a missing value (NaN, as an empty CSV
cell); in a target or a column of words it is an error."""

from __future__ import annotations

import os
from collections.abc import Collection
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
    folder_files,
    pick_named,
    recorded_columns,
)
from dnnspec.data.formats.csv import is_number
from dnnspec.data.tables import Layout, encoding, find_column, input_columns, pick_columns
from dnnspec.errors import DiagnosticError, Span, error
from dnnspec.files import open_regular, size_text

SUFFIX = ".parquet"
NUMBERS, WORDS = "numbers", "words"
"""The kinds of column a model reads (`_kind`)."""
MATRIX_ROWS, MATRIX_COLUMNS = 8192, 16
"""The block `_matrix` lays out at a time: 16 float32 columns are a 64-byte cache line of a
row, which a transposed copy fills whole (3.4x the speed of copying 256 at once)."""


def _pyarrow(span: Span | None) -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a message saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise error(
            "reading Parquet files needs pyarrow, which is not installed",
            span,
            help="install it with: pip install 'dnnspec[parquet]' "
            "(in a checkout: pip install -e '.[parquet]')",
        ) from None
    return pyarrow, pyarrow.parquet


def _kind(pa: Any, kind: Any) -> str | None:
    """NUMBERS or WORDS for a column type a model reads, else None."""
    if pa.types.is_dictionary(kind):
        return _kind(pa, kind.value_type)
    if any(
        check(kind)
        for check in (
            pa.types.is_integer,
            pa.types.is_floating,
            pa.types.is_decimal,
            pa.types.is_boolean,
        )
    ):
        return NUMBERS
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return WORDS
    return None


@dataclass(frozen=True)
class _Part:
    """One file of the table: its path, and the table's row its first row is."""

    path: Path
    start: int


@dataclass(frozen=True)
class _Source:
    """A Parquet file or folder, its footers read: its files, the column names, each
    column's type (as in the first file) and kind, and the row count."""

    path: Path
    parts: tuple[_Part, ...]
    names: list[str]
    types: list[str]
    kinds: list[str | None]
    rows: int

    def where(self, row: int, column: int) -> str:
        """`'d/b.parquet' row 4, column 'age'`: a cell, its row counted from 1 in its file."""
        part = next(p for p in reversed(self.parts) if p.start <= row)
        return f"'{part.path}' row {row - part.start + 1}, column '{self.names[column]}'"


def _corrupt(path: Path, exc: Exception, span: Span | None) -> DiagnosticError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return error(
        f"cannot read '{path}': it is not a valid Parquet file ({reason})",
        span,
        help="the file may be truncated or damaged: write it again",
    )


def _files(path: Path, span: Span | None) -> list[Path]:
    """The file, or a folder's .parquet files in name order (any other file is refused)."""
    if not path.is_dir():
        return [path]
    files = folder_files(path)
    for file in files:
        if file.suffix != SUFFIX:
            raise error(
                f"data folder '{path}' holds '{file.name}', which is not a {SUFFIX} file",
                span,
                help=f"a data folder holds only {SUFFIX} files (names starting with . or _ "
                "are skipped): move the other files out",
            )
    if not files:
        raise error(f"data folder '{path}' holds no {SUFFIX} files", span)
    return files


def _open(path: Path, limits: Limits, span: Span | None) -> _Source:
    """The footers of `path`'s files: their columns (the same in every file), row counts
    and the size of their data, checked against the limit before any data is read."""
    pa, pq = _pyarrow(span)
    parts: list[_Part] = []
    first: _Source | None = None
    rows = size = 0
    for file in _files(path, span):
        with open_regular(file, "data file", limits.arrays, span) as f:
            try:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
            except (pa.ArrowException, OSError) as exc:
                raise _corrupt(file, exc, span) from None
        names = list(schema.names)
        twice = [n for n in names if names.count(n) > 1]
        if twice:
            raise error(f"'{file}' has two columns named '{twice[0]}'", span)
        kinds = [_kind(pa, t) for t in schema.types]
        if first is None:
            first = _Source(path, (), names, [str(t) for t in schema.types], kinds, 0)
        elif names != first.names:
            raise error(
                f"'{file}' has columns {', '.join(names)}, but '{parts[0].path}' has "
                f"{', '.join(first.names)}",
                span,
                help="every file of a data folder holds the same columns, in the same order",
            )
        else:
            for c, (kind, given) in enumerate(zip(kinds, schema.types, strict=True)):
                if kind != first.kinds[c]:
                    raise error(
                        f"'{file}' column '{names[c]}' is of type {given}, but in "
                        f"'{parts[0].path}' it is {first.types[c]}",
                        span,
                        help="every file of a data folder holds the same columns, numbers "
                        "in the one as in the other",
                    )
        parts.append(_Part(file, rows))
        rows += meta.num_rows
        groups = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        size += max(groups, meta.num_rows * meta.num_columns * 8)  # read as float64
    assert first is not None  # _files returns at least one file
    if size > limits.arrays:
        raise error(
            f"'{path}' holds {size_text(size)} of data, over the limit of "
            f"{size_text(limits.arrays)}",
            span,
        )
    if rows == 0:
        raise error(f"'{path}' has no data rows", span)
    return _Source(path, tuple(parts), first.names, first.types, first.kinds, rows)


def _readable(source: _Source, columns: list[int], span: Span | None) -> None:
    """Refuse, before any data is read, a chosen column of a type a model cannot read."""
    for c in columns:
        if source.kinds[c] is None:
            raise error(
                f"'{source.parts[0].path}' column '{source.names[c]}' is of type "
                f"{source.types[c]}, which a model cannot read",
                span,
                help="a model reads numbers (integer, floating-point, decimal or boolean "
                "columns) and words (string columns: class names, or categories for "
                "one_hot); convert the column, or leave it out with exclude",
            )


def _normal(pa: Any, source: _Source, column: int) -> Any:
    """The type a column is read as: numbers as float64, words as strings."""
    return pa.float64() if source.kinds[column] == NUMBERS else pa.large_string()


def _load(
    source: _Source,
    columns: list[int],
    limits: Limits,
    span: Span | None,
    features: Collection[int] = (),
) -> dict[int, Any]:
    """The chosen columns of every file as one pyarrow array each (see `_normal`), a column
    of `features` that every file stores as float32 as it is stored (as `_streamed` keeps
    a row group's: converted to float32 for the graphs anyway, to the same values)."""
    pa, pq = _pyarrow(span)
    _readable(source, columns, span)
    names = [source.names[c] for c in columns]
    chunks: dict[int, list[Any]] = {c: [] for c in columns}
    for part in source.parts:
        with open_regular(part.path, "data file", limits.arrays, span) as f:
            try:
                table = pq.ParquetFile(f).read(columns=names)
            except (pa.ArrowException, OSError) as exc:
                raise _corrupt(part.path, exc, span) from None
        for c, name in zip(columns, names, strict=True):
            chunks[c] += table.column(name).chunks
    loaded: dict[int, Any] = {}
    for c in columns:
        stored = c in features and all(chunk.type == pa.float32() for chunk in chunks[c])
        kind = pa.float32() if stored else _normal(pa, source, c)
        cast = chunks[c] if stored else [chunk.cast(kind, safe=False) for chunk in chunks[c]]
        loaded[c] = pa.chunked_array(cast, type=kind)
    return loaded


def _dtype(values: Any) -> type[np.floating[Any]]:
    """float32 for a column read as float32 (`_narrow`), else float64."""
    return np.float32 if str(values.type) == "float" else np.float64


def _streamed(pa: Any, source: _Source, column: int, values: Any, feature: bool) -> Any:
    """A column of a streamed row group as it is read: a float32 feature column as it is
    stored (the graphs read float32, so a row group is not widened to float64 on its way),
    any other as `_normal` makes it."""
    if feature and values.type == pa.float32():
        return values
    return values.cast(_normal(pa, source, column), safe=False)


def _nulls(values: Any) -> np.ndarray:
    return np.asarray(values.is_null().to_numpy(zero_copy_only=False), bool)


def _numbers(
    source: _Source, column: int, values: Any, span: Span | None, empty: str | None
) -> np.ndarray:
    """A column of numbers as float64 (float32 where it is read as float32: `_narrow`); a
    null is NaN, or with `empty` (what to do about it) an error at its cell, as is a NaN or
    infinity in the file."""
    x = np.asarray(values.to_numpy(zero_copy_only=False), _dtype(values))
    nulls = _nulls(values)
    if nulls.any() and empty is not None:
        raise error(
            f"{source.where(int(np.argmax(nulls)), column)} is empty (null)", span, help=empty
        )
    bad = ~np.isfinite(x) & ~nulls
    if bad.any():
        row = int(np.argmax(bad))
        raise error(
            f"{source.where(row, column)} holds {x[row]}",
            span,
            help="remove or impute missing and non-finite values before training",
        )
    return x


def _words(source: _Source, column: int, values: Any, span: Span | None) -> list[str]:
    """A column of words; one that mostly holds numbers is numbers stored as text."""
    cells: list[str | None] = values.to_pylist()
    if None in cells:
        raise error(
            f"{source.where(cells.index(None), column)} is empty (null)",
            span,
            help="remove or impute missing values before training",
        )
    texts = [c for c in cells if c is not None]
    numbers = [i for i, c in enumerate(texts) if is_number(c)]
    if len(numbers) * 2 > len(texts):
        raise error(
            f"{source.where(numbers[0], column)} holds {texts[numbers[0]]!r}, a number "
            f"stored as text: the column is of type {source.types[column]}",
            span,
            help="write the column as numbers (pandas: pd.to_numeric); a string column is "
            "read as words: class names, or categories for one_hot",
        )
    return texts


def _classes(words: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each word's id in the sorted distinct words (as float64 codes), and the words."""
    vocabulary = sorted(set(words))
    index = {w: i for i, w in enumerate(vocabulary)}
    return np.array([index[w] for w in words], np.float64), tuple(vocabulary)


def _target(
    source: _Source, column: int, values: Any, span: Span | None
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """A target column: numbers, or words as class ids in sorted order (and the words)."""
    if source.kinds[column] == NUMBERS:
        empty = "every sample needs a target: drop the rows without one"
        return _numbers(source, column, values, span, empty), None
    ids, classes = _classes(_words(source, column, values, span))
    return ids.astype(np.int64), classes


@dataclass(frozen=True)
class _Features:
    """The feature columns as numbers, words by feature index, and where each column with
    missing values has its first (see `Arrays`)."""

    x: np.ndarray
    words: dict[int, tuple[str, ...]]
    missing: dict[int, str]


def _matrix(columns: list[int], loaded: dict[int, Any], span: Span | None) -> np.ndarray | None:
    """Feature columns that are all float32 without nulls as one float32 [rows, columns]
    array, laid out `MATRIX_ROWS` rows and `MATRIX_COLUMNS` columns at a time (those
    columns stacked, then transposed in one copy) rather than written into it column by
    column; None where a column is of another type or has nulls, or a cell holds a NaN or
    an infinity (`_numbers` then reads the columns one by one and names it)."""
    pa, _ = _pyarrow(span)
    if not columns or any(loaded[c].type != pa.float32() or loaded[c].null_count for c in columns):
        return None
    table = pa.table([loaded[c] for c in columns], names=[str(i) for i in range(len(columns))])
    x = np.empty((table.num_rows, len(columns)), np.float32)
    start = 0
    for batch in table.to_batches(max_chunksize=MATRIX_ROWS):
        block = x[start : start + batch.num_rows]
        stored = [column.to_numpy() for column in batch.columns]
        for c in range(0, len(stored), MATRIX_COLUMNS):
            block[:, c : c + MATRIX_COLUMNS].T[...] = np.stack(stored[c : c + MATRIX_COLUMNS])
        if not np.isfinite(block).all():
            return None
        start += batch.num_rows
    return x


def _features(
    source: _Source, columns: list[int], loaded: dict[int, Any], span: Span | None
) -> _Features:
    whole = _matrix(columns, loaded, span)
    if whole is not None:
        return _Features(whole, {}, {})
    narrow = bool(columns) and all(_dtype(loaded[c]) is np.float32 for c in columns)
    x = np.empty((source.rows, len(columns)), np.float32 if narrow else np.float64)
    words: dict[int, tuple[str, ...]] = {}
    missing: dict[int, str] = {}
    for i, c in enumerate(columns):
        if source.kinds[c] == WORDS:
            x[:, i], words[i] = _classes(_words(source, c, loaded[c], span))
            continue
        x[:, i] = _numbers(source, c, loaded[c], span, None)
        nulls = _nulls(loaded[c])
        if nulls.any():
            missing[i] = source.where(int(np.argmax(nulls)), c)
    return _Features(x, words, missing)


@dataclass(frozen=True)
class _Chosen:
    """The columns a training read takes: each target's (in `Wanted.outputs` order) and
    each input's, as a CSV's are chosen (see the module docstring)."""

    targets: list[int]
    inputs: dict[str, list[int]]

    def every(self) -> list[int]:
        return sorted({c for columns in self.inputs.values() for c in columns} | set(self.targets))


def _choose(
    source: _Source, path: Path, args: dict[str, Any], wanted: Wanted, span: Span | None
) -> _Chosen:
    header, width = source.names, len(source.names)
    if wanted.named:
        targets = [find_column(path, header, output, width, span) for output in wanted.outputs]
    elif width < 2:
        raise error(
            f"'{path}' has one column; training data needs input columns and a target column",
            span,
        )
    else:
        targets = [find_column(path, header, args["target"], width, span)]
    return _Chosen(targets, input_columns(path, header, width, args, targets, wanted.inputs, span))


def _arrays(
    source: _Source, chosen: _Chosen, loaded: dict[int, Any], wanted: Wanted, span: Span | None
) -> Arrays:
    """The chosen columns of `source`'s rows (`loaded`) as a training read returns them."""
    header = source.names
    features = {name: _features(source, cs, loaded, span) for name, cs in chosen.inputs.items()}
    found: dict[str, np.ndarray] = {}
    labels: dict[str, tuple[str, ...]] = {}
    for output, column in zip(wanted.outputs, chosen.targets, strict=True):
        found[output], classes = _target(source, column, loaded[column], span)
        if classes is not None:
            labels[output] = classes
    layout = None
    if not wanted.named and len(chosen.inputs) == 1:
        (columns,) = chosen.inputs.values()
        layout = Layout(len(header), chosen.targets[0], tuple(columns), tuple(header))
    return Arrays(
        {name: f.x for name, f in features.items()},
        found,
        labels,
        {name: tuple(header[c] for c in cs) for name, cs in chosen.inputs.items()},
        {name: f.words for name, f in features.items()},
        layout,
        {name: f.missing for name, f in features.items()},
    )


def _read(
    path: Path, args: dict[str, Any], wanted: Wanted, limits: Limits, span: Span | None
) -> Arrays:
    """The inputs' and the target columns, chosen as a CSV's (see the module docstring)."""
    source = _open(path, limits, span)
    chosen = _choose(source, path, args, wanted, span)
    features = {c for columns in chosen.inputs.values() for c in columns}
    loaded = _load(source, chosen.every(), limits, span, features)
    arrays = _arrays(source, chosen, loaded, wanted, span)
    del loaded  # the table's Arrow buffers go back to the system, not kept by the pool
    _pyarrow(span)[0].default_memory_pool().release_unused()
    return arrays


def _feed_inputs(path: Path, feed: Feed, limits: Limits) -> Batch:
    """Each input of a model of several: the columns it was trained on, by name."""
    what = f"'{path}'"
    wanted = recorded_columns(feed, what)
    source = _open(path, limits, None)
    chosen = {name: pick_named(source.names, cs, name, what) for name, cs in wanted.items()}
    loaded = _load(source, sorted({c for cs in chosen.values() for c in cs}), limits, None)
    arrays: dict[str, np.ndarray] = {}
    for name, columns in chosen.items():
        arrays[name] = np.empty((source.rows, len(columns)), np.float64)
        for j, c in enumerate(columns):
            if source.kinds[c] == WORDS:
                raise error(
                    f"'{source.parts[0].path}' column '{source.names[c]}' holds words, but "
                    f"the model's input '{name}' reads numbers from it"
                )
            empty = "the model reads a number in every cell"
            arrays[name][:, j] = _numbers(source, c, loaded[c], None, empty)
    return Batch(arrays, text=True, picked=True)


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    """Rows of features [N, F] by the columns the model records (words of a one_hot column
    as their index in its categories, -1 when unseen); any other input every column, as
    numbers; several inputs each by its own columns. Numbers come back as float64, which
    the caller converts as CSV text's."""
    if len(feed.inputs) > 1:
        return _feed_inputs(path, feed, limits)
    ((name, shape),) = feed.inputs.items()
    source = _open(path, limits, None)
    width = len(source.names)
    picked = shape is not None and len(shape) == 2
    if picked:
        assert shape is not None
        model_width = shape[1] if isinstance(shape[1], int) else -1
        where = f"'{path}'"
        columns = pick_columns(
            width, source.names, feed.expects, model_width, feed.drop_target, where
        )
    else:
        columns = list(range(width))
    loaded = _load(source, sorted(set(columns)), limits, None)
    known = encoding(feed.expects if picked else None)
    x = np.empty((source.rows, len(columns)), np.float64)
    for j, c in enumerate(columns):
        words = source.kinds[c] == WORDS
        if words != (j in known.categories):
            holds, reads = ("words", "numbers") if words else ("numbers", "words")
            raise error(
                f"'{source.parts[0].path}' column '{source.names[c]}' holds {holds}, but the "
                f"model reads {reads} from it"
            )
        if words:
            codes = known.categories[j]
            x[:, j] = [codes.get(w, -1.0) for w in _words(source, c, loaded[c], None)]
        else:
            empty = None if j in known.imputed else "the model reads a number in every cell"
            x[:, j] = _numbers(source, c, loaded[c], None, empty)
    return Batch({name: x}, text=True, picked=picked)


@dataclass(frozen=True)
class Streamable:
    """A Parquet file or folder read one row group at a time (`data/stream.py`): `read(i)`
    gives row group i's chosen columns as a training read gives the whole table's (words
    indexed in that group's own sorted words; a cell is named by its row in its file).
    `width`: the chosen columns' count."""

    source: _Source
    chosen: _Chosen
    wanted: Wanted
    groups: tuple[tuple[Path, int, int], ...]
    """Each row group's file, its index in the file and the table row it starts at."""
    sizes: tuple[int, ...]
    span: Span | None
    footers: dict[Path, tuple[tuple[int, int], Any]]
    """Each file's footer as read once, and the size and modification time it was read at:
    a footer takes as long to parse as a row group to read (a few MiB for 128 groups of 257
    columns), so a group of an unchanged file is read by it (`_file`)."""

    @property
    def rows(self) -> int:
        return self.source.rows

    @property
    def width(self) -> int:
        return len(self.chosen.every())

    @property
    def where(self) -> str:
        return ", ".join(f"'{p.path}'" for p in self.source.parts)

    def _file(self, path: Path) -> Any:
        """`path` opened for reading, by the footer read before where the file is unchanged
        since (a file written again has its footer read again). Without pre-buffering: with
        a footer given, the pre-buffered reads of a row group outlived it (peak RSS of the
        1 GiB benchmark table streamed 0.75-1.1 GB in five of eight runs, 0.35 without)."""
        _, pq = _pyarrow(self.span)
        stamp, footer = self.footers[path]
        known = footer if _stamp(path) == stamp else None
        return pq.ParquetFile(path, metadata=known, pre_buffer=False)

    def read(self, i: int) -> Arrays:
        pa, _ = _pyarrow(self.span)
        path, group, start = self.groups[i]
        every = self.chosen.every()
        try:
            with self._file(path) as file:  # closed now, its read buffers with it
                table = file.read_row_group(group, columns=[self.source.names[c] for c in every])
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(path, exc, self.span) from None
        features = {c for cs in self.chosen.inputs.values() for c in cs}
        names = self.source.names
        loaded = {
            c: _streamed(pa, self.source, c, table.column(names[c]), c in features) for c in every
        }
        parts = tuple(_Part(p.path, p.start - start) for p in self.source.parts)
        rows = replace(self.source, parts=parts, rows=table.num_rows)
        arrays = _arrays(rows, self.chosen, loaded, self.wanted, self.span)
        del table, loaded  # the group's Arrow buffers go back to the system, not kept
        pa.default_memory_pool().release_unused()  # by the pool for reuse
        return arrays


def _stamp(path: Path) -> tuple[int, int]:
    """A file's size and modification time (ns): whether it was written since."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def streamable(path: Path, args: dict[str, Any], wanted: Wanted, span: Span | None) -> Streamable:
    """`path` as a streamed read takes it, its columns chosen as `_read` chooses them, from
    the footers alone (no size limit: a streamed read holds a budget, not the file)."""
    _, pq = _pyarrow(span)
    source = _open(path, Limits(1 << 62, 1 << 62), span)
    chosen = _choose(source, path, args, wanted, span)
    _readable(source, chosen.every(), span)
    groups: list[tuple[Path, int, int]] = []
    sizes: list[int] = []
    footers: dict[Path, tuple[tuple[int, int], Any]] = {}
    for part in source.parts:
        try:
            stamp = _stamp(part.path)
            meta = pq.ParquetFile(part.path).metadata
        except Exception as exc:  # read a moment ago: a file changed since is damaged
            raise _corrupt(part.path, exc, span) from None
        footers[part.path] = stamp, meta
        first = part.start
        for g in range(meta.num_row_groups):
            groups.append((part.path, g, first))
            sizes.append(meta.row_group(g).num_rows)
            first += sizes[-1]
    return Streamable(source, chosen, wanted, tuple(groups), tuple(sizes), span, footers)


FORMAT = Format((SUFFIX,), _feed, _read, ("target", "features", "exclude", "memory"), folders=True)
