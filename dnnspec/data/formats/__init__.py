"""Data file formats behind one interface (`base.py`): each module defines one `Format`,
registered here in the order messages list them (`expected .npy, .npz, .csv or .parquet`)."""

from dnnspec.data.formats import csv, image, npy, npz, parquet, wav
from dnnspec.data.formats.base import (
    FORMATS,
    UNNAMED,
    Arrays,
    Batch,
    Feed,
    Format,
    Limits,
    Wanted,
    format_for,
    suffixes,
)

FORMATS.add("npy", npy.FORMAT)
FORMATS.add("npz", npz.FORMAT)
FORMATS.add("csv", csv.FORMAT)
FORMATS.add("parquet", parquet.FORMAT)
FORMATS.add("image", image.FORMAT)
FORMATS.add("wav", wav.FORMAT)

__all__ = [
    "FORMATS",
    "UNNAMED",
    "Arrays",
    "Batch",
    "Feed",
    "Format",
    "Limits",
    "Wanted",
    "format_for",
    "suffixes",
]
