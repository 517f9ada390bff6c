"""Image files (PNG, JPEG) decoded by Pillow (the `images` extra, imported when first
needed): one file feeds `predict` one image, and `image_folder` (data/images.py) decodes
its training images the same way.

An image is decoded to 8-bit grey (1 channel) or RGB (3) and resized bilinearly to the
model's size where it differs, as `uint8 [height, width, channels]`: what a deployer's
decoder gives, and what model.onnx takes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.formats.base import Batch, Feed, Format, Limits
from dnnspec.errors import Span, error
from dnnspec.files import MiB, open_regular

SUFFIXES = (".png", ".jpg", ".jpeg")
"""The image files read (by suffix, in any case); other files in a class folder are refused."""

SCALE = np.float32(1.0 / 255.0)
"""Pixels reach the model as pixel x SCALE: [0, 1]. model.onnx multiplies by the same
float32 constant, so it computes what training saw to the bit."""

MAX_IMAGE_BYTES = 64 * MiB
"""Largest image file read (Pillow also refuses images of over 89 million pixels)."""


def pillow() -> Any:
    """Pillow's Image module, or a message saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise error(
            "reading images needs Pillow, which is not installed",
            help="pip install 'dnnspec[images]' (or pip install pillow)",
        ) from None
    return Image


def decode(
    path: Path,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
    span: Span | None = None,
) -> np.ndarray:
    """One image file as `uint8 [height, width, channels]`, resized to `size` (height,
    width) where it differs, with `channels` 1 (grey) or 3 (RGB); None keeps the file's
    size, and its grey or (any other mode) RGB. A file Pillow cannot decode is a diagnostic
    naming it."""
    image_module = pillow()
    with open_regular(path, "image", MAX_IMAGE_BYTES, span) as f:
        data = f.read()
    try:
        with image_module.open(io.BytesIO(data)) as image:
            grey = image.mode in ("L", "1", "I;16", "I", "F") if channels is None else channels == 1
            image = image.convert("L" if grey else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), image_module.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise error(f"cannot decode image '{path}': {reason}", span) from None
    return pixels.reshape(*pixels.shape[:2], 1 if grey else 3)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    """One image as a batch of one, `uint8 [1, height, width, channels]`, at the size and
    channels of a model input `[N, height, width, channels]` (else as the file holds it)."""
    ((name, shape),) = feed.inputs.items()
    if shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
        height, width, channels = (int(d) for d in shape[1:])
        return Batch({name: decode(path, (height, width), channels)[None]})
    return Batch({name: decode(path)[None]})


FORMAT = Format(SUFFIXES, _feed)
