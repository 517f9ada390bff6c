"""The values of a search space: the points a grid enumerates and the draws of a sampler.

Values come back as plain Python ints, floats, strings and bools so that they print as
spec literals and round-trip through JSON unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dnnspec.ir import SearchDim

Params = dict[str, Any]


def _bounds(dim: SearchDim) -> tuple[float, float, float | None]:
    """(lo, hi, step or None) of a range space; resolve checked that they are numbers."""
    numbers = [v for v in dim.values if isinstance(v, int | float) and not isinstance(v, bool)]
    assert len(numbers) == len(dim.values) in (2, 3), dim
    return numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None


def points(dim: SearchDim) -> list[Any]:
    """Every value a grid visits for one dimension, in order."""
    if dim.space == "choice":
        return list(dim.values)
    lo, hi, step = _bounds(dim)
    if dim.space == "int_range":
        return list(range(int(lo), int(hi) + 1, int(step or 1)))
    if dim.space == "uniform" and step is not None:
        count = math.floor((hi - lo) / step + 1e-9) + 1
        return [round(lo + k * step, 12) for k in range(count)]
    raise ValueError(f"a grid cannot enumerate {dim.space}{dim.values}")


def grid(dims: Sequence[SearchDim]) -> list[Params]:
    """The Cartesian product of the dimensions, the last one varying fastest."""
    names = [d.param for d in dims]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*map(points, dims))]


def draw(dim: SearchDim, rng: np.random.Generator) -> Any:
    """One random value of a dimension."""
    if dim.space == "choice":
        return dim.values[int(rng.integers(len(dim.values)))]
    lo, hi, step = _bounds(dim)
    if dim.space == "int_range" or step is not None:
        options = points(dim)
        return options[int(rng.integers(len(options)))]
    if dim.space == "log_uniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draws(dims: Sequence[SearchDim], count: int, seed: int) -> list[Params]:
    """`count` independent draws of every dimension, a pure function of the seed."""
    rng = np.random.default_rng(seed)
    return [{d.param: draw(d, rng) for d in dims} for _ in range(count)]
