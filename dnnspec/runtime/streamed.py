"""Training data larger than its memory budget: a Parquet `data file(...)` whose table would
not fit `memory` (a quarter of RAM unless the spec says) is streamed (`data/stream.py`).

One pass before training reads every row group once. It checks each group as in-memory
data is checked (the same `conform`), digests it (a resumed run must see the same samples;
hashed on a thread while the next group is read), gathers what fitting the preprocessing
reads of the training rows (`Summary`: per-column moments, the distinct values a median, a
most frequent value or `one_hot` needs, the words of each column of words) and keeps the
validation and test rows, chosen by a seeded hash of the row index. What needs every row
is checked once the pass is over, with the in-memory messages: the words of a column (a
group's own words index its cells until then; targets given as words stand in as class 0
meanwhile), and the first missing cell of each column. Training then reads the training
rows group by group, each group's words indexed by the whole table's. Data that fits the
budget is read whole, as before, so its runs are unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.check.shapes import TypedModel
from dnnspec.data.dataset import digest_arrays
from dnnspec.data.datasets import Dataset, file_dataset, file_wanted, locate_file, numeric_inputs
from dnnspec.data.formats import FORMATS, format_for
from dnnspec.data.formats.base import Arrays
from dnnspec.data.formats.parquet import Streamable, streamable
from dnnspec.data.stream import (
    Chunked,
    Counts,
    Moments,
    Source,
    Streamed,
    budget_rows,
    give_back_freed,
    hash_split,
    trim,
)
from dnnspec.errors import Span, error
from dnnspec.files import size_text
from dnnspec.ir import Call, TrainSpec
from dnnspec.runtime.columns import check_width, fit_preprocess, fitted_columns, transform
from dnnspec.runtime.data import head_targets
from dnnspec.runtime.targets import fit_targets
from dnnspec.schema import arg_float
from dnnspec.training.losses import LOSSES
from dnnspec.training.preprocess import PREPROCESS, Affine, Impute, Preprocessing

AUTO_FRACTION = 0.25
"""The share of the machine's memory data may take before it is streamed (`memory = "auto"`)."""
UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
UNITS |= {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}

Conform = Callable[[Dataset], tuple[Dataset, int | None]]
"""Data preparation's check and cast of loaded data for the model, with its class count."""


def _constant(spread: np.ndarray) -> str | None:
    flat = np.flatnonzero(spread == 0)
    return f"feature column {int(flat[0])} is constant on the training split" if len(flat) else None


def _standardize(m: Moments, c: list[int]) -> tuple[np.ndarray, np.ndarray] | str:
    return _constant(m.std[c]) or (m.mean[c], 1.0 / m.std[c])


def _min_max(m: Moments, c: list[int]) -> tuple[np.ndarray, np.ndarray] | str:
    spread = m.high[c] - m.low[c]
    return _constant(spread) or (m.low[c], 1.0 / spread)


ONE_PASS = {"standardize": _standardize, "min_max": _min_max}
"""Each scaling step's fit from merged moments, as `training/preprocess.py` fits it from
the rows (a scaling step without one is refused for streamed data)."""


def memory_budget(value: Any, span: Span | None) -> int:
    """`"2 GiB"`, `"512 MB"` or `"auto"` (AUTO_FRACTION of the machine's memory) in bytes."""
    text = str(value).strip().lower()
    if text == "auto":
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * AUTO_FRACTION)
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    if found is None or found.group(2) not in UNITS or float(found.group(1)) <= 0:
        raise error(
            f"memory = {value!r} is not a size",
            span,
            help='write a size such as "512 MiB" or "2 GiB", or "auto" (a quarter of RAM)',
        )
    return int(float(found.group(1)) * UNITS[found.group(2)])


