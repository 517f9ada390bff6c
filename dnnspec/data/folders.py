"""A folder of one sub-folder per class (Keras' `*_dataset_from_directory` layout), walked
once for every reader of it: images, audio clips and texts.

The class names are the sub-folder names, in name order (class id = position); each
class's files are taken in name order, so the same folder always gives the same samples
in the same order.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnnspec.data.formats.base import folder_files
from dnnspec.errors import Span, error


@dataclass(frozen=True)
class Files:
    """The files of one reader's class folders, named as its messages name them: `source`,
    the data source (`image_folder`); `one` and `many`, a file and its plural (`image`,
    `images`); `accepts`, whether a path is one of them by its name; `foreign`, what a
    refused file is not (`an image (.png, .jpg, .jpeg)`); `folder`, what a class folder
    holds in general (`WAV files`), `only`, exactly (`WAV clips`), `holding`, in the help
    for too few classes."""

    source: str
    one: str
    many: str
    accepts: Callable[[Path], bool]
    foreign: str
    folder: str
    only: str
    holding: str


LEAST = 2
"""Classes a training folder or listing must hold; held-out data needs one, its class ids
being the training data's (matched by name)."""


def class_folders(
    root: Path, files: Files, span: Span | None, least: int = LEAST
) -> list[tuple[str, list[Path]]]:
    """The class folders of `root` in name order, each with its files in name order
    (names starting with `.` or `_` are skipped); a file beside them, a foreign file in
    one, an empty one or fewer than `least` classes is a diagnostic."""
    if not os.path.isdir(root):
        raise error(
            f"'{root}' is not a folder",
            span,
            help=f"{files.source} reads a folder holding one sub-folder of {files.folder} "
            "per class",
        )
    classes = []
    for entry in folder_files(root):
        if not entry.is_dir():
            raise error(
                f"'{entry}' is a file beside the class folders of '{root}'",
                span,
                help=f"put each {files.one} in the sub-folder named after its class",
            )
        found = folder_files(entry)
        foreign = [f for f in found if not files.accepts(f)]
        if foreign:
            raise error(
                f"'{foreign[0]}' is not {files.foreign}",
                span,
                help=f"a class folder holds only its {files.only}",
            )
        if not found:
            raise error(f"class folder '{entry}' holds no {files.many}", span)
        classes.append((entry.name, found))
    if len(classes) < least:
        raise error(
            f"'{root}' holds {len(classes)} class folder{'s' if len(classes) != 1 else ''}; "
            + _needs(least),
            span,
            help=f"one sub-folder per class, named after it, holding its {files.holding}",
        )
    return classes


def listing_rows(
    listing: Path, text: str, columns: tuple[str, str], span: Span | None, help: str
) -> list[tuple[int, str, str]]:
    """The rows of a CSV listing (the other layout of a class-folder source: a column of
    files or texts and one of class names, found by the header): each row's line and its
    two cells; a missing column (`help` says how to name them) or a row of another width
    is a diagnostic."""
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0] if rows else []
    missing = [c for c in columns if c not in header]
    if missing:
        raise error(
            f"'{listing}' has no column '{missing[0]}' (its header: {', '.join(header) or 'none'})",
            span,
            help=help,
        )
    first, second = (header.index(c) for c in columns)
    found = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise error(
                f"'{listing}' line {line} has {len(row)} cells, the header {len(header)}", span
            )
        found.append((line, row[first], row[second]))
    return found


def listing_classes(
    listing: Path, names: list[str], span: Span | None, least: int = LEAST
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids of the class names a listing gives (classes in name order) and the
    classes; fewer than `least` is a diagnostic."""
    classes = sorted(set(names))
    if len(classes) < least:
        raise error(f"'{listing}' names {len(classes)} class(es); {_needs(least)}", span)
    return np.array([classes.index(n) for n in names], np.int64), tuple(classes)


def _needs(least: int) -> str:
    return "a classifier needs at least two" if least > 1 else "held-out data needs at least one"
