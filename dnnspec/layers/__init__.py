"""Built-in layer families; importing this package registers every layer in `LAYERS`."""

from dnnspec.layers import (
    activations,
    attention,
    dense,
    dropout,
    embedding,
    layer_norm,
    merge,
    positional,
    recurrent,
    shape,
)

__all__ = [
    "activations",
    "attention",
    "dense",
    "dropout",
    "embedding",
    "layer_norm",
    "merge",
    "positional",
    "recurrent",
    "shape",
]
