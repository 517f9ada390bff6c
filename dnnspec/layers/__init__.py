"""Built-in layer families; importing this package registers every layer in `LAYERS`."""

from dnnspec.layers import (
    activations,
    attention,
    conv,
    dense,
    dropout,
    embedding,
    layer_norm,
    merge,
    norm,
    permute,
    positional,
    recurrent,
    shape,
    spectral,
)

__all__ = [
    "activations",
    "attention",
    "conv",
    "dense",
    "dropout",
    "embedding",
    "layer_norm",
    "merge",
    "norm",
    "permute",
    "positional",
    "recurrent",
    "shape",
    "spectral",
]