class Summary:
    """The training rows' statistics as one pass gathers them, read by `fit_preprocess`
    (`runtime/columns.py`'s `Fit`): NaN-aware moments of every column, the value counts of
    the columns whose median, most frequent value or categories are fitted (held within
    the memory budget), the words seen in each one_hot column of words, and the moments
    of each value output's targets (`scale_target`)."""

    def __init__(self, sample: Dataset, train: TrainSpec, budget: int) -> None:
        counted, encoded = fitted_columns(train, sample)
        self.words = {c: set[str]() for c in encoded if c in sample.words}
        self.counts = {c: Counts() for c in counted if c not in sample.words}
        self.moments, self.targets = Moments(), dict[str, Moments]()
        self.budget, self.span = budget, train.data.span
        self.vocabulary: dict[int, tuple[str, ...]] = {}
        """Each column of words' words in the whole table, once the pass is over."""

    def add(
        self, x: np.ndarray, words: dict[int, tuple[str, ...]], targets: dict[str, Any]
    ) -> None:
        """Training rows: `x` [rows, columns] (NaN where missing; a column of words holds
        indices into its `words`) and the value outputs' targets."""
        self.moments.add(x)
        for c, seen in self.words.items():
            seen |= {words[c][i] for i in np.unique(x[:, c]).astype(np.int64).tolist()}
        for c, counts in self.counts.items():
            counts.add(x[:, c])
        held = sum(c.nbytes for c in self.counts.values())
        if held > self.budget:
            raise error(
                f"the distinct values that preprocessing counts (a median, a most frequent "
                f"value, one_hot's categories) take over {size_text(self.budget)}, the data's "
                "memory budget",
                self.span,
                help="impute with strategy = mean or constant, or raise the budget: "
                "file(..., memory = ...)",
            )
        for output, y in targets.items():
            units = y.shape[-1] if y.ndim > 1 else 1
            self.targets.setdefault(output, Moments()).add(y.reshape(-1, units))

    def fills(self, columns: list[int], args: dict[str, Any]) -> np.ndarray | str:
        strategy = args["strategy"]
        if strategy == "constant":
            return np.full(len(columns), float(args["fill"]))
        empty = [i for i, c in enumerate(columns) if self.moments.count[c] == 0]
        if empty:
            return f"feature column {empty[0]} has no values on the training split"
        if strategy == "mean":
            mean: np.ndarray = self.moments.mean[columns]
            return mean
        if strategy == "median":
            return np.array([self.counts[c].median() for c in columns])
        return np.array([self.counts[c].most_frequent() for c in columns])

    def gaps(self, columns: list[int]) -> np.ndarray:
        gaps: np.ndarray = self.moments.missing[columns] > 0
        return gaps

    def impute(self, step: Impute) -> None:
        for c, value in zip(step.columns, step.fill.tolist(), strict=True):
            if c in self.counts and self.moments.missing[c]:
                self.counts[c].add(np.array([value]), int(self.moments.missing[c]))
        self.moments.fill(list(step.columns), step.fill)

    def fit(self, name: str, columns: list[int]) -> tuple[np.ndarray, np.ndarray] | str:
        return ONE_PASS[name](self.moments, columns)

    def scale(self, step: Affine) -> None:
        self.moments.scale(step.shift, step.scale)

    def unique(self, column: int) -> np.ndarray:
        if column in self.words:
            index = {w: i for i, w in enumerate(self.vocabulary[column])}
            return np.array(sorted(index[w] for w in self.words[column]), np.float64)
        return self.counts[column].values

    def scaled(self, method: str, output: str) -> tuple[np.ndarray, np.ndarray] | str:
        """`scale_target`'s fit of one output's targets (`runtime/targets.py`)."""
        found = self.targets[output]
        return ONE_PASS[method](found, list(range(len(found.mean))))


