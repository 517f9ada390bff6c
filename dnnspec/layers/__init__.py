"""Built-in layer families; importing this package registers every layer in `LAYERS`."""

from dnnspec.layers import activations, conv, dense, dropout, embedding, merge, norm, shape

__all__ = ["activations", "conv", "dense", "dropout", "embedding", "merge", "norm", "shape"]
