"""Shape helpers shared by the layer families: dtype checks, symbolic products, sizes.

Dims are ints when known and strings (`N`, `T`, `T*64`) when symbolic; dim 0 is the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dnnspec.ir import Dim
from dnnspec.layers.base import ShapeError, TensorType


def shape_text(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def require_float(t: TensorType, layer: str) -> TensorType:
    """`t` itself when it is a float tensor; integer ids or masks need another layer first."""
    if t.dtype.startswith("float"):
        return t
    help = (
        "declare the input float32 (integer data is converted when it is loaded)"
        if t.dtype.startswith("int")
        else "declare the input as float32"
    )
    raise ShapeError(f"{layer} needs a float tensor, got {t}", help=help)


def require_rank(t: TensorType, layer: str, least: int) -> None:
    if len(t.dims) < least:
        raise ShapeError(f"{layer} needs a tensor of rank {least} or more (batch first), got {t}")


def product(dims: Sequence[Dim]) -> Dim:
    """The element count of `dims`: an int when all are known, else a symbolic `T*64`."""
    known = math.prod(d for d in dims if isinstance(d, int))
    symbols = [f"({d})" if "+" in d else d for d in dims if isinstance(d, str)]
    if not symbols:
        return known
    return "*".join([*symbols, *([str(known)] if known != 1 else [])])


def per_sample(t: TensorType) -> int:
    """Elements per sample (symbolic non-batch dims count once: FLOPs per position)."""
    return math.prod(d for d in t.dims[1:] if isinstance(d, int))


def normalize_axis(axis: int, t: TensorType, layer: str, batch: bool = True) -> int:
    """`axis` as an index into `t.dims`; with `batch=False` the batch axis is refused,
    since a layer working across it would mix the samples of a batch."""
    rank = len(t.dims)
    if not -rank <= axis < rank:
        raise ShapeError(
            f"{layer} axis {axis} is out of range for {t} (rank {rank})",
            help=_axes_help(rank, batch),
        )
    if not batch and axis % rank == 0:
        raise ShapeError(
            f"{layer} cannot work along axis {axis}, the batch axis of {t}: "
            "it would mix the samples of a batch",
            help=_axes_help(rank, batch),
        )
    return axis % rank


def _axes_help(rank: int, batch: bool) -> str:
    first = 0 if batch else 1
    if rank - 1 < first:
        return "this tensor has only the batch axis; reshape it to [N, ...] first"
    if rank - 1 == first:
        return f"use axis {first} (or -1)"
    return f"use an axis from {first} to {rank - 1}, or -1 for the last"
