"""Data augmentation inside the train step: `augment crop(padding = 4), flip(horizontal)`.

Each entry transforms the image batch `[N, C, H, W]` the train step reads, before the
model, with standard ONNX ops; eval and model.onnx never see it. Its randomness is one
uniform draw per sample from the in-graph generator dropout uses (`graph/rng.py`), keyed by
the `seed` and `step` inputs and a salt per entry, so a resumed run replays the same
crops and flips to the bit. It acts on the data, so no gradient flows through it.

The draws are whole multiples of 2^-12 and a crop or flip only moves pixels (a crop is
two matrix products with 0/1 selection matrices, each output element one pixel x 1 plus
zeros), so both are exact in every runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import TableRandom
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

SALT = 1 << 20
"""Augmentation draws use salts SALT + index, apart from the layers' (their node index)."""


@dataclass(frozen=True)
class Image:
    """The batch being augmented: its value, static height and width, and `draw(k)`, k
    uniform values in [0, 1) per sample as [N, k] (a fresh stream at each call)."""

    value: str
    height: int
    width: int
    draw: Callable[[int], str]


BuildAugment = Callable[[GraphBuilder, Image, dict[str, Any]], str]


@dataclass(frozen=True)
class AugmentDef:
    signature: Signature
    build: BuildAugment
    doc: str = ""


AUGMENTS: Registry[AugmentDef] = Registry("augmentation")


def augment(
    b: GraphBuilder,
    x: str,
    dims: tuple[int, int],
    calls: list[tuple[str, dict[str, Any]]],
    rng: TableRandom,
) -> str:
    """`x` [N, C, H, W] (H, W = `dims`) with each augmentation `calls` names applied in
    order, by name and bound arguments."""
    salts = iter(range(SALT, SALT + 1024))

    def draw(count: int) -> str:
        rows = b.op("Slice", [b.op("Shape", [x]), b.const([0], "int64"), b.const([1], "int64")])
        shape = b.op("Concat", [rows, b.const([count], "int64")], axis=0)
        like = b.op("ConstantOfShape", [shape], hint="draws")
        return rng.uniform_like(b, like, 2, next(salts))

    for name, args in calls:
        x = AUGMENTS.get(name).build(b, Image(x, dims[0], dims[1], draw), args)
    return x


def _per_sample(b: GraphBuilder, values: str, column: int) -> str:
    """Column `column` of [N, k] draws as [N, 1, 1, 1], to broadcast over an image."""
    picked = b.op(
        "Slice",
        [values, b.const([column], "int64"), b.const([column + 1], "int64"), b.const([1], "int64")],
    )
    return b.op("Unsqueeze", [picked, b.const([2, 3], "int64")])


def _selection(b: GraphBuilder, offset: str, size: int, padded: int, rows: bool) -> str:
    """0/1 matrices per sample picking `size` of `padded` positions from `offset` on:
    [N, 1, size, padded] for rows (left factor), [N, 1, padded, size] for columns."""
    out = np.arange(size, dtype=np.float64)
    src = np.arange(padded, dtype=np.float64)
    target = out[:, None] if rows else out[None, :]
    source = src[None, :] if rows else src[:, None]
    wanted = b.op("Add", [b.const(target), offset])  # [N, 1, size, 1] or [N, 1, 1, size]
    hit = b.op("Equal", [b.const(source), wanted], hint="crop")
    return b.op("Cast", [hit], hint="crop", to=b.float_elem)


def _crop(b: GraphBuilder, image: Image, args: dict[str, Any]) -> str:
    """Zero-pad by `padding` on each side, then cut the original size at a random offset
    per sample (torchvision's RandomCrop(size, padding))."""
    p = int(args["padding"])
    if p == 0:
        return image.value
    pads = b.const([0, 0, p, p, 0, 0, p, p], "int64")
    padded = b.op("Pad", [image.value, pads], hint="crop")
    draws = image.draw(2)
    offsets = b.op("Floor", [b.op("Mul", [draws, b.const(float(2 * p + 1))])], hint="crop")
    dy, dx = _per_sample(b, offsets, 0), _per_sample(b, offsets, 1)
    rows = _selection(b, dy, image.height, image.height + 2 * p, rows=True)
    cols = _selection(b, dx, image.width, image.width + 2 * p, rows=False)
    return b.op("MatMul", [b.op("MatMul", [rows, padded]), cols], hint="crop")


def _flip(b: GraphBuilder, image: Image, args: dict[str, Any]) -> str:
    """Mirror half the samples, chosen at random: left-right (`horizontal`) or top-bottom."""
    axis = 3 if args["direction"] == "horizontal" else 2
    flipped = b.op(
        "Slice",
        [
            image.value,
            b.const([-1], "int64"),
            b.const([-(2**62)], "int64"),
            b.const([axis], "int64"),
            b.const([-1], "int64"),
        ],
        hint="flip",
    )
    chosen = b.op("Less", [_per_sample(b, image.draw(1), 0), b.const(0.5)], hint="flip")
    return b.op("Where", [chosen, flipped, image.value], hint="flip")


def _jitter(b: GraphBuilder, image: Image, amount: float) -> str:
    """A factor per sample, uniform in [1 - amount, 1 + amount), as [N, 1, 1, 1]."""
    u = _per_sample(b, image.draw(1), 0)
    spread = b.op("Mul", [b.op("Sub", [u, b.const(0.5)]), b.const(2.0 * amount)])
    return b.op("Add", [spread, b.const(1.0)], hint="jitter")


def _brightness(b: GraphBuilder, image: Image, args: dict[str, Any]) -> str:
    """Pixels times a factor in [1 - amount, 1 + amount) per sample (torchvision's
    ColorJitter brightness)."""
    return b.op("Mul", [image.value, _jitter(b, image, float(args["amount"]))], hint="brightness")


def _contrast(b: GraphBuilder, image: Image, args: dict[str, Any]) -> str:
    """Each sample's pixels moved away from (or toward) its mean by a factor in
    [1 - amount, 1 + amount) (ColorJitter contrast, over all channels)."""
    mean = b.op("ReduceMean", [image.value, b.const([1, 2, 3], "int64")], keepdims=1)
    centred = b.op("Sub", [image.value, mean])
    scaled = b.op("Mul", [centred, _jitter(b, image, float(args["amount"]))])
    return b.op("Add", [scaled, mean], hint="contrast")


AMOUNT = ArgSpec(
    name="amount", type="float", default=0.2, min=0.0, max=1.0, doc="the largest change, a fraction"
)

AUGMENTS.add(
    "crop",
    AugmentDef(
        Signature(args=(ArgSpec(name="padding", type="int", default=4, min=0),)),
        _crop,
        "zero-pad each side by padding pixels, then cut the image's size at a random offset",
    ),
)
AUGMENTS.add(
    "flip",
    AugmentDef(
        Signature(
            args=(
                ArgSpec(
                    name="direction",
                    type="str",
                    default="horizontal",
                    choices=("horizontal", "vertical"),
                ),
            )
        ),
        _flip,
        "mirror half the images, chosen at random, left-right (horizontal) or top-bottom",
    ),
)
AUGMENTS.add(
    "brightness",
    AugmentDef(
        Signature(args=(AMOUNT,)),
        _brightness,
        "multiply each image's pixels by a random factor in [1 - amount, 1 + amount)",
    ),
)
AUGMENTS.add(
    "contrast",
    AugmentDef(
        Signature(args=(AMOUNT,)),
        _contrast,
        "scale each image's distance from its mean pixel by a random factor in "
        "[1 - amount, 1 + amount)",
    ),
)
