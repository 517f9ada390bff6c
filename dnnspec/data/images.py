"""A folder of images, one sub-folder per class (`image_folder`), or a CSV listing image
paths and class names, as training data.

The images are listed first (`Listed`: files and class ids, nothing decoded), then decoded
as `formats/image.py` decodes a file for `predict`, into the float32 `[N, channels,
height, width]` the steps read (pixels x 1/255): all at once for a set held in memory (its
size checked against a limit before the first file is decoded), or a chunk at a time for
a set streamed over its memory budget (`runtime/streamed_images.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dnnspec.data.dataset import Dataset
from dnnspec.data.files import locate_file
from dnnspec.data.folders import LEAST, Files, class_folders, listing_classes, listing_rows
from dnnspec.data.formats.image import SCALE, SUFFIXES, decode, is_image
from dnnspec.errors import Span, error
from dnnspec.files import MiB, open_regular, size_text
from dnnspec.metadata import ImageMeta

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


@dataclass(frozen=True)
class Listed:
    """The images an `image_folder` call names, listed but not yet decoded: `where`, the
    folder or CSV listing; each file with its class id (classes in name order); the size
    and channels they are decoded to."""

    where: Path
    files: tuple[Path, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    size: tuple[int, int]
    channels: Literal[1, 3]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def row_bytes(self) -> int:
        """What one image takes as the float32 `[channels, height, width]` the steps read."""
        return self.size[0] * self.size[1] * self.channels * 4

    @property
    def image(self) -> ImageMeta:
        """How model.onnx takes these images (`input` is filled in by data preparation)."""
        size = [self.size[0], self.size[1]]
        return ImageMeta(input="", size=size, channels=self.channels, scale=float(SCALE))

    def dataset(self, index: np.ndarray, span: Span | None) -> Dataset:
        """The images `index` (positions in the list) decoded as the steps read them, with
        their class ids."""
        pixels = np.empty((len(index), self.size[0], self.size[1], self.channels), np.uint8)
        for i, k in enumerate(index.tolist()):
            pixels[i] = decode(self.files[k], self.size, self.channels, span)
        labels = self.labels[index]
        return Dataset(to_model(pixels), labels, labels=self.classes, image=self.image)

    def refuse_over(self, limit: int, span: Span | None) -> None:
        """Refuse, before decoding, a set whose float32 pixels would exceed `limit` bytes."""
        needed = len(self) * self.row_bytes
        if needed > limit:
            raise error(
                f"'{self.where}' holds {len(self):,} images, {size_text(needed)} as float32 "
                f"[N, {self.channels}, {self.size[0]}, {self.size[1]}], over the limit of "
                f"{size_text(limit)} held in memory",
                span,
                help="use a smaller size, fewer images or channels = 1",
            )


def list_images(args: dict[str, Any], span: Span | None, least: int = LEAST) -> Listed:
    """The images an `image_folder` call's arguments name (a folder of at least `least`
    class folders, or a CSV listing), checked for their size and channels."""
    size = args["size"]
    if len(size) != 2 or min(size) < 1:
        raise error(f"size is [height, width], two positive sizes, got {list(size)}", span)
    if args["channels"] not in (1, 3):
        raise error(f"channels is 1 (grey) or 3 (RGB), got {args['channels']}", span)
    channels: Literal[1, 3] = 1 if args["channels"] == 1 else 3
    root = locate_file(args["path"], span)
    if root.suffix == ".csv" and root.is_file():
        columns = (args["image_column"], args["label_column"])
        files, labels, classes = _list_listing(root, columns, span, least)
    else:
        files, labels, classes = _list_folder(root, span, least)
    return Listed(root, tuple(files), labels, classes, (size[0], size[1]), channels)


def _list_folder(
    root: Path, span: Span | None, least: int
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Every image of the class folders of `root` (at least `least`), with its class id
    (classes in name order), and the class names."""
    classes = class_folders(root, IMAGES, span, least)
    files = [path for _, paths in classes for path in paths]
    labels = np.repeat(np.arange(len(classes)), [len(paths) for _, paths in classes])
    return files, labels.astype(np.int64), tuple(name for name, _ in classes)


def _list_listing(
    listing: Path, columns: tuple[str, str], span: Span | None, least: int
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """The images a CSV lists, one per row: `columns` names the column of image paths
    (relative to the CSV's folder) and that of class names (classes in name order), read
    from its header; otherwise as `_list_folder`."""
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
    return files, labels, classes


def to_model(pixels: np.ndarray) -> np.ndarray:
    """`uint8 [N, H, W, C]` as the float32 `[N, C, H, W]` the model reads: x SCALE."""
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) * SCALE