@dataclass
class _Words:
    """The words of each column of words and each target of class names, by input and
    column and by output, as the pass meets them; `first`: each column's first missing
    cell, as the in-memory read names it; `where` and `span`: the data, for a word that
    appears only later (the file changed)."""

    inputs: dict[str, dict[int, set[str]]] = field(default_factory=dict)
    targets: dict[str, set[str]] = field(default_factory=dict)
    first: dict[str, dict[int, str]] = field(default_factory=dict)
    where: str = ""
    span: Span | None = None

    def add(self, raw: Arrays) -> None:
        for name, columns in raw.words.items():
            for c, words in columns.items():
                self.inputs.setdefault(name, {}).setdefault(c, set()).update(words)
        for output, labels in raw.labels.items():
            self.targets.setdefault(output, set()).update(labels)
        for name, missing in raw.missing.items():
            for c, where in missing.items():
                self.first.setdefault(name, {}).setdefault(c, where)

    @functools.cached_property
    def vocabulary(self) -> dict[tuple[str, int | None], tuple[str, ...]]:
        """Once the pass is over: the words of each column of words (by input and column)
        and of each target (by output and None), in sorted order."""
        found: dict[tuple[str, int | None], tuple[str, ...]] = {
            (o, None): tuple(sorted(words)) for o, words in self.targets.items()
        }
        for name, columns in self.inputs.items():
            found |= {(name, c): tuple(sorted(words)) for c, words in columns.items()}
        return found

    @functools.cached_property
    def _index(self) -> dict[tuple[str, int | None], dict[str, int]]:
        return {key: {w: i for i, w in enumerate(ws)} for key, ws in self.vocabulary.items()}

    def _recode(self, key: tuple[str, int | None], own: tuple[str, ...]) -> np.ndarray:
        """Each of a row group's own words' index in the table's words."""
        index = self._index[key]
        unseen = [w for w in own if w not in index]
        if unseen:
            raise error(
                f"{self.where} changed while it was read: a row group holds {unseen[0]!r}, "
                "which the pass before training did not see",
                self.span,
                help="train on data that does not change during the run",
            )
        return np.array([index[w] for w in own] or [0], np.int64)

    def whole(self, raw: Arrays) -> Arrays:
        """A row group's arrays as the whole table's read gives them (once the pass is
        over): its words indexed in the table's sorted words, the table's words and first
        missing cells."""
        inputs, words = dict(raw.inputs), dict[str, dict[int, tuple[str, ...]]]()
        for name, columns in raw.words.items():
            words[name] = {}
            if not columns:  # numbers only: the array is handed on as it is, not copied
                continue
            x = np.array(inputs[name])
            for c, own in columns.items():
                words[name][c] = self.vocabulary[name, c]
                x[:, c] = self._recode((name, c), own)[x[:, c].astype(np.int64)]
            inputs[name] = x
        targets, labels = dict(raw.targets), {}
        for output, own in raw.labels.items():
            labels[output] = self.vocabulary[output, None]
            targets[output] = self._recode((output, None), own)[targets[output]]
        missing = {name: dict(self.first.get(name, {})) for name in raw.missing}
        return replace(
            raw, inputs=inputs, targets=targets, labels=labels, words=words, missing=missing
        )


def _rows(raw: Arrays, mask: np.ndarray) -> Arrays:
    return replace(
        raw,
        inputs={k: v[mask] for k, v in raw.inputs.items()},
        targets={k: v[mask] for k, v in raw.targets.items()},
    )


def _held(raw: Arrays, mask: np.ndarray) -> Arrays:
    """Held-out rows as they are kept until the pass is over: inputs in float32, which
    the graphs read (word indices and NaN survive it)."""
    rows = _rows(raw, mask)
    return replace(rows, inputs={k: np.asarray(v, np.float32) for k, v in rows.inputs.items()})


