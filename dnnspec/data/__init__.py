"""Datasets: the registry and file readers (datasets.py) and the text corpus (text.py);
importing the package registers every built-in dataset."""

from dnnspec.data import text

__all__ = ["text"]
