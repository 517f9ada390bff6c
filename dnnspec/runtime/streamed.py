"""Training data larger than its memory budget: a Parquet `data file(...)` whose table would
not fit `memory` (a quarter of RAM unless the spec says) is streamed (`data/stream.py`).

One pass before training checks every row group as the in-memory data is checked (the same
`conform`), digests it (a resumed run must see the same samples), and reads the validation
and test rows, chosen by a seeded hash of the row index, into memory; training then reads
the other rows chunk by chunk. Data that fits the budget is read whole, as before, so its
runs are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dnnspec.data.datasets import Dataset, locate_file
from dnnspec.data.formats import FORMATS, format_for
from dnnspec.data.formats.parquet import streamable
from dnnspec.data.stream import (
    Moments,
    Source,
    Streamed,
    budget_rows,
    hash_split,
    parquet_source,
)
from dnnspec.errors import Span, error
from dnnspec.files import size_text
from dnnspec.ir import TrainSpec
from dnnspec.runtime.columns import transform
from dnnspec.schema import arg_float
from dnnspec.training.preprocess import Affine, Preprocessing

AUTO_FRACTION = 0.25
"""The share of the machine's memory data may take before it is streamed (`memory = "auto"`)."""
UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
UNITS |= {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}

SCALINGS = ("standardize", "min_max")
"""The preprocessing fitted on streamed data: statistics one pass gives exactly (a median
or the categories of `one_hot` would need every row at once)."""
Conform = Callable[[Dataset], tuple[Dataset, int | None]]
"""Data preparation's check and cast of loaded data for the model, with its class count."""


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


@dataclass(frozen=True)
class StreamedData:
    """A streamed data file as data preparation hands it on: the training rows as a
    `Streamed`, the first chunk's (checked) training rows as a sample (what model.onnx's
    metadata and the runtime probe read), the validation and test rows in memory, the
    split's row indices, the class count and the digest of every checked row."""

    stream: Streamed
    sample: Dataset
    val_data: Dataset
    test_data: Dataset | None
    kept: np.ndarray
    held: np.ndarray
    classes: int | None
    digest: str
    preprocessing: Preprocessing | None
    """`standardize` / `min_max` fitted on the training rows in the same pass."""


def stream_data(train: TrainSpec, inputs: tuple[str, ...], conform: Conform) -> StreamedData | None:
    """The spec's data streamed, or None where it fits its budget (or is not Parquet)."""
    source, span = train.data, train.data.span
    if source.name != "file":
        return None
    path = locate_file(str(source.args["path"]), span)
    if format_for(path, training=True) is not FORMATS.get("parquet"):
        return None
    budget = memory_budget(source.args.get("memory", "auto"), span)
    table = streamable(path, source.args, inputs, span)
    width = sum(len(c) for c in table.inputs.values()) + 1
    if table.rows * width * 8 <= budget:  # read whole as float64, as it is in memory
        return None
    _refuse(train, inputs, table.words, span, table.rows * width * 8, budget)
    (name,) = inputs
    columns = table.inputs[name]
    raw = parquet_source(table.files, table.inputs, table.target, np.dtype(np.float64), span)
    like = Dataset(np.zeros((0, len(columns))), np.zeros(0), columns=columns, layout=table.layout)

    def checked(i: int) -> tuple[dict[str, np.ndarray], int | None]:
        got = raw.read(i)
        data, classes = conform(replace(like, x=got[name], y=got["y"]))
        return {name: data.x, "y": data.y}, classes

    n = len(raw)
    test = train.test if isinstance(train.test, float) else 0.0
    tested = hash_split(n, test, train.seed + 1)
    validation = arg_float(source.args, "validation") if "validation" in source.args else 0.0
    held_mask = hash_split(n, validation, train.seed) & ~tested
    keep = ~(held_mask | tested)
    digest, held, testing = hashlib.sha256(), [], []
    sample: dict[str, np.ndarray] | None = None
    classes: int | None = None
    moments, start, held_bytes = Moments(), 0, 0
    for i, size in enumerate(raw.sizes):
        arrays, classes = checked(i)
        for array in arrays.values():
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        rows = slice(start, start + size)
        moments.add(arrays[name][keep[rows]])
        held.append({k: v[held_mask[rows]] for k, v in arrays.items()})
        testing.append({k: v[tested[rows]] for k, v in arrays.items()})
        held_bytes += sum(a.nbytes for part in (held[-1], testing[-1]) for a in part.values())
        if held_bytes > budget:  # checked as they are read, so they never outgrow it
            raise error(
                f"the validation and test rows of {raw.where} take over {size_text(budget)}, "
                "its memory budget: they are held in memory",
                span,
                help="hold out a smaller fraction, or raise the budget: file(..., memory = ...)",
            )
        if sample is None and keep[rows].any():
            sample = {k: v[keep[rows]] for k, v in arrays.items()}
        start += size
    if sample is None:
        raise error("no training samples left after the validation split", span)
    prep = _fit_scaling(train, moments, columns) if train.preprocess else None

    def part(pieces: list[dict[str, np.ndarray]]) -> Dataset:
        joined = {k: np.concatenate([p[k] for p in pieces]) for k in sample}
        return transform(replace(like, x=joined[name], y=joined["y"]), prep)

    def read(i: int) -> dict[str, np.ndarray]:
        arrays = checked(i)[0]
        return {name: part([arrays]).x, "y": arrays["y"]}

    row_bytes = sum(a[:1].nbytes for a in sample.values())
    shapes = {k: tuple(v.shape[1:]) for k, v in sample.items()}
    source_ = Source(raw.sizes, read, row_bytes, raw.where, shapes)
    stream = Streamed(source_, budget_rows(source_, budget, span), keep)

    return StreamedData(
        stream,
        part([sample]),
        part(held),
        part(testing) if test else None,
        np.flatnonzero(keep),
        np.flatnonzero(held_mask),
        classes,
        digest.hexdigest(),
        prep,
    )