class _Holder:
    """Held-out rows (the validation or the test part) as the pass keeps them: arrays sized
    for all of them up front (`np.empty`: pages not yet filled take no memory) and filled
    group by group, so the rows are held once, never as pieces and their join. A group's
    words index its own sorted words until the pass is over; `take` then recodes each
    group's rows into the whole table's words."""

    def __init__(self, mask: np.ndarray) -> None:
        self.count, self.filled, self.nbytes = int(mask.sum()), 0, 0
        self.rows: Arrays | None = None
        self.parts: list[tuple[slice, Arrays]] = []
        """Each group's rows and its words, where it has words."""

    def add(self, raw: Arrays, mask: np.ndarray) -> None:
        """A row group's held-out rows (`mask`)."""
        rows = _held(raw, mask)
        if self.rows is None:
            empty = {
                k: np.empty((self.count, *v.shape[1:]), v.dtype) for k, v in rows.inputs.items()
            }
            targets = {
                k: np.empty((self.count, *v.shape[1:]), v.dtype) for k, v in rows.targets.items()
            }
            self.rows = replace(rows, inputs=empty, targets=targets)
        at = slice(self.filled, self.filled + int(mask.sum()))
        for k, v in rows.inputs.items():
            self.rows.inputs[k][at] = v
        for k, v in rows.targets.items():
            self.rows.targets[k][at] = v
        if any(raw.words.values()) or raw.labels:
            self.parts.append((at, replace(raw, inputs={}, targets={})))
        self.filled, self.nbytes = at.stop, self.nbytes + _nbytes(rows)

    def take(self, words: _Words) -> Arrays:
        """Every held-out row, its words indexed in the table's words (once the pass is over)."""
        assert self.rows is not None  # a table has a row group
        rows = self.rows
        for at, part in self.parts:
            for name, columns in part.words.items():
                x = rows.inputs[name]
                for c, own in columns.items():
                    x[at, c] = words._recode((name, c), own)[x[at, c].astype(np.int64)]
            for output, own in part.labels.items():
                y = rows.targets[output]
                y[at] = words._recode((output, None), own)[y[at]]
        whole = {
            name: {c: words.vocabulary[name, c] for c in cs} for name, cs in rows.words.items()
        }
        labels = {output: words.vocabulary[output, None] for output in rows.labels}
        return replace(rows, words=whole, labels=labels)


def _nbytes(raw: Arrays) -> int:
    return sum(a.nbytes for a in (*raw.inputs.values(), *raw.targets.values()))


def _zeroed(x: np.ndarray) -> np.ndarray:
    """`np.nan_to_num(x, nan=0.0)`, copied only where it changes a value (a row group
    without missing cells is handed on as it is)."""
    if x.dtype.kind != "f" or np.isfinite(x).all():
        return x
    zeroed: np.ndarray = np.nan_to_num(x, nan=0.0)
    return zeroed


def _checkable(raw: Arrays, train: TrainSpec, typed: TypedModel) -> Arrays:
    """A row group as the pass checks it before every row is seen: missing cells and
    words hidden (a missing cell is 0, checked at the end), and targets given as words
    standing in as class 0 of as many classes as the output has (or the two words of a
    0/1 output, the positive one named by its loss)."""
    inputs = {k: _zeroed(v) for k, v in raw.inputs.items()}
    targets, labels = dict(raw.targets), dict(raw.labels)
    losses = {h.output: h.loss for h in train.trained()}
    for output in raw.labels:
        head = losses[output]
        kind = LOSSES.get(head.name).target
        if kind == "class":
            labels[output] = tuple(map(str, range(int(typed.outputs[output].dims[-1]))))
        elif kind == "binary":
            labels[output] = ("", str(head.args.get("positive", "")) or " ")
        else:
            continue
        targets[output] = np.zeros(len(targets[output]), np.int64)
    return replace(raw, inputs=inputs, targets=targets, labels=labels, words={}, missing={})


def _digest(digest: hashlib._Hash, checked: dict[str, np.ndarray], raw: Arrays) -> None:
    """Add a row group to the data's digest: its checked arrays (as before words and
    missing cells were streamed), then, where it has them, its missing cells and words."""
    digest_arrays(digest, checked.values())
    for x in raw.inputs.values():
        if np.isnan(x).any():
            digest.update(np.packbits(np.isnan(x)).tobytes())
    for name, columns in sorted(raw.words.items()):
        for c, words in sorted(columns.items()):
            digest.update("\0".join([name, str(c), *words]).encode())
            digest.update(raw.inputs[name][:, c].tobytes())
    for output, labels in sorted(raw.labels.items()):
        digest.update("\0".join([output, *labels]).encode())
        digest.update(raw.targets[output].tobytes())


