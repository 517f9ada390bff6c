"""Datasets: the registry and built-in datasets (datasets.py, the text corpus in text.py,
texts to classify in texts.py, digit-string tasks in digit_strings.py; importing the
package registers every one) and the data files they read: located by files.py, read by
their format (formats/), divided by split.py."""

from dnnspec.data import digit_strings, text, texts

__all__ = ["digit_strings", "text", "texts"]