def _fit_scaling(train: TrainSpec, found: Moments, names: tuple[str, ...]) -> Preprocessing:
    """`standardize` and `min_max` over every column, fitted from one pass's moments as
    `training/preprocess.py` fits them from the rows: each step sees the statistics of the
    output of the steps before it (an affine map carries them exactly)."""
    mean, std, low, high = found.mean, found.std, found.low, found.high
    steps = []
    for call in train.preprocess:
        spread = std if call.name == "standardize" else high - low
        flat = np.flatnonzero(spread == 0)
        if len(flat):
            column = int(flat[0])
            raise error(
                f"{call.name}: feature column {column} ({names[column]}) is constant on the "
                "training split, so it cannot be scaled",
                call.span,
                help="drop the column from the inputs: exclude = [...]",
            )
        shift, scale = (mean, 1.0 / std) if call.name == SCALINGS[0] else (low, 1.0 / spread)
        steps.append(Affine(call.name, shift, scale, tuple(range(len(names)))))
        mean, std = (mean - shift) * scale, std * np.abs(scale)
        low, high = (low - shift) * scale, (high - shift) * scale
    return Preprocessing(len(names), names, tuple(steps))


def _refuse(
    train: TrainSpec,
    inputs: tuple[str, ...],
    words: tuple[str, ...],
    span: Span | None,
    size: int,
    budget: int,
) -> None:
    """What streamed data does not do yet, each said with the size that made it stream."""
    over = f"the data ({size_text(size)}) is over its memory budget ({size_text(budget)})"
    help = "raise the budget if the data fits: file(..., memory = ...)"
    if words:
        raise error(
            f"{over} and is read in chunks, which takes columns of numbers only; "
            f"column '{words[0]}' holds words",
            span,
            help=f"encode the column as numbers, or {help}",
        )
    if len(inputs) > 1 or any(h.output for h in train.trained()):
        raise error(f"{over}; streamed data feeds one input, one unnamed output", span, help=help)
    for call in train.preprocess:
        if call.name not in SCALINGS or call.args.get("columns"):
            raise error(
                f"{over}; preprocess {call.name} is not fitted on streamed data (standardize "
                "and min_max of every column are, in one pass)",
                call.span,
                help=f"prepare the columns beforehand, or {help}",
            )
    if isinstance(train.test, str):
        raise error(f"{over}; a test file is not read beside streamed data", train.span, help=help)