class _Digest:
    """The data's digest (`_digest`) computed on a thread beside the pass, a row group at a
    time in the pass's order: hashlib lets go of the interpreter while it hashes, so one
    group is hashed while the next is read and checked (at most one group waits)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="dnnspec-digest")
        self._last: Future[None] | None = None

    def add(self, checked: dict[str, np.ndarray], raw: Arrays) -> None:
        self._wait()
        self._last = self._thread.submit(_digest, self.digest, checked, raw)

    def _wait(self) -> None:
        if self._last is not None:
            self._last.result()
            self._last = None

    def hexdigest(self) -> str:
        self._wait()
        self._thread.shutdown()
        return self.digest.hexdigest()


def _named(data: Dataset, inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A checked dataset's arrays as the stream hands them over: the model inputs by name,
    the targets by output name (`y`: a model's one unnamed output)."""
    return data.feeds(inputs[0]) | {o or "y": t for o, t in head_targets(data).items()}


@dataclass(frozen=True)
class StreamedData:
    """A streamed data file as data preparation hands it on: the training rows as a
    `Streamed`, the first training row group's rows as loaded and checked (`loaded`, what
    model.onnx's metadata reads) and as the graphs read them (`sample`, what the runtime
    probe reads), the validation and test rows in memory, the split's row indices, the
    class count and the digest of every checked row."""

    stream: Streamed
    loaded: Dataset
    sample: Dataset
    val_data: Dataset
    test_data: Dataset | None
    kept: np.ndarray
    held: np.ndarray
    classes: int | None
    digest: str
    preprocessing: Preprocessing | None
    """Fitted on the training rows in the same pass."""


def _table(
    source: Call, typed: TypedModel, train: TrainSpec, path: Path
) -> tuple[Streamable, int] | None:
    """`path`'s table as a streamed read takes it and its memory budget, or None where it
    is not Parquet or fits the budget (it is then read whole)."""
    if format_for(path, training=True) is not FORMATS.get("parquet"):
        return None
    budget = memory_budget(source.args.get("memory", "auto"), source.span)
    inputs = tuple(decl.name for decl in typed.spec.model.inputs)
    outputs = tuple(h.output for h in train.trained() if h.output)
    wanted = file_wanted(source.args, inputs, outputs, source.span)
    table = streamable(path, source.args, wanted, source.span)
    size = table.rows * table.width * 8  # read whole as float64, as it is in memory
    if size <= budget:
        return None
    over = f"the data ({size_text(size)}) is over its memory budget ({size_text(budget)})"
    help = "raise the budget if the data fits: file(..., memory = ...)"
    if source.args.get("labels") == "names":
        raise error(
            f"{over}; labels = names needs every target before the first is a class id",
            source.span,
            help=f"write the targets as class ids or as words, or {help}",
        )
    for call in train.preprocess:
        if PREPROCESS.get(call.name).fit is not None and call.name not in ONE_PASS:
            raise error(
                f"{over}; preprocess {call.name} is not fitted on streamed data",
                call.span,
                help=f"prepare the columns beforehand, or {help}",
            )
    return table, budget


