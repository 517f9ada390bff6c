"""Streamed data: a dataset larger than its memory budget, read chunk by chunk (Parquet row
groups, slices of memory-mapped `.npy` files) by a background thread while training runs.

An epoch's order is a pure function of (seed, epoch, chunk layout), so a resumed run replays
it and the reader's position is just the trainer's (epoch, step). Names are the model's input names
and `y` (a model's one unnamed output) or its output names. The order shuffles the
chunks, groups consecutive ones into windows of at most `window` rows and permutes the rows
inside each window. A window that covers all the data is one permutation equal to the
in-memory `epoch_order`, so such a run trains exactly as the in-memory one. A smaller window
mixes only the rows of the chunks it groups: batches drawn from a window are unbiased within
it but rows of one chunk stay within one window (as `tf.data`'s `shuffle(buffer)` after
`interleave` over shuffled files).

Memory: the reader holds the window being trained on, one read ahead (a bounded queue) and the
one it is filling plus one chunk while it reads; `Reader.peak` counts those bytes, which the
window size keeps under the budget. Beside them a run holds its held-out rows, the rows of
the current call and the model and runtime; freed buffers go back to the system at once
(`give_back_freed`), so that sum bounds the process's RSS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.dataset import Dataset
from dnnspec.errors import Span, error
from dnnspec.files import size_text
from dnnspec.npz import map_npy

HELD_WINDOWS = 4
"""Windows' worth of rows the reader may hold at once: the one trained on, one queued, the
one being filled and (at most a window of) the chunk being read into it."""


MMAP_THRESHOLD = 1 << 20
"""Blocks from this size up are mapped on their own and unmapped when freed (`give_back_freed`)."""


@functools.cache
def _glibc() -> Any:
    """The C library where it is glibc (it has `mallopt` and `malloc_trim`), else None."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@functools.cache
def give_back_freed() -> None:
    """Have glibc's malloc return freed large blocks to the system at once. By default it
    raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, after which
    blocks of a row group's size come from its heaps, one per thread (the reader's too),
    which keep freed memory: a streamed run's RSS would grow past what it holds. A fixed
    threshold (`mallopt(M_MMAP_THRESHOLD)`) keeps every block of a MiB or more mapped on
    its own. Elsewhere (another libc) nothing is done."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def trim() -> None:
    """Return the free pages of glibc's heaps to the system (`malloc_trim`): once a pass
    over the data has freed the small blocks it read between those it keeps."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, a pure function of (seed, epoch) so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass(frozen=True)
class Source:
    """A dataset on disk as chunks of rows: `read(i)` gives chunk i's arrays by name (model
    inputs and `y`), each [rows, ...]; `row_bytes` is what one row of all of them takes."""

    sizes: tuple[int, ...]
    read: Callable[[int], dict[str, np.ndarray]]
    row_bytes: int
    where: str
    shapes: dict[str, tuple[int, ...]]
    """Each name's shape of one row."""

    def __len__(self) -> int:
        return sum(self.sizes)


def npy_source(paths: dict[str, Path], chunk_rows: int, span: Span | None = None) -> Source:
    """`.npy` files, one per name, memory-mapped (never loaded whole, never unpickled) and
    read in slices of `chunk_rows` rows; every file must hold the same number of rows."""
    maps = {name: map_npy(str(path), f"'{path}'", span) for name, path in paths.items()}
    rows = {len(m) if m.ndim else -1 for m in maps.values()}
    if len(rows) != 1 or -1 in rows:
        counts = ", ".join(f"'{paths[n]}' {m.shape[0] if m.ndim else 0}" for n, m in maps.items())
        raise error(f"the .npy files of one dataset hold different numbers of rows: {counts}", span)
    (n,) = rows
    step = max(1, chunk_rows)
    sizes = tuple(min(step, n - start) for start in range(0, n, step))

    def read(i: int) -> dict[str, np.ndarray]:
        return {name: np.array(m[i * step : i * step + sizes[i]]) for name, m in maps.items()}

    row_bytes = sum(m.itemsize * int(np.prod(m.shape[1:], dtype=np.int64)) for m in maps.values())
    where = ", ".join(f"'{p}'" for p in paths.values())
    shapes = {name: tuple(m.shape[1:]) for name, m in maps.items()}
    return Source(sizes, read, row_bytes, where, shapes)


