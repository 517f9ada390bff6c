"""A folder of images, one sub-folder per class (`image_folder`), as training data.

Each image is decoded as `formats/image.py` decodes a file for `predict`. The whole decoded
set is held in memory as the float32 `[N, channels, height, width]` the steps read (pixels
x 1/255), so its size is checked against a limit before the first file is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dnnspec.data.formats.base import folder_files
from dnnspec.data.formats.image import SCALE, SUFFIXES, decode, is_image
from dnnspec.errors import Span, error
from dnnspec.files import size_text


def class_folders(root: Path, span: Span | None) -> list[tuple[str, list[Path]]]:
    """The class folders of `root` in name order, each with its image files in name order
    (names starting with `.` or `_` are skipped); a file beside them, a foreign file in
    one, an empty one or fewer than two classes is a diagnostic."""
    if not os.path.isdir(root):
        raise error(
            f"'{root}' is not a folder",
            span,
            help="image_folder reads a folder holding one sub-folder of images per class",
        )
    classes = []
    for entry in folder_files(root):
        if not entry.is_dir():
            raise error(
                f"'{entry}' is a file beside the class folders of '{root}'",
                span,
                help="put each image in the sub-folder named after its class",
            )
        files = folder_files(entry)
        foreign = [f for f in files if not is_image(f)]
        if foreign:
            raise error(
                f"'{foreign[0]}' is not an image ({', '.join(SUFFIXES)})",
                span,
                help="a class folder holds only its PNG and JPEG images",
            )
        if not files:
            raise error(f"class folder '{entry}' holds no images", span)
        classes.append((entry.name, files))
    if len(classes) < 2:
        raise error(
            f"'{root}' holds {len(classes)} class folder{'s' if len(classes) != 1 else ''}; "
            "a classifier needs at least two",
            span,
            help="one sub-folder per class, named after it, holding its images",
        )
    return classes


def read_folder(
    root: Path, size: tuple[int, int], channels: int, limit: int, span: Span | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every image of the class folders of `root` as `uint8 [N, height, width, channels]`,
    with its class id (classes in name order) and the class names; refused before decoding
    when the float32 set would exceed `limit` bytes."""
    classes = class_folders(root, span)
    count = sum(len(files) for _, files in classes)
    needed = count * size[0] * size[1] * channels * 4
    if needed > limit:
        raise error(
            f"'{root}' holds {count:,} images, {size_text(needed)} as float32 "
            f"[N, {channels}, {size[0]}, {size[1]}], over the limit of {size_text(limit)} "
            "held in memory",
            span,
            help="use a smaller size, fewer images or channels = 1",
        )
    pixels = np.empty((count, size[0], size[1], channels), np.uint8)
    labels = np.empty(count, np.int64)
    i = 0
    for label, (_, files) in enumerate(classes):
        for path in files:
            pixels[i], labels[i] = decode(path, size, channels, span), label
            i += 1
    return pixels, labels, tuple(name for name, _ in classes)


def to_model(pixels: np.ndarray) -> np.ndarray:
    """`uint8 [N, H, W, C]` as the float32 `[N, C, H, W]` the model reads: x SCALE."""
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) * SCALE
