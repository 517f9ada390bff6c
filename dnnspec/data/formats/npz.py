"""`.npz` archives: training reads arrays `x` and `y` (named by `file(x = ..., y = ...)`),
or for named outputs one array per output name; `predict` reads array `x`, or the only
array. Every array is checked before it is read (`dnnspec.npz`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dnnspec import npz
from dnnspec.data.dataset import named_targets
from dnnspec.data.formats.base import Arrays, Batch, Feed, Format, Limits, Wanted
from dnnspec.errors import Span, error
from dnnspec.files import open_regular


def read_npz(path: Path, limit: int, span: Span | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz file; anything but a valid, pickle-free one is a clear error."""
    with open_regular(path, "data file", limit, span) as f:
        return npz.read_npz(f, f"'{path}'", limit, span)


def _array(arrays: dict[str, np.ndarray], key: str, path: Path, span: Span | None) -> np.ndarray:
    if key not in arrays:
        raise error(
            f"'{path}' has no array named {key!r}",
            span,
            help=f"arrays in the file: {', '.join(arrays) or 'none'}",
        )
    return arrays[key]


def _rows(key: str, array: np.ndarray, path: Path, span: Span | None) -> None:
    if array.ndim == 0:
        raise error(f"array {key!r} in '{path}' is a single number, not one row per sample", span)


def _read(
    path: Path, args: dict[str, Any], wanted: Wanted, limits: Limits, span: Span | None
) -> Arrays:
    (name,) = wanted.inputs
    arrays = read_npz(path, limits.arrays, span)
    if wanted.named:
        return _read_named(path, arrays, args["x"], name, wanted.outputs, span)
    x, y = _array(arrays, args["x"], path, span), _array(arrays, args["y"], path, span)
    for key, array in ((args["x"], x), (args["y"], y)):
        _rows(key, array, path, span)
    if len(x) != len(y):
        raise error(f"'{path}': {len(x)} inputs but {len(y)} targets", span)
    return Arrays({name: x}, {wanted.outputs[0]: y})


def _read_named(
    path: Path,
    arrays: dict[str, np.ndarray],
    key: str,
    name: str,
    outputs: tuple[str, ...],
    span: Span | None,
) -> Arrays:
    """The inputs (array `key`) and the arrays named after the outputs."""
    x = _array(arrays, key, path, span)
    offered = {k: v for k, v in arrays.items() if k != key}
    for each, array in ((key, x), *((n, offered[n]) for n in outputs if n in offered)):
        _rows(each, array, path, span)
        if len(array) != len(x):
            raise error(f"'{path}': {len(x)} inputs but {len(array)} rows in {each!r}", span)
    return Arrays({name: x}, named_targets(offered, outputs, f"'{path}'", span))


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    """Array `x`, or the archive's only array."""
    (name,) = feed.inputs
    arrays = read_npz(path, limits.arrays)
    if "x" in arrays:
        return Batch({name: arrays["x"]})
    if len(arrays) == 1:
        return Batch({name: next(iter(arrays.values()))})
    raise error(
        f"'{path}' has no arrays"
        if not arrays
        else f"'{path}' has several arrays and none is named 'x'",
        help=f"arrays: {', '.join(arrays)}" if arrays else None,
    )


FORMAT = Format((".npz",), _feed, _read, ("x", "y"))