def budget_rows(source: Source, budget: int, span: Span | None = None) -> int:
    """The window, in rows, that keeps the reader's buffers within `budget` bytes; a chunk
    larger than a window is refused (it could not be read within the budget)."""
    window = budget // max(1, source.row_bytes * HELD_WINDOWS)
    largest = max(source.sizes, default=0)
    if largest > window:
        raise error(
            f"{source.where}: a chunk of {largest:,} rows "
            f"({size_text(largest * source.row_bytes)}) does not fit the memory budget of "
            f"{size_text(budget)} ({window:,} rows a window)",
            span,
            help="write smaller Parquet row groups, or raise the memory budget",
        )
    return window


def hash_split(n: int, validation: float, seed: int) -> np.ndarray:
    """Which of `n` rows validate: a seeded hash of each row's index (SplitMix64) below
    `validation`, so a row's part never depends on the chunk it is read in or on the epoch."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < validation


@dataclass(frozen=True)
class Window:
    """Chunks read together: their kept rows (global indices, in the chunks' order) and the
    order the epoch visits them in (`perm`, positions into `rows`)."""

    chunks: tuple[int, ...]
    counts: tuple[int, ...]
    """Kept rows of each chunk."""
    rows: np.ndarray
    perm: np.ndarray


def plan(
    sizes: tuple[int, ...], window: int, seed: int, epoch: int, keep: np.ndarray | None = None
) -> list[Window]:
    """The epoch's windows (see the module's docstring); `keep` marks the rows trained on
    (a hash split's training part), all when None."""
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    kept = [
        np.arange(starts[i], starts[i + 1])[keep[starts[i] : starts[i + 1]]]
        if keep is not None
        else np.arange(starts[i], starts[i + 1])
        for i in range(len(sizes))
    ]
    total = sum(len(k) for k in kept)
    if total <= window:
        rows = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        counts = tuple(len(k) for k in kept)
        return [Window(tuple(range(len(sizes))), counts, rows, epoch_order(total, seed, epoch))]
    windows: list[list[int]] = []
    group: list[int] = []
    count = 0
    for i in np.random.default_rng([seed, epoch, 1]).permutation(len(sizes)).tolist():
        if group and count + len(kept[i]) > window:
            windows.append(group)
            group, count = [], 0
        group.append(i)
        count += len(kept[i])
    windows.append(group)
    out = []
    for w, chunks in enumerate(windows):
        rows = np.concatenate([kept[i] for i in chunks])
        perm = np.random.default_rng([seed, epoch, 2, w]).permutation(len(rows))
        out.append(Window(tuple(chunks), tuple(len(kept[i]) for i in chunks), rows, perm))
    return out


@dataclass
class _Loaded:
    window: Window
    arrays: dict[str, np.ndarray]
    nbytes: int
    used: int = 0


class Reader:
    """Reads an epoch's windows in order on a background thread into a bounded queue, so
    the next window is in memory before the trainer needs it. `held`/`peak`: bytes of the
    windows and chunk it holds now / at most."""

    def __init__(self, source: Source, windows: list[Window], starts: np.ndarray) -> None:
        give_back_freed()
        self.source, self.windows, self._starts = source, windows, starts
        self._queue: queue.Queue[_Loaded | BaseException | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.held = self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.held += nbytes
            self.peak = max(self.peak, self.held)

    def _load(self, window: Window) -> _Loaded:
        arrays: dict[str, np.ndarray] = {}
        filled, total = 0, 0
        for i, count in zip(window.chunks, window.counts, strict=True):
            chunk = self.source.read(i)
            size = sum(a.nbytes for a in chunk.values())
            self._count(size)
            local = window.rows[filled : filled + count] - int(self._starts[i])
            for name, array in chunk.items():
                if name not in arrays:
                    shape = (len(window.rows), *array.shape[1:])
                    arrays[name] = np.empty(shape, array.dtype)
                    self._count(arrays[name].nbytes)
                    total += arrays[name].nbytes
                arrays[name][filled : filled + len(local)] = array[local]
            filled += len(local)
            del chunk
            self._count(-size)
        return _Loaded(window, arrays, total)

    def _run(self) -> None:
        try:
            for window in self.windows:
                if self._stop.is_set():
                    return
                self._queue.put(self._load(window))
            self._queue.put(None)
        except BaseException as exc:  # handed to the trainer, which raises it
            self._queue.put(exc)

    def next(self) -> _Loaded:
        got = self._queue.get()
        if isinstance(got, BaseException):
            raise got
        if got is None:
            raise IndexError("the epoch's windows are all read")
        return got

    def release(self, loaded: _Loaded) -> None:
        self._count(-loaded.nbytes)

    def stop(self) -> None:
        """End the thread (an epoch left early): it stops after the window it is reading."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                got = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(got, _Loaded):
                self.release(got)


@dataclass
class Feed:
    """One epoch's rows handed out in its order: `gather(rows)` with the next rows of the
    order reads on; rows of the last two gathers again (a replay after a non-finite loss)
    are served from what was kept."""

    reader: Reader
    _current: list[_Loaded] = field(default_factory=list)
    _recent: list[tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=list)

    def _take(self, count: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows, pieces = [], []
        while count:
            if not self._current or self._current[0].used == len(self._current[0].window.rows):
                if self._current:
                    self.reader.release(self._current.pop())
                self._current.append(self.reader.next())
            loaded = self._current[0]
            n = min(count, len(loaded.window.rows) - loaded.used)
            where = loaded.window.perm[loaded.used : loaded.used + n]
            rows.append(loaded.window.rows[where])
            pieces.append({k: v[where] for k, v in loaded.arrays.items()})
            loaded.used += n
            count -= n
        block = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
        return np.concatenate(rows), block

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        for seen, block in self._recent:
            if len(rows) and (seen == rows[0]).any():
                order = np.argsort(seen)
                where = order[np.minimum(np.searchsorted(seen, rows, sorter=order), len(seen) - 1)]
                if np.array_equal(seen[where], rows):
                    return {k: v[where] for k, v in block.items()}
        got, block = self._take(len(rows))
        if not np.array_equal(got, rows):
            raise ValueError("streamed rows asked out of the epoch's order")
        self._recent = [*self._recent[-1:], (got, block)]
        return block

    def close(self) -> None:
        self.reader.stop()
        for loaded in self._current:
            self.reader.release(loaded)
        self._current = []


@dataclass(frozen=True)
class Streamed:
    """A dataset trained on as it is read: its source, the window that keeps the reader in
    its memory budget, and which rows it trains on (`keep`, None for all)."""

    source: Source
    window: int
    keep: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.source) if self.keep is None else int(self.keep.sum())

    def windows(self, seed: int, epoch: int) -> list[Window]:
        return plan(self.source.sizes, self.window, seed, epoch, self.keep)

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The epoch's rows in the order trained (global row indices)."""
        return np.concatenate([w.rows[w.perm] for w in self.windows(seed, epoch)])

    def feed(self, seed: int, epoch: int) -> Feed:
        starts = np.concatenate([[0], np.cumsum(self.source.sizes, dtype=np.int64)])
        return Feed(Reader(self.source, self.windows(seed, epoch), starts))


BLOCK = 32
"""Columns `Moments.add` widens to float64 at a time."""


@dataclass
class Moments:
    """Per-column count, mean, sum of squared deviations (Chan et al.'s merge of chunk
    statistics, as stable as Welford's one value at a time), minimum and maximum, over the
    present values (NaN is a missing value, counted apart in `missing`)."""

    count: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, values: np.ndarray) -> None:
        """Merge a chunk [rows, columns], of any numeric dtype: it is widened to float64
        `BLOCK` columns at a time, never whole (each column's sums are the same)."""
        values = np.asarray(values)
        values = values.reshape(len(values), int(np.prod(values.shape[1:])))  # none: (0, w)
        width = values.shape[1]
        if not self.count.size:
            zeros = np.zeros(width)
            self.count, self.mean, self.m2, self.missing = zeros, zeros, zeros, zeros
            self.low, self.high = np.full_like(zeros, np.inf), np.full_like(zeros, -np.inf)
        starts = list(range(0, width, BLOCK))
        if len(starts) > 1 and width - starts[-1] == 1:
            starts.pop()  # one column alone is summed pairwise, several row by row as a chunk is
        bounds = zip(starts, [*starts[1:], width], strict=True)
        found = [self._block(values[:, a:b]) for a, b in bounds]
        if found:
            n, mean, m2, low, high, missing = (np.concatenate(p) for p in zip(*found, strict=True))
            self.missing = self.missing + missing
            self.merge(n, mean, m2, low, high)

    @staticmethod
    def _block(values: np.ndarray) -> tuple[np.ndarray, ...]:
        """The count, mean, squared deviations, minimum, maximum and missing count of each
        column of a block."""
        x = np.ascontiguousarray(values, np.float64)
        gaps = np.isnan(x)
        n = (~gaps).sum(axis=0).astype(np.float64)
        if not gaps.any():
            mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
            m2 = ((x - mean) ** 2).sum(axis=0)
            empty = np.full(x.shape[1], np.inf)
            low, high = (x.min(axis=0), x.max(axis=0)) if len(x) else (empty, -empty)
        else:
            safe = np.maximum(n, 1)
            mean = np.where(gaps, 0, x).sum(axis=0) / safe
            m2 = np.where(gaps, 0, (x - mean) ** 2).sum(axis=0)
            low = np.where(gaps, np.inf, x).min(axis=0, initial=np.inf)
            high = np.where(gaps, -np.inf, x).max(axis=0, initial=-np.inf)
        return n, mean, m2, low, high, gaps.sum(axis=0)

    def merge(
        self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray, low: np.ndarray, high: np.ndarray
    ) -> None:
        """Merge the statistics of `n` more values per column."""
        total = self.count + n
        safe = np.maximum(total, 1)
        delta = mean - self.mean
        self.mean = np.where(self.count == 0, mean, self.mean + delta * (n / safe))
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / safe)
        self.count = total
        self.low, self.high = np.minimum(self.low, low), np.maximum(self.high, high)

    def fill(self, columns: list[int], values: np.ndarray) -> None:
        """The columns' missing values become `values` (imputation)."""
        k = np.zeros_like(self.count)
        k[columns] = self.missing[columns]
        with_fill = np.array(self.mean)
        with_fill[columns] = values
        filled = k > 0
        self.merge(
            k,
            with_fill,
            np.zeros_like(k),
            np.where(filled, with_fill, np.inf),
            np.where(filled, with_fill, -np.inf),
        )
        self.missing = self.missing - k

    def scale(self, shift: np.ndarray, factor: np.ndarray) -> None:
        """The statistics of (x - shift) * factor."""
        low, high = (self.low - shift) * factor, (self.high - shift) * factor
        self.mean, self.m2 = (self.mean - shift) * factor, self.m2 * factor**2
        self.low, self.high = np.minimum(low, high), np.maximum(low, high)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (numpy's default, which `standardize` uses)."""
        std: np.ndarray = np.sqrt(self.m2 / np.maximum(1, self.count))
        return std


@dataclass
class Counts:
    """How often each distinct value occurs in one column (NaN left out): exact for a
    median or most frequent value, in memory proportional to the distinct values."""

    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, column: np.ndarray, times: int = 1) -> None:
        present = column[~np.isnan(column)]
        merged = np.concatenate([self.values, present])
        weights = np.concatenate([self.counts, np.full(len(present), times, np.int64)])
        self.values, where = np.unique(merged, return_inverse=True)
        self.counts = np.bincount(where.reshape(-1), weights, len(self.values)).astype(np.int64)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.counts.nbytes)

    def most_frequent(self) -> float:
        """The most frequent value, the smallest of those tied (as SimpleImputer)."""
        return float(self.values[np.argmax(self.counts)])

    def median(self) -> float:
        """The median as numpy's: the middle value, or the mean of the two middle ones."""
        ends = np.cumsum(self.counts)
        n = int(ends[-1])
        low = self.values[np.searchsorted(ends, (n - 1) // 2, side="right")]
        high = self.values[np.searchsorted(ends, n // 2, side="right")]
        return float(np.mean([low, high]))


@dataclass(frozen=True)
class Chunked:
    """Held-out data too large to hold, evaluated chunk by chunk: `read(i)` gives chunk i
    as the graphs read it."""

    sizes: tuple[int, ...]
    read: Callable[[int], Dataset]

    def __len__(self) -> int:
        return sum(self.sizes)

    def parts(self) -> Iterator[Dataset]:
        return (self.read(i) for i in range(len(self.sizes)))

    def check(self) -> None:
        """Read every chunk once, as training reads its data before the first step, so a
        bad row is refused before anything is trained."""
        for _ in self.parts():
            continue
