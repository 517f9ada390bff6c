"""The data-format interface: one `Format` per kind of file, registered in `FORMATS`.

A format reads a file two ways. For training (`read`, given the spec's `file(...)`
arguments) it returns `Arrays`: one array per model input name and one per target name,
with what the file says about them (column names, class names, the training layout).
For `dnnspec predict` (`feed`) it returns a `Batch`: one array per model input name. A
loader or prediction call picks the format by the file's suffix (`format_for`), so a new
format (Parquet, a folder of images) is one module here and one `FORMATS.add`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.tables import Layout
from dnnspec.errors import Span, did_you_mean, error
from dnnspec.registry import Registry

UNNAMED = ""
"""The key of a model's one input or one unnamed output when the reader is not told its
name (as `ir.Head.output` is `""` for a model without named outputs)."""


@dataclass(frozen=True)
class Limits:
    """How large a file the caller accepts: `arrays`, the array data one binary file may
    declare (all its arrays together); `text`, the size of a text file (its cells become
    Python strings before they become numbers)."""

    arrays: int
    text: int


@dataclass(frozen=True)
class Wanted:
    """What a training read returns: the model's inputs and its targets, by name (a
    target `""`: the one target of a model without named outputs). A model's one input
    reads the file's inputs (an .npz's array `x`, a table's feature columns) whatever its
    name; several inputs each read their own (an .npz array named after the input, the
    columns `features` lists for it)."""

    inputs: tuple[str, ...] = (UNNAMED,)
    outputs: tuple[str, ...] = (UNNAMED,)

    @property
    def named(self) -> bool:
        """Whether the targets are named outputs', each found by its name in the file."""
        return self.outputs != (UNNAMED,)


@dataclass(frozen=True)
class Arrays:
    """What a training read found, by name: `inputs` and `targets` (one per name in
    `Wanted`); `labels`, by target, the class names of targets given as words (id i named
    labels[i]); `columns`, by input, the names of its columns; `words`, by input, its
    columns of words (categories) by column index, each cell in the array the index of its
    word; `layout`, where a table held the input and the one target; `missing`, by input,
    the columns read with missing values (NaN) and where the first one is."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    words: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)
    layout: Layout | None = None
    missing: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Feed:
    """What `predict` asks of a file: each model input's declared shape, by name (None:
    not known, read the file as it is); what model.onnx records of its training data
    (`dnnspec.expects`); whether rows still hold the training file's target column; for a
    model of several inputs trained on a table, each input's columns by name (a table is
    read by them)."""

    inputs: dict[str, tuple[int | str, ...] | None]
    expects: dict[str, Any] | None = None
    drop_target: bool = False
    sample_rate: int | None = None
    """A model trained on audio: the rate its clips were sampled at (`dnnspec.audio`)."""
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Inputs read for `predict`, by input name. `text`: numbers read as float64 (from
    text, or a table's typed columns), which the caller converts to each input's declared
    dtype as it does CSV text's; `picked`: the columns are already those the model reads
    (`Feed.drop_target` applied)."""

    arrays: dict[str, np.ndarray]
    text: bool = False
    picked: bool = False


Reader = Callable[[Path, dict[str, Any], Wanted, Limits, Span | None], Arrays]
"""(path, the `file(...)` arguments, what to return, limits, where to report)."""
FeedReader = Callable[[Path, Feed, Limits], Batch]


@dataclass(frozen=True)
class Format:
    """One kind of data file: the suffixes it is known by, how `predict` reads it, how
    training reads it (None: it only feeds predictions), the `file(...)` arguments only it
    reads (a call shows only those of its own format), and whether it reads a folder of
    its files as one data set (`folder_files`)."""

    suffixes: tuple[str, ...]
    feed: FeedReader
    read: Reader | None = None
    arguments: tuple[str, ...] = ()
    folders: bool = False


FORMATS: Registry[Format] = Registry("data format")


def recorded_columns(feed: Feed, what: str) -> dict[str, tuple[str, ...]]:
    """The columns each input of a model of several reads from a table, as recorded; a
    model trained on arrays records none, and is refused."""
    missing = [name for name in feed.inputs if name not in feed.columns]
    if missing:
        raise error(
            f"{what} is a table, but the model's input '{missing[0]}' was not trained on "
            "columns of one, so the file cannot say which of its columns feed it",
            help=f"pass an .npz with one array per input name ({', '.join(feed.inputs)})",
        )
    return {name: feed.columns[name] for name in feed.inputs}


def pick_named(
    header: list[str] | None, wanted: tuple[str, ...], name: str, what: str
) -> list[int]:
    """The positions in `header` of the columns `wanted` of input `name`."""
    if header is None:
        raise error(
            f"{what} has no header row, so the columns of input '{name}' cannot be found",
            help=f"give it a header naming the columns: {', '.join(wanted)}",
        )
    for column in wanted:
        if column not in header:
            raise error(
                f"{what} has no column '{column}', which the model's input '{name}' reads",
                help=did_you_mean(column, header)
                or f"input '{name}' reads the columns {', '.join(wanted)}",
            )
    return [header.index(column) for column in wanted]


def folder_files(folder: Path) -> list[Path]:
    """The entries of a data folder in name order, without those whose names start with
    `.` or `_` (as pyarrow and Spark skip `_SUCCESS`, `.part.crc`); unreadable: none."""
    try:
        names = sorted(e.name for e in os.scandir(folder))
    except OSError:
        return []
    return [folder / n for n in names if not n.startswith((".", "_"))]


def format_for(path: Path, training: bool) -> Format | None:
    """The format that reads `path` (for training: one with a `read`), by its suffix; a
    folder, by the suffix of any file in it, among the formats that read folders."""
    folder = os.path.isdir(path)
    found = {f.suffix for f in folder_files(path)} if folder else {path.suffix}
    for name in FORMATS:
        form = FORMATS.get(name)
        if (
            found & set(form.suffixes)
            and (form.folders or not folder)
            and (form.read is not None or not training)
        ):
            return form
    return None


def suffixes(training: bool) -> str:
    """`.npz or .csv`: the suffixes read (for training, or by `predict`), for messages."""
    known = [
        s
        for name in FORMATS
        for s in FORMATS.get(name).suffixes
        if FORMATS.get(name).read is not None or not training
    ]
    return ", ".join(known[:-1]) + " or " + known[-1] if len(known) > 1 else "".join(known)
