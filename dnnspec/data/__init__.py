"""Datasets: the registry and file readers (datasets.py), the text corpus (text.py) and
digit-string tasks (digit_strings.py); importing the package registers every one."""

from dnnspec.data import digit_strings, text

__all__ = ["digit_strings", "text"]
