"""An image folder over its memory budget: `image_folder(..., memory = ...)` whose decoded
float32 set would exceed `memory` (a quarter of RAM unless the spec says) or the 2 GiB held
in memory is decoded chunk by chunk as training reads it, by the streaming reader of
`data/stream.py` (its shuffle windows, seeded by (seed, epoch), so a resumed epoch repeats).

The images are listed before anything is decoded, and their class ids come from the folder
names (or the listing), so the split is the one data held in memory gets (`split`, data
preparation's): a window that covers the training images trains exactly as in memory. One
pass before training decodes and checks every image as in-memory data is checked (the
same `conform`), digests the pixels (a resumed run must see the same images) and keeps the
validation and test images, which are held in memory within the budget; training then
decodes the training images on the reader's thread, several chunks a window, while the
K-step calls run. Sets within the budget are decoded whole, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from dnnspec.data.dataset import Dataset, digest_arrays
from dnnspec.data.datasets import MAX_DATA_BYTES
from dnnspec.data.images import list_images
from dnnspec.data.stream import HELD_WINDOWS, Source, Streamed, budget_rows
from dnnspec.errors import Span, error
from dnnspec.files import size_text
from dnnspec.ir import TrainSpec
from dnnspec.runtime.streamed import Conform, StreamedData, memory_budget

CHUNK_IMAGES = 256
"""Images decoded together: one read of the background reader (fewer when a window of the
budget holds fewer)."""

LABEL_BYTES = 8
"""What an image's target takes beside its pixels (an int64 class id, at most)."""

Split = Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray, np.ndarray]]
"""Data preparation's split from the class ids: test rows (None without), training rows,
validation rows."""


def stream_images(
    train: TrainSpec, inputs: tuple[str, ...], conform: Conform, split: Split
) -> StreamedData | None:
    """The spec's image folder streamed, or None where it fits its budget (or is no image
    folder)."""
    source, span = train.data, train.data.span
    if source.name != "image_folder":
        return None
    listed = list_images(source.args, span)
    budget = memory_budget(source.args["memory"], span)
    size = len(listed) * listed.row_bytes
    if size <= min(budget, MAX_DATA_BYTES):
        return None
    _refuse(train, inputs, size, budget, span)
    tested, kept, held = split(listed.labels)
    testing = np.zeros(0, np.int64) if tested is None else tested
    held_bytes = (len(held) + len(testing)) * listed.row_bytes
    if held_bytes > budget:
        raise error(
            f"the validation and test images of '{listed.where}' take {size_text(held_bytes)}"
            f", over its memory budget of {size_text(budget)}: they are held in memory",
            span,
            help="hold out a smaller fraction, or raise the budget: "
            "image_folder(..., memory = ...)",
        )
    row_bytes = listed.row_bytes + LABEL_BYTES
    window = budget // (row_bytes * HELD_WINDOWS)
    if window < 1:
        raise error(
            f"one image of '{listed.where}' takes {size_text(listed.row_bytes)} as float32, "
            f"over a quarter of its memory budget of {size_text(budget)}",
            span,
            help="use a smaller size, or raise the budget: image_folder(..., memory = ...)",
        )
    chunk = min(CHUNK_IMAGES, window)
    if not len(kept):
        raise error("no training samples left after the validation split", span)
    (name,) = inputs

    def decoded(index: np.ndarray) -> tuple[Dataset, int | None]:
        return conform(listed.dataset(index, span))

    digest, classes = hashlib.sha256(), None
    parts: dict[str, list[Dataset]] = {"held": [], "tested": []}
    sample: Dataset | None = None
    for start in range(0, len(listed), chunk):  # every image checked before the first step
        index = np.arange(start, min(start + chunk, len(listed)))
        data, classes = decoded(index)
        digest_arrays(digest, (data.x, data.y))
        for part, rows in (("held", held), ("tested", testing)):
            parts[part].append(data.take(np.flatnonzero(np.isin(index, rows))))
        if sample is None and np.isin(index, kept).any():
            sample = data.take(np.flatnonzero(np.isin(index, kept)))
    assert sample is not None, "a chunk holds the first training image"

    def read(i: int) -> dict[str, np.ndarray]:
        data = decoded(kept[i * chunk : (i + 1) * chunk])[0]
        return {name: data.x, "y": data.y}

    sizes = tuple(min(chunk, len(kept) - start) for start in range(0, len(kept), chunk))
    shapes = {name: tuple(sample.x.shape[1:]), "y": ()}
    stream_source = Source(sizes, read, row_bytes, f"'{listed.where}'", shapes)
    stream = Streamed(stream_source, budget_rows(stream_source, budget, span))
    return StreamedData(
        stream,
        sample,
        sample,
        _joined(parts["held"], sample),
        _joined(parts["tested"], sample) if tested is not None else None,
        kept,
        held,
        classes,
        digest.hexdigest(),
        None,
    )


def _joined(parts: list[Dataset], like: Dataset) -> Dataset:
    """The images of `parts` (checked chunks of one input and one unnamed output, so `x`
    and `y` are all they hold by row) as one dataset like `like`."""
    x = np.concatenate([like.x[:0], *(p.x for p in parts)])
    return replace(like, x=x, y=np.concatenate([like.y[:0], *(p.y for p in parts)]))


def _refuse(
    train: TrainSpec, inputs: tuple[str, ...], size: int, budget: int, span: Span | None
) -> None:
    """What streamed images do not do, said with the size that made them stream."""
    over = (
        f"the decoded images ({size_text(size)}) are over their memory budget "
        f"({size_text(min(budget, MAX_DATA_BYTES))})"
    )
    help = "raise the budget if they fit: image_folder(..., memory = ...)"
    if len(inputs) > 1 or any(h.output for h in train.trained()):
        raise error(f"{over}; streamed images feed one input, one unnamed output", span, help=help)
    if train.preprocess:
        call = train.preprocess[0]
        raise error(
            f"{over}; preprocess {call.name} is not fitted on streamed images",
            call.span,
            help=f"images are scaled by 1/255 already; drop it, or {help}",
        )
