"""A folder of images, one sub-folder per class (`image_folder`), or a CSV listing image
paths and class names, as training data.

Each image is decoded as `formats/image.py` decodes a file for `predict`. The whole decoded
set is held in memory as the float32 `[N, channels, height, width]` the steps read (pixels
x 1/255), so its size is checked against a limit before the first file is decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnnspec.data.folders import LEAST, Files, class_folders, listing_classes, listing_rows
from dnnspec.data.formats.image import SCALE, SUFFIXES, decode, is_image
from dnnspec.errors import Span, error
from dnnspec.files import MiB, open_regular, size_text

MAX_LISTING_BYTES = 64 * MiB
"""Largest CSV listing images read (its cells become Python strings)."""


IMAGES = Files(
    source="image_folder",
    one="image",
    many="images",
    accepts=is_image,
    foreign=f"an image ({', '.join(SUFFIXES)})",
    folder="images",
    only="PNG and JPEG images",
    holding="images",
)
"""The files of an image class folder."""


def read_folder(
    root: Path,
    size: tuple[int, int],
    channels: int,
    limit: int,
    span: Span | None,
    least: int = LEAST,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every image of the class folders of `root` (at least `least`) as `uint8 [N, height,
    width, channels]`, with its class id (classes in name order) and the class names;
    refused before decoding when the float32 set would exceed `limit` bytes."""
    classes = class_folders(root, IMAGES, span, least)
    files = [path for _, paths in classes for path in paths]
    labels = np.repeat(np.arange(len(classes)), [len(paths) for _, paths in classes])
    pixels = _decode_all(root, files, size, channels, limit, span)
    return pixels, labels.astype(np.int64), tuple(name for name, _ in classes)


def read_listing(
    listing: Path,
    columns: tuple[str, str],
    size: tuple[int, int],
    channels: int,
    limit: int,
    span: Span | None,
    least: int = LEAST,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The images a CSV lists, one per row: `columns` names the column of image paths
    (relative to the CSV's folder) and that of class names (classes in name order), read
    from its header; otherwise as `read_folder`."""
    with open_regular(listing, "image list", MAX_LISTING_BYTES, span) as f:
        text = f.read().decode("utf-8-sig", errors="replace")
    rows = listing_rows(
        listing,
        text,
        columns,
        span,
        help="name the columns of image paths and class names with image_column and label_column",
    )
    files, names = [], []
    for line, file, name in rows:
        path = listing.parent / file
        if not is_image(path):
            raise error(
                f"'{listing}' line {line}: '{file}' is not an image ({', '.join(SUFFIXES)})",
                span,
            )
        files.append(path)
        names.append(name)
    labels, classes = listing_classes(listing, names, span, least)
    return _decode_all(listing, files, size, channels, limit, span), labels, classes


def _decode_all(
    source: Path,
    files: list[Path],
    size: tuple[int, int],
    channels: int,
    limit: int,
    span: Span | None,
) -> np.ndarray:
    """`files` decoded into one `uint8 [N, height, width, channels]`, refused first when
    the float32 set would exceed `limit` bytes."""
    needed = len(files) * size[0] * size[1] * channels * 4
    if needed > limit:
        raise error(
            f"'{source}' holds {len(files):,} images, {size_text(needed)} as float32 "
            f"[N, {channels}, {size[0]}, {size[1]}], over the limit of {size_text(limit)} "
            "held in memory",
            span,
            help="use a smaller size, fewer images or channels = 1",
        )
    pixels = np.empty((len(files), size[0], size[1], channels), np.uint8)
    for i, path in enumerate(files):
        pixels[i] = decode(path, size, channels, span)
    return pixels


def to_model(pixels: np.ndarray) -> np.ndarray:
    """`uint8 [N, H, W, C]` as the float32 `[N, C, H, W]` the model reads: x SCALE."""
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) * SCALE
