"""VJP rules, one module per op family; importing this package registers all of them."""

from dnnspec.autodiff.rules import (
    activations,
    conv,
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
    "conv",
    "elementwise",
    "gather",
    "matmul",
    "nn",
    "normalization",
    "reduce",
    "scan",
    "shape",
]
