"""`.npz` archives: training reads arrays `x` and `y` (named by `file(x = ..., y = ...)`),
or for named outputs one array per output name, and for a model of several inputs one
array per input name; `predict` reads array `x`, or the only array (several inputs: one
per input name). Every array is checked before it is read (`dnnspec.npz`)."""

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


def _inputs(
    path: Path, arrays: dict[str, np.ndarray], key: str, wanted: Wanted, span: Span | None
) -> dict[str, np.ndarray]:
    """The model's inputs: array `key` for its one input, else one array per input name."""
    if len(wanted.inputs) == 1:
        found = {wanted.inputs[0]: _array(arrays, key, path, span)}
    else:
        for name in wanted.inputs:
            if name not in arrays:
                raise error(
                    f"'{path}' has no array named '{name}' for the model's input '{name}'",
                    span,
                    help=f"a model of several inputs reads one array per input name "
                    f"({', '.join(wanted.inputs)}); arrays in the file: "
                    f"{', '.join(arrays) or 'none'}",
                )
        found = {name: arrays[name] for name in wanted.inputs}
    for name, array in found.items():
        _rows(key if len(found) == 1 else name, array, path, span)
    return found


def _check_rows(
    path: Path,
    inputs: dict[str, np.ndarray],
    target: str,
    y: np.ndarray,
    what: str,
    span: Span | None,
) -> None:
    """Every input array holds as many rows as the targets' array `target` (`what` says
    whose targets they are)."""
    for name, array in inputs.items():
        if len(array) == len(y):
            continue
        if len(inputs) == 1:
            rows = "targets" if what == "the targets" else f"rows in {target!r}"
            raise error(f"'{path}': {len(array)} inputs but {len(y)} {rows}", span)
        raise error(
            f"'{path}': array '{name}' (input '{name}') has {len(array)} rows, but array "
            f"'{target}' ({what}) has {len(y)}",
            span,
            help="every array holds one row per sample",
        )


def _read(
    path: Path, args: dict[str, Any], wanted: Wanted, limits: Limits, span: Span | None
) -> Arrays:
    arrays = read_npz(path, limits.arrays, span)
    inputs = _inputs(path, arrays, args["x"], wanted, span)
    if wanted.named:
        return _read_named(path, arrays, args["x"], inputs, wanted.outputs, span)
    y = _array(arrays, args["y"], path, span)
    _rows(args["y"], y, path, span)
    _check_rows(path, inputs, args["y"], y, "the targets", span)
    return Arrays(inputs, {wanted.outputs[0]: y})


def _read_named(
    path: Path,
    arrays: dict[str, np.ndarray],
    key: str,
    inputs: dict[str, np.ndarray],
    outputs: tuple[str, ...],
    span: Span | None,
) -> Arrays:
    """The inputs and the arrays named after the outputs."""
    used = {key} if len(inputs) == 1 else set(inputs)
    offered = {k: v for k, v in arrays.items() if k not in used}
    for each in (n for n in outputs if n in offered):
        _rows(each, offered[each], path, span)
        _check_rows(path, inputs, each, offered[each], f"the targets of output '{each}'", span)
    return Arrays(inputs, named_targets(offered, outputs, f"'{path}'", span))


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    """Array `x`, or the archive's only array; for a model of several inputs, one array
    per input name."""
    arrays = read_npz(path, limits.arrays)
    if len(feed.inputs) > 1:
        missing = [name for name in feed.inputs if name not in arrays]
        if missing:
            raise error(
                f"'{path}' has no array named '{missing[0]}' for the model's input '{missing[0]}'",
                help=f"the model reads one array per input: {', '.join(feed.inputs)}; "
                f"arrays in the file: {', '.join(arrays) or 'none'}",
            )
        return Batch({name: arrays[name] for name in feed.inputs})
    (name,) = feed.inputs
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
