"""The values of a search space: the points a grid enumerates and the draws of a sampler.

Values come back as plain Python ints, floats, strings and bools so that they print as
spec literals and round-trip through JSON unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from dnnspec.ir import SearchDim

Params = dict[str, Any]


def _bounds(dim: SearchDim) -> tuple[float, float, float | None]:
    """(lo, hi, step or None) of a range space; resolve checked that they are numbers."""
    numbers = [v for v in dim.values if isinstance(v, int | float) and not isinstance(v, bool)]
    assert len(numbers) == len(dim.values) in (2, 3), dim
    return numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None


class _Steps(Sequence[float]):
    """lo, lo + step, ... <= hi, computed on demand so a fine step costs no memory."""

    def __init__(self, lo: float, hi: float, step: float) -> None:
        self.lo, self.step = lo, step
        self.size = math.floor((hi - lo) / step + 1e-9) + 1

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, k: int) -> float: ...
    @overload
    def __getitem__(self, k: slice) -> list[float]: ...
    def __getitem__(self, k: int | slice) -> float | list[float]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.size))]
        if not -self.size <= k < self.size:
            raise IndexError(k)
        return round(self.lo + (k % self.size) * self.step, 12)


def points(dim: SearchDim) -> Sequence[Any]:
    """Every value a grid visits for one dimension, in order (a lazy sequence for ranges)."""
    if dim.space == "choice":
        return list(dim.values)
    lo, hi, step = _bounds(dim)
    if dim.space == "int_range":
        return range(int(lo), int(hi) + 1, int(step or 1))
    if dim.space == "uniform" and step is not None:
        return _Steps(lo, hi, step)
    raise ValueError(f"a grid cannot enumerate {dim.space}{dim.values}")


def grid(dims: Sequence[SearchDim]) -> Iterator[Params]:
    """The Cartesian product of the dimensions, the last one varying fastest. Each point is
    computed from its index, so a huge grid capped by `--trials` costs only what it runs."""
    names = [d.param for d in dims]
    axes = [points(d) for d in dims]
    for index in range(math.prod(map(len, axes))):
        combo: list[Any] = []
        for axis in reversed(axes):
            index, k = divmod(index, len(axis))
            combo.append(axis[k])
        yield dict(zip(names, reversed(combo), strict=True))


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


def draws(dims: Sequence[SearchDim], count: int, seed: int) -> Iterator[Params]:
    """`count` independent draws of every dimension, a pure function of the seed, made as
    they are asked for."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield {d.param: draw(d, rng) for d in dims}