def stream_data(train: TrainSpec, typed: TypedModel, conform: Conform) -> StreamedData | None:
    """The spec's data streamed, or None where it fits its budget (or is not Parquet)."""
    source, span = train.data, train.data.span
    if source.name != "file":
        return None
    found = _table(source, typed, train, locate_file(str(source.args["path"]), span))
    if found is None:
        return None
    table, budget = found
    give_back_freed()
    wanted, inputs = table.wanted, tuple(d.name for d in typed.spec.model.inputs)
    n = table.rows
    test = train.test if isinstance(train.test, float) else 0.0
    tested = hash_split(n, test, train.seed + 1)
    validation = arg_float(source.args, "validation") if "validation" in source.args else 0.0
    held_mask = hash_split(n, validation, train.seed) & ~tested
    keep = ~(held_mask | tested)
    digest, words = _Digest(), _Words(where=table.where, span=span)
    held, testing = _Holder(held_mask), _Holder(tested)
    first: Arrays | None = None
    summary: Summary | None = None
    start = 0
    for i, size in enumerate(table.sizes):
        raw = table.read(i)
        words.add(raw)
        checked, _ = conform(file_dataset(_checkable(raw, train, typed), wanted))
        digest.add(_named(checked, inputs), raw)
        rows = slice(start, start + size)
        if train.preprocess:
            local = file_dataset(raw, wanted)
            if summary is None:
                summary = Summary(local, train, budget)
            kept = keep[rows]
            x = checked.x[kept]  # as checked (float32): Moments widens it column block-wise
            if x.dtype.kind != "f":
                x = x.astype(np.float64)
            x[np.isnan(local.x[kept])] = np.nan
            value = {
                h.output: np.asarray(head_targets(checked)[h.output], np.float64)[kept]
                for h in train.trained()
                if LOSSES.get(h.loss.name).target == "value"
            }
            summary.add(x, local.words, value)
        held.add(raw, held_mask[rows])
        testing.add(raw, tested[rows])
        if (
            held.nbytes + testing.nbytes > budget
        ):  # checked as they are read, so they never outgrow it
            raise error(
                f"the validation and test rows of {table.where} take over {size_text(budget)}, "
                "its memory budget: they are held in memory",
                span,
                help="hold out a smaller fraction, or raise the budget: file(..., memory = ...)",
            )
        if first is None and keep[rows].any():
            first = _rows(raw, keep[rows])
        start += size
    trim()
    if first is None:
        raise error("no training samples left after the validation split", span)
    whole = words.whole(first)
    numeric_inputs(whole, wanted, span)
    loaded, classes = conform(file_dataset(whole, wanted))
    prep = None
    if summary is not None:
        summary.vocabulary = loaded.words
        targets = fit_targets(train, loaded, summary.scaled)
        prep = fit_preprocess(train, typed, loaded, summary, targets)
        if prep is not None and prep.widens():
            check_width(prep, typed, len(keep), span)

    def graphs(raw: Arrays) -> Dataset:
        return transform(conform(file_dataset(words.whole(raw), wanted))[0], prep)

    def read(i: int) -> dict[str, np.ndarray]:
        return _named(graphs(table.read(i)), inputs)

    sample = graphs(first)
    named = _named(sample, inputs)
    row_bytes = sum(a[:1].nbytes for a in named.values())
    shapes = {k: tuple(v.shape[1:]) for k, v in named.items()}
    streamed = Source(table.sizes, read, row_bytes, table.where, shapes)
    return StreamedData(
        Streamed(streamed, budget_rows(streamed, budget, span), keep),
        loaded,
        sample,
        graphs(held.take(words)),
        graphs(testing.take(words)) if test else None,
        np.flatnonzero(keep),
        np.flatnonzero(held_mask),
        classes,
        digest.hexdigest(),
        prep,
    )


def stream_held_out(
    train: TrainSpec,
    typed: TypedModel,
    path: Path,
    call: Call,
    prepare: Callable[[Dataset], Dataset],
) -> Chunked | None:
    """A held-out Parquet table over its memory budget (`test "file"`, `dnnspec eval RUN
    file`) read row group by row group, each as `prepare` (its class names mapped to the
    training data's, checked, preprocessed) makes it; None where it fits the budget."""
    found = _table(call, typed, train, path)
    if found is None:
        return None
    table = found[0]

    def read(i: int) -> Dataset:
        return prepare(file_dataset(table.read(i), table.wanted))

    return Chunked(table.sizes, read)
