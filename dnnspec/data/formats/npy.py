"""`.npy` files: one array, the inputs of a prediction (training reads an .npz, which
names its inputs and targets)."""

from __future__ import annotations

import os
from pathlib import Path

from dnnspec import npz
from dnnspec.data.formats.base import Batch, Feed, Format, Limits
from dnnspec.errors import error
from dnnspec.files import open_regular


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    if len(feed.inputs) != 1:
        names = ", ".join(feed.inputs)
        raise error(
            f"'{path}' holds one array, but the model takes inputs {names}",
            help=f"save them in an .npz with one array named after each input ({names})",
        )
    (name,) = feed.inputs
    with open_regular(path, "input file", limits.arrays) as f:
        size = os.fstat(f.fileno()).st_size
        return Batch({name: npz.read_npy(f, size, f"'{path}'", limits.arrays)})


FORMAT = Format((".npy",), _feed)
