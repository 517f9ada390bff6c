"""Built-in layer families; importing this package registers every layer in `LAYERS`."""

from dnnspec.layers import activations, dense, dropout, embedding, merge, recurrent, shape

__all__ = ["activations", "dense", "dropout", "embedding", "merge", "recurrent", "shape"]
