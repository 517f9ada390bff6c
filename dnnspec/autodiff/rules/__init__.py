"""VJP rules, one module per op family; importing this package registers all of them."""

from dnnspec.autodiff.rules import (
    activations,
    elementwise,
    gather,
    matmul,
    nn,
    normalization,
    reduce,
    scan,
    shape,
)
from dnnspec.autodiff.rules.base import VJP, VjpRule

__all__ = [
    "VJP",
    "VjpRule",
    "activations",
    "elementwise",
    "gather",
    "matmul",
    "nn",
    "normalization",
    "reduce",
    "scan",
    "shape",
]
